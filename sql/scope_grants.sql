--
-- Scopes as boundaries: idem_scope_grants and idempotency.enforce_scope_grants;
-- the lease cap idempotency.max_lease
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
SET timezone = 'UTC';

CREATE ROLE regress_scope_a;
CREATE ROLE regress_scope_b;
CREATE ROLE regress_scope_a_worker IN ROLE regress_scope_a;
CREATE ROLE regress_scope_a_noinherit NOINHERIT IN ROLE regress_scope_a;
GRANT idempotency_user TO regress_scope_a, regress_scope_b, regress_scope_a_worker;
-- (a role that inherits nothing needs the function itself)
GRANT EXECUTE ON FUNCTION idem_once(text, text, interval) TO regress_scope_a_noinherit;

-- the table is the owner's: closed to PUBLIC and to the API's role
SELECT r.rolname, m.priv,
       has_table_privilege(r.rolname, 'idem_scope_grants', m.priv) AS granted
  FROM (VALUES ('regress_scope_a'), ('idempotency_user')) AS r(rolname),
       (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) AS m(priv)
 ORDER BY r.rolname, m.priv;

-- each tenant its prefix; the separator keeps 'tenant-a:' from covering
-- 'tenant-ab:'
INSERT INTO idem_scope_grants (scope_prefix, grantee) VALUES
    ('tenant-a:', 'regress_scope_a'),
    ('tenant-b:', 'regress_scope_b');
SELECT scope_prefix, grantee FROM idem_scope_grants ORDER BY scope_prefix;

-- enforcement is off by default: every role may use every scope, as in 1.0
SHOW idempotency.enforce_scope_grants;
SET ROLE regress_scope_a;
SELECT * FROM idem_begin('off-1', scope => 'tenant-b:shop');
SELECT * FROM idem_finish('off-1', '{"by": "a"}', scope => 'tenant-b:shop');
SELECT idem_once('off-2');
-- and only a superuser may change the settings
SET idempotency.enforce_scope_grants = off;
\echo :SQLSTATE
SET idempotency.max_lease = '200 days';
\echo :SQLSTATE
SELECT count(*) FROM idem_scope_grants;
\echo :SQLSTATE
INSERT INTO idem_scope_grants VALUES ('', 'regress_scope_a');
\echo :SQLSTATE
DELETE FROM idem_scope_grants;
\echo :SQLSTATE
RESET ROLE;

SET idempotency.enforce_scope_grants = on;

-- B works in its own scopes: a completed key, an attempt in progress under a
-- lease, a consumer key
SET ROLE regress_scope_b;
SELECT * FROM idem_begin('order-1', '{"amount": 10}', 'tenant-b:shop');
SELECT * FROM idem_finish('order-1', '{"payment_id": 1}', 201, 'tenant-b:shop');
SELECT * FROM idem_begin('order-2', '{"amount": 20}', 'tenant-b:shop', lease => '10 minutes');
SELECT idem_once('msg-1', 'tenant-b:queue');
RESET ROLE;
CREATE TEMP TABLE ledger_before AS SELECT * FROM idem_ledger;

-- A cannot touch B's keys: not replay, probe or forge a response for them,
-- nor release or hold them; each call fails with 42501 and changes nothing
SET ROLE regress_scope_a;
SELECT * FROM idem_begin('order-1', '{"amount": 10}', 'tenant-b:shop');
\echo :SQLSTATE
SELECT * FROM idem_begin('order-1', '{"amount": 99}', 'tenant-b:shop');
\echo :SQLSTATE
SELECT * FROM idem_begin('order-9', NULL, 'tenant-b:shop', lease => '100 years');
\echo :SQLSTATE
SELECT * FROM idem_finish('order-2', '{"forged": true}', 200, 'tenant-b:shop');
\echo :SQLSTATE
SELECT idem_fail('order-2', 'tenant-b:shop');
\echo :SQLSTATE
SELECT idem_once('msg-1', 'tenant-b:queue');
\echo :SQLSTATE
-- nor a scope that merely looks like its own, nor the default scope
SELECT * FROM idem_begin('order-1', NULL, 'tenant-ab:shop');
\echo :SQLSTATE
SELECT * FROM idem_begin('order-1', NULL, 'tenant-a');
\echo :SQLSTATE
SELECT idem_once('msg-1');
\echo :SQLSTATE
-- a denied call inside a transaction aborts it, like any error
BEGIN;
SELECT idem_once('msg-2', 'tenant-a:queue');
SELECT idem_once('msg-2', 'tenant-b:queue');
ROLLBACK;
RESET ROLE;
SELECT count(*) AS rows_changed FROM (
    (SELECT * FROM idem_ledger EXCEPT ALL SELECT * FROM ledger_before)
    UNION ALL
    (SELECT * FROM ledger_before EXCEPT ALL SELECT * FROM idem_ledger)) AS d;

-- in its own scopes A works as before; the same keys as B's are other keys
SET ROLE regress_scope_a;
SELECT * FROM idem_begin('order-1', '{"amount": 99}', 'tenant-a:shop');
SELECT * FROM idem_finish('order-1', '{"payment_id": 7}', 201, 'tenant-a:shop');
SELECT * FROM idem_begin('order-1', '{"amount": 99}', 'tenant-a:shop');
SELECT * FROM idem_begin('order-2', NULL, 'tenant-a:shop');
SELECT idem_fail('order-2', 'tenant-a:shop');
SELECT idem_once('msg-1', 'tenant-a:queue');
SELECT idem_once('msg-1', 'tenant-a:queue');
SELECT idem_once('msg-1', 'tenant-a:');
-- the pure functions touch no ledger and need no grant
SELECT idem_key('order', 'create') IS NOT NULL AS key_ok,
       idem_fingerprint('{"a": 1}') IS NOT NULL AS fingerprint_ok;
RESET ROLE;

-- B's keys are as B left them
SET ROLE regress_scope_b;
SELECT * FROM idem_begin('order-1', '{"amount": 10}', 'tenant-b:shop');
SELECT * FROM idem_begin('order-2', '{"amount": 20}', 'tenant-b:shop');
SELECT idem_once('msg-1', 'tenant-b:queue');
RESET ROLE;

-- a member that inherits A's privileges may use A's scopes; one that does
-- not inherit them may not
SET ROLE regress_scope_a_worker;
SELECT idem_once('msg-3', 'tenant-a:queue');
RESET ROLE;
SET ROLE regress_scope_a_noinherit;
SELECT idem_once('msg-4', 'tenant-a:queue');
\echo :SQLSTATE
RESET ROLE;

-- a superuser may use every scope
SELECT idem_once('msg-5', 'tenant-b:queue');
SELECT * FROM idem_begin('order-1', '{"amount": 10}', 'tenant-b:shop');

-- grants apply from the next command: an insertion, a rollback, a deletion
SET ROLE regress_scope_a;
SELECT idem_once('shared-1', 'shared:');
\echo :SQLSTATE
RESET ROLE;
INSERT INTO idem_scope_grants VALUES ('shared:', 'regress_scope_a');
SET ROLE regress_scope_a;
SELECT idem_once('shared-1', 'shared:');
RESET ROLE;
BEGIN;
DELETE FROM idem_scope_grants WHERE scope_prefix = 'shared:';
SET LOCAL ROLE regress_scope_a;
SELECT idem_once('shared-2', 'shared:');
ROLLBACK;
SET ROLE regress_scope_a;
SELECT idem_once('shared-2', 'shared:');
RESET ROLE;
UPDATE idem_scope_grants SET grantee = 'regress_scope_b' WHERE scope_prefix = 'shared:';
SET ROLE regress_scope_a;
SELECT idem_once('shared-3', 'shared:');
\echo :SQLSTATE
RESET ROLE;
-- and so do role memberships
GRANT regress_scope_b TO regress_scope_a;
SET ROLE regress_scope_a;
SELECT idem_once('shared-3', 'shared:');
RESET ROLE;
REVOKE regress_scope_b FROM regress_scope_a;
SET ROLE regress_scope_a;
SELECT idem_once('shared-4', 'shared:');
\echo :SQLSTATE
RESET ROLE;
-- the prefix '' grants every scope, the default one included
INSERT INTO idem_scope_grants VALUES ('', 'regress_scope_b');
SET ROLE regress_scope_b;
SELECT idem_once('msg-6');
SELECT idem_once('msg-6', 'tenant-a:queue');
RESET ROLE;
DELETE FROM idem_scope_grants WHERE scope_prefix = '';

-- code that PostgreSQL runs as a table's owner on the session's behalf
-- (a materialized view being refreshed) cannot be told apart: refused,
-- even for a superuser
CREATE MATERIALIZED VIEW scope_mv AS
    SELECT idem_once('mv-1', 'tenant-a:mv') AS first WITH NO DATA;
REFRESH MATERIALIZED VIEW scope_mv;
\echo :SQLSTATE
DROP MATERIALIZED VIEW scope_mv;

-- the lease cap, set by a superuser (here for the session; for a role:
-- ALTER ROLE ... SET idempotency.max_lease)
SET idempotency.max_lease = '1 hour';
SET ROLE regress_scope_a;
SELECT * FROM idem_begin('lease-1', NULL, 'tenant-a:shop', lease => '61 minutes');
\echo :SQLSTATE
SELECT * FROM idem_begin('lease-1', NULL, 'tenant-a:shop', lease => '1 day');
\echo :SQLSTATE
SELECT * FROM idem_begin('lease-1', NULL, 'tenant-a:shop', lease => '1 hour');
-- the default lease counts too
SET idempotency.default_lease = '2 hours';
SELECT * FROM idem_begin('lease-2', NULL, 'tenant-a:shop');
\echo :SQLSTATE
RESET idempotency.default_lease;
SELECT * FROM idem_begin('lease-2', NULL, 'tenant-a:shop');
RESET ROLE;
SELECT key, lease_until - created_at AS lease FROM idem_ledger
 WHERE key LIKE 'lease-%' ORDER BY key;
RESET idempotency.max_lease;
-- the cap is an interval setting like the others
SET idempotency.max_lease = '0';
\echo :SQLSTATE
SET idempotency.max_lease = '101 years';
\echo :SQLSTATE

-- idem_sweep, the owner's, removes expired keys of every scope
SELECT count(*) AS keys FROM idem_ledger \gset
SET idempotency.clock_offset = '3 days';
SELECT idem_sweep() = :keys AS swept_every_scope;
RESET idempotency.clock_offset;

-- with enforcement off again, every role may use every scope
RESET idempotency.enforce_scope_grants;
SET ROLE regress_scope_a;
SELECT idem_once('msg-7', 'tenant-b:queue');
RESET ROLE;

DROP EXTENSION idempotency;
DROP ROLE regress_scope_a_worker, regress_scope_a_noinherit;
DROP ROLE regress_scope_a, regress_scope_b;
