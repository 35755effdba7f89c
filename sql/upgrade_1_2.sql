--
-- ALTER EXTENSION ... UPDATE from 1.1 to 1.2 (await) keeps every key's
-- behaviour and idem_begin's owner and privileges, grants made since
-- included, and await works afterwards
--
CREATE EXTENSION idempotency VERSION '1.1';
\set SHOW_CONTEXT never
SET timezone = 'UTC';
SELECT extversion FROM pg_extension WHERE extname = 'idempotency';

-- a ledger filled by 1.1: completed keys, an attempt in progress with its
-- owner (this session, alive), one with none (its lease binds it), a
-- released attempt, a consumer key
SELECT outcome, attempt FROM idem_begin('u2-done', '{"amount": 10}');
SELECT outcome, status FROM idem_finish('u2-done', '{"payment_id": 1}', 201);
SELECT outcome, attempt FROM idem_begin('u2-held', '{"amount": 20}', lease => '10 minutes');
SET idempotency.owner_liveness = off;
SELECT outcome, attempt FROM idem_begin('u2-lease', lease => '10 minutes');
RESET idempotency.owner_liveness;
SELECT outcome, attempt FROM idem_begin('u2-released');
SELECT idem_fail('u2-released');
SELECT idem_once('u2-msg', scope => 'queue');
SELECT idem_begin('u2-stats');
-- a grant made since CREATE EXTENSION, straight on idem_begin
CREATE ROLE regress_u2_direct;
GRANT EXECUTE ON FUNCTION idem_begin(text, jsonb, text, interval, interval, boolean)
   TO regress_u2_direct WITH GRANT OPTION;
CREATE TEMP TABLE ledger_before AS SELECT * FROM idem_ledger;
CREATE TEMP TABLE stats_before AS SELECT * FROM idem_stats;
CREATE TEMP TABLE begin_before AS
SELECT p.proowner, p.prosecdef, p.proacl, i.initprivs
  FROM pg_proc p LEFT JOIN pg_init_privs i
       ON i.objoid = p.oid AND i.classoid = 'pg_proc'::regclass AND i.objsubid = 0
 WHERE p.oid = 'idem_begin'::regproc;

ALTER EXTENSION idempotency UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'idempotency';

-- the update changed no row but for its new digest (sql/upgrade_digest.sql)
SELECT count(*) AS rows_changed FROM (
    (SELECT created_at, expires_at, lease_until, status, attempt, scope, key,
            state, response, fingerprint, owner FROM idem_ledger
     EXCEPT ALL SELECT * FROM ledger_before)
    UNION ALL
    (SELECT * FROM ledger_before
     EXCEPT ALL SELECT created_at, expires_at, lease_until, status, attempt,
            scope, key, state, response, fingerprint, owner FROM idem_ledger)) AS d;

-- idem_begin was made anew with await last; its owner, SECURITY DEFINER,
-- privileges (the direct grant included) and initial privileges (those of
-- the install script, so that pg_dump dumps the direct grant) are the
-- old function's
SELECT pg_get_function_identity_arguments('idem_begin'::regproc);
SELECT p.proowner = b.proowner AS same_owner,
       p.prosecdef = b.prosecdef AS same_security,
       p.proacl::text[] = b.proacl::text[] AS same_privileges,
       i.initprivs::text[] = b.initprivs::text[] AS same_initial_privileges
  FROM pg_proc p
  LEFT JOIN pg_init_privs i
       ON i.objoid = p.oid AND i.classoid = 'pg_proc'::regclass AND i.objsubid = 0,
       begin_before b
 WHERE p.oid = 'idem_begin'::regproc;
SELECT has_function_privilege('regress_u2_direct', 'idem_begin'::regproc, 'EXECUTE WITH GRANT OPTION') AS direct_grant_kept,
       has_function_privilege('idempotency_user', 'idem_begin'::regproc, 'EXECUTE') AS api_role_runs_it,
       NOT has_function_privilege('public', 'idem_begin'::regproc, 'EXECUTE') AS closed_to_public;
SELECT obj_description('idem_begin'::regproc, 'pg_proc') IS NOT NULL AS commented;

-- every key behaves as before: calls of 1.1, by position and by name
SELECT * FROM idem_begin('u2-done', '{"amount": 10}', '', NULL, NULL, true);
SELECT * FROM idem_begin('u2-done', '{"amount": 11}');
\echo :SQLSTATE
SELECT outcome, attempt FROM idem_begin('u2-held', '{"amount": 20}', wait => false);
SELECT outcome, attempt FROM idem_begin(key => 'u2-lease');
SELECT outcome, attempt FROM idem_begin('u2-released');
SELECT idem_once('u2-msg', scope => 'queue') AS first_again;

-- the counters kept their values and gained awaits and await_timeouts,
-- after keys_swept; the view is readable by pg_read_all_stats as before
SELECT s.started >= b.started AND s.replayed >= b.replayed AS counts_kept,
       s.awaits IS NOT NULL AND s.await_timeouts IS NOT NULL AS await_counted
  FROM idem_stats s, stats_before b;
CREATE TEMP TABLE awaits_before AS SELECT s.awaits - b.awaits AS awaits, s.await_timeouts - b.await_timeouts AS await_timeouts
  FROM idem_stats s, awaits_before b;
SELECT array_agg(attname ORDER BY attnum) AS stats_columns
  FROM pg_attribute WHERE attrelid = 'idem_stats'::regclass AND attnum > 0;
SELECT has_table_privilege('pg_read_all_stats', 'idem_stats', 'SELECT') AS monitor_reads,
       has_function_privilege('pg_read_all_stats', 'idem_stats_reset()', 'EXECUTE') AS monitor_resets;

-- await works on the keys of 1.1: the attempt held under its lease is
-- awaited until the interval runs out, the completed key replays at once
SELECT r.outcome, r.attempt,
       clock_timestamp() - statement_timestamp() >= interval '200 ms' AS waited
  FROM idem_begin('u2-held', '{"amount": 20}', await => '200 ms') r;
SELECT outcome, status, response FROM idem_begin('u2-done', '{"amount": 10}', await => '1 minute');
SELECT s.awaits - b.awaits AS awaits, s.await_timeouts - b.await_timeouts AS await_timeouts
  FROM idem_stats s, awaits_before b;
-- and past its lease the held attempt is taken over, its old finish IK003
SET idempotency.clock_offset = '11 minutes';
SELECT outcome, attempt FROM idem_begin('u2-lease', await => '1 minute');
SELECT * FROM idem_finish('u2-lease', attempt => 1);
\echo :SQLSTATE
RESET idempotency.clock_offset;

DROP EXTENSION idempotency;
DROP ROLE regress_u2_direct;
