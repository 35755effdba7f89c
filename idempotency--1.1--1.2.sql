/* idempotency--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION idempotency UPDATE TO '1.2'" to load this file. \quit

-- ------------------------------------------------------------------ await
-- idem_begin gains a last argument, await: how long a begin that meets
-- another session's committed attempt in progress waits for it to settle
-- (finished: replayed; released, taken over or its owner gone: started;
-- the interval passed: in_progress).  NULL, the default, answers at once
-- as before.  A function's arguments cannot change in place, so the
-- function is made anew: calls by position and by name read as before.
-- The new function keeps the old one's owner (it runs as its owner:
-- SECURITY DEFINER) and privileges, grants made since CREATE EXTENSION
-- included; the extension's initial privileges, which pg_dump compares
-- with, stay those the install script gave.
DO $await$
DECLARE
    old_owner    pg_catalog.regrole;
    old_acl      pg_catalog.aclitem[];
    initial_acl  pg_catalog.aclitem[];
    new_begin    pg_catalog.regprocedure;
    item         record;
BEGIN
    SELECT p.proowner, p.proacl INTO old_owner, old_acl
      FROM pg_catalog.pg_proc p
     WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.idem_begin(pg_catalog.text, pg_catalog.jsonb, pg_catalog.text, pg_catalog.interval, pg_catalog.interval, boolean)'::pg_catalog.regprocedure;

    DROP FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean);

    CREATE FUNCTION @extschema@.idem_begin(
        key     text,
        request jsonb    DEFAULT NULL,
        scope   text     DEFAULT '',
        ttl     interval DEFAULT NULL,
        lease   interval DEFAULT NULL,
        wait    boolean  DEFAULT true,
        await   interval DEFAULT NULL)
    RETURNS @extschema@.idem_result
    AS 'MODULE_PATHNAME', 'idem_begin'
    LANGUAGE C VOLATILE SECURITY DEFINER;
    new_begin := '@extschema@.idem_begin(pg_catalog.text, pg_catalog.jsonb, pg_catalog.text, pg_catalog.interval, pg_catalog.interval, boolean, pg_catalog.interval)'::pg_catalog.regprocedure;

    COMMENT ON FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean, interval) IS
    'Claim an idempotency key: started (do the work), replayed (stored response) or in_progress (another attempt holds it); with await, wait that long for another session''s attempt to settle first';

    -- the old function's owner, then the privileges of 1.0's install script
    EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %s', new_begin, old_owner);
    REVOKE ALL ON FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean, interval) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean, interval) TO idempotency_user;
    SELECT p.proacl INTO initial_acl FROM pg_catalog.pg_proc p
     WHERE p.oid OPERATOR(pg_catalog.=) new_begin;

    -- then what was granted or revoked since
    IF old_acl IS NULL THEN
        old_acl := pg_catalog.acldefault('f', old_owner);
    END IF;
    FOR item IN
        SELECT a.grantee, a.is_grantable
          FROM pg_catalog.aclexplode(old_acl) a
         WHERE a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
           AND a.grantee OPERATOR(pg_catalog.<>) old_owner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', new_begin,
            CASE WHEN item.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                 ELSE item.grantee::pg_catalog.regrole::pg_catalog.text END,
            CASE WHEN item.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_catalog.aclexplode(old_acl) a
                    WHERE a.grantee OPERATOR(pg_catalog.=) 'idempotency_user'::pg_catalog.regrole) THEN
        REVOKE ALL ON FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean, interval) FROM idempotency_user;
    END IF;

    -- Every GRANT in an extension script is recorded as an initial
    -- privilege of the extension, which pg_dump leaves to CREATE EXTENSION:
    -- put back the install script's, so that a dump keeps the grants made
    -- since as the user's own.
    UPDATE pg_catalog.pg_init_privs
       SET initprivs = initial_acl
     WHERE objoid OPERATOR(pg_catalog.=) new_begin
       AND classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
       AND objsubid OPERATOR(pg_catalog.=) 0;
END
$await$;

-- The counters gain awaits (begins that awaited another session's attempt)
-- and await_timeouts (of those, the ones whose interval ran out), after
-- keys_swept.  A view's columns cannot be inserted in place: the view and
-- its function are made anew, with 1.1's privileges.
DROP VIEW @extschema@.idem_stats;
DROP FUNCTION @extschema@.idem_stats_read();

CREATE FUNCTION @extschema@.idem_stats_read(
    OUT started              bigint,
    OUT replayed             bigint,
    OUT in_progress          bigint,
    OUT mismatches           bigint,
    OUT takeovers_lease      bigint,
    OUT takeovers_owner_gone bigint,
    OUT finishes             bigint,
    OUT fails                bigint,
    OUT once_true            bigint,
    OUT once_false           bigint,
    OUT keys_swept           bigint,
    OUT awaits               bigint,
    OUT await_timeouts       bigint,
    OUT stats_reset          timestamptz,
    OUT shared               boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'idem_stats'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION @extschema@.idem_stats_read() IS
'The counters of the current database, as the view idem_stats shows them';

CREATE VIEW @extschema@.idem_stats AS
SELECT * FROM @extschema@.idem_stats_read();

COMMENT ON VIEW @extschema@.idem_stats IS
'What the API did in this database: begins by outcome, request mismatches (IK001), takeovers after a lapsed lease or a gone owner, finishes, fails, idem_once true and false, keys swept, begins that awaited an attempt and those whose await ran out; since stats_reset; shared: counted for every session (library preloaded) or this session only';

REVOKE ALL ON FUNCTION @extschema@.idem_stats_read() FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.idem_stats FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.idem_stats_read() TO pg_read_all_stats;
GRANT SELECT ON TABLE @extschema@.idem_stats TO pg_read_all_stats;
-- ------------------------------------------------------------- end await
