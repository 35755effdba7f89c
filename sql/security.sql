--
-- Privileges and search_path safety
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never

-- nothing of the extension is open to PUBLIC
SELECT p.oid::regprocedure AS function
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'idempotency')
   AND (p.proacl IS NULL
        OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0));
SELECT relname FROM pg_class
 WHERE oid = 'idem_ledger'::regclass
   AND (relacl IS NULL OR EXISTS (SELECT FROM aclexplode(relacl) a WHERE a.grantee = 0));

-- a fresh role can do nothing with it
CREATE ROLE regress_idem_nobody;
-- an application role gets the API with one grant
CREATE ROLE regress_idem_app;
GRANT idempotency_user TO regress_idem_app;

SELECT p.oid::regprocedure AS function,
       has_function_privilege('regress_idem_nobody', p.oid, 'EXECUTE') AS nobody,
       has_function_privilege('regress_idem_app', p.oid, 'EXECUTE') AS app
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'idempotency')
 ORDER BY p.proname;
SELECT r.rolname, m.priv,
       has_table_privilege(r.rolname, 'idem_ledger', m.priv) AS granted
  FROM (VALUES ('regress_idem_nobody'), ('regress_idem_app')) AS r(rolname),
       (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'),
               ('REFERENCES'), ('TRIGGER')) AS m(priv)
 ORDER BY r.rolname, m.priv;
SELECT has_any_column_privilege('regress_idem_app', 'idem_ledger', 'SELECT') AS app_columns;

-- the API runs as the extension's owner; the C code pins its own search
-- path around every statement (the hostile search_path tests below show it),
-- so no SET clause costs a GUC change per call
SELECT p.proname, p.proconfig
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'idempotency')
   AND p.prosecdef
 ORDER BY p.proname;

-- the role without the grant
SET ROLE regress_idem_nobody;
SELECT * FROM idem_begin('sec-0');
\echo :SQLSTATE
SELECT idem_once('sec-0');
\echo :SQLSTATE
SELECT idem_key('order', 'create');
\echo :SQLSTATE
RESET ROLE;

-- the application role: the API works, the table does not
SET ROLE regress_idem_app;
SELECT * FROM idem_begin('sec-1', '{"a": 1}');
SELECT * FROM idem_finish('sec-1', '{"done": true}');
SELECT * FROM idem_begin('sec-1', '{"a": 1}');
SELECT * FROM idem_begin('sec-2');
SELECT idem_fail('sec-2');
SELECT idem_once('sec-3');
SELECT idem_once('sec-3');
SELECT idem_key('order', 'create', '{"id": 1, "n": 2}') = idem_key('order', 'create', '{"n": 2, "id": 1}') AS key_ok;
SELECT idem_fingerprint('{"a": 1}') = idem_fingerprint('{"a": 1.0}') AS fingerprint_ok;
SELECT * FROM idem_ledger;
\echo :SQLSTATE
SELECT count(*) FROM idem_ledger;
\echo :SQLSTATE
INSERT INTO idem_ledger (scope, key, state, created_at, expires_at)
VALUES ('', 'forged', 'completed', now(), now() + '1 day');
\echo :SQLSTATE
UPDATE idem_ledger SET response = '{"forged": true}';
\echo :SQLSTATE
DELETE FROM idem_ledger;
\echo :SQLSTATE
TRUNCATE idem_ledger;
\echo :SQLSTATE
SELECT idem_sweep();
\echo :SQLSTATE
SELECT idem_set_logged(false);
\echo :SQLSTATE
RESET ROLE;
SELECT scope, key, state, status, response FROM idem_ledger ORDER BY key;

-- a hostile search_path: look-alike operators, functions and a ledger in a
-- schema the application role controls
CREATE SCHEMA evil AUTHORIZATION regress_idem_app;
SET ROLE regress_idem_app;
CREATE FUNCTION evil.always_true(text, text) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.always_true);
CREATE FUNCTION evil.always_true(jsonb, jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = evil.always_true);
CREATE FUNCTION evil.always_true(timestamptz, timestamptz) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.always_true);
CREATE OPERATOR evil.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.always_true);
CREATE FUNCTION evil.now() RETURNS timestamptz
    LANGUAGE sql AS $$SELECT '2000-01-01 00:00:00+00'::timestamptz$$;
CREATE TABLE evil.idem_ledger (
    scope text, key text, state text, status int, response jsonb, attempt int,
    created_at timestamptz, expires_at timestamptz, lease_until timestamptz,
    fingerprint bytea, PRIMARY KEY (scope, key));
CREATE TEMP TABLE idem_ledger (LIKE evil.idem_ledger INCLUDING ALL);
SET search_path = pg_temp, evil, pg_catalog, public;
-- the look-alikes win for unqualified names
SELECT 'a'::text = 'b'::text AS evil_text_eq, '1'::jsonb = '2'::jsonb AS evil_jsonb_eq,
       now() = '2000-01-01 00:00:00+00'::timestamptz AS evil_now;
SELECT * FROM idem_begin('hostile-1', '{"a": 1}');
SELECT * FROM idem_begin('hostile-2', '{"a": 2}');
SELECT * FROM idem_begin('hostile-1', '{"a": 1}');
SELECT * FROM idem_begin('hostile-1', '{"a": 99}');
\echo :SQLSTATE
SELECT * FROM idem_finish('hostile-1', '{"ok": 1}');
SELECT * FROM idem_begin('hostile-1', '{"a": 1}');
SELECT * FROM idem_begin('hostile-1', '{"a": 99}');
\echo :SQLSTATE
SELECT * FROM idem_finish('hostile-3', '{}');
\echo :SQLSTATE
SELECT idem_fail('hostile-2');
SELECT idem_fail('hostile-2');
\echo :SQLSTATE
SELECT idem_once('hostile-4');
SELECT idem_once('hostile-4');
SELECT idem_once('hostile-5');
-- the look-alikes were not touched
SELECT count(*) FROM evil.idem_ledger;
SELECT count(*) FROM pg_temp.idem_ledger;
RESET search_path;
RESET ROLE;
-- the real ledger has every key, each exactly once
SELECT scope, key, state, status, response, attempt FROM public.idem_ledger
 WHERE key LIKE 'hostile-%' ORDER BY key;

-- the owner's maintenance functions resist a hostile search_path as well,
-- and the temporary look-alike in this session too
SELECT count(*) AS rows_before FROM public.idem_ledger;
SET search_path = evil, pg_catalog, public;
SELECT public.idem_sweep();
SELECT public.idem_set_logged(false);
RESET search_path;
SELECT count(*) AS rows_after FROM public.idem_ledger;
SELECT oid::regclass AS ledger, relpersistence FROM pg_class
 WHERE oid IN ('public.idem_ledger'::regclass, 'evil.idem_ledger'::regclass)
 ORDER BY 1;
SELECT idem_set_logged(true);

-- clean up: roles are cluster-wide
\set VERBOSITY terse
DROP SCHEMA evil CASCADE;
\set VERBOSITY default
DROP OWNED BY regress_idem_app, regress_idem_nobody;
DROP ROLE regress_idem_app;
DROP ROLE regress_idem_nobody;

DROP EXTENSION idempotency;
