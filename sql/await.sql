-- await: how long idem_begin waits for another transaction's committed
-- attempt in progress to settle.  What one session can show: the argument's
-- rule, the endings that need no other session (the interval runs out, the
-- lease lapses meanwhile, nothing to wait for), and what each isolation
-- level does.  Another session finishing, failing or dying during the wait:
-- test/specs/await.spec, and with the library preloaded test/t/029_await.pl.
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never

-- await is the last argument, a NULL interval by default; 1.1's calls by
-- position and by name read as before
SELECT pg_get_function_arguments('idem_begin'::regproc);
SELECT outcome, attempt FROM idem_begin('aw-pos', '{"n": 1}', '', '1 day', '1 hour', true);
SELECT outcome, attempt FROM idem_begin('aw-pos', '{"n": 1}', '', '1 day', '1 hour', true, NULL);
SELECT outcome, attempt FROM idem_begin(key => 'aw-named', lease => '1 hour', wait => false);

-- bad await: 22023, and nothing changed
SELECT * FROM idem_begin('aw-bad', await => '-1 second');
\echo :SQLSTATE
SELECT * FROM idem_begin('aw-bad', await => '1 day -25 hours');
\echo :SQLSTATE
SELECT * FROM idem_begin('aw-bad', await => '101 years');
\echo :SQLSTATE
SELECT count(*) AS rows FROM idem_ledger WHERE key = 'aw-bad';

-- a first attempt and a replay do not wait, await or not
SELECT outcome, attempt FROM idem_begin('aw-done', await => '1 minute');
SELECT outcome FROM idem_finish('aw-done', '{"paid": true}', 201);
SELECT r.outcome, r.status, r.response,
       clock_timestamp() - statement_timestamp() < interval '5 seconds' AS at_once
  FROM idem_begin('aw-done', await => '1 minute') r;

-- the attempt of an earlier transaction (this session's, committed above,
-- under a one-hour lease): await waits for it, and when the interval runs
-- out, answers in_progress
SELECT r.outcome, r.attempt,
       clock_timestamp() - statement_timestamp() >= interval '200 ms' AS waited
  FROM idem_begin('aw-pos', '{"n": 1}', await => '200 ms') r;
-- zero does not wait
SELECT r.outcome, r.attempt,
       clock_timestamp() - statement_timestamp() < interval '5 seconds' AS at_once
  FROM idem_begin('aw-pos', '{"n": 1}', await => '0') r;
-- a changed request is IK001 at once: there is nothing to wait for
SELECT * FROM idem_begin('aw-pos', '{"n": 2}', await => '1 minute');
\echo :SQLSTATE
-- the transaction's own attempt: in_progress at once
BEGIN;
SELECT outcome, attempt FROM idem_begin('aw-own', lease => '1 hour');
SELECT r.outcome, r.attempt,
       clock_timestamp() - statement_timestamp() < interval '5 seconds' AS at_once
  FROM idem_begin('aw-own', await => '1 minute') r;
ROLLBACK;

-- the wait ends when the attempt's lease does: the waiter takes over.  The
-- ledger's clock is moved to 300 ms before the lease's end.
SELECT set_config('idempotency.clock_offset',
                  (lease_until - clock_timestamp() - interval '300 ms')::text, false)
       IS NOT NULL AS clock_moved
  FROM idem_ledger WHERE key = 'aw-pos';
SELECT r.outcome, r.attempt,
       clock_timestamp() - statement_timestamp() < interval '50 seconds' AS before_await_ran_out
  FROM idem_begin('aw-pos', '{"n": 1}', await => '1 minute') r;
RESET idempotency.clock_offset;

-- REPEATABLE READ and SERIALIZABLE cannot see a later commit: await is
-- refused (0A000) before anything is touched, whatever the key; zero and
-- NULL work as ever
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM idem_begin('aw-rr', await => '1 second');
\echo :SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM idem_begin('aw-rr', await => '1 second');
\echo :SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT outcome, attempt FROM idem_begin('aw-rr', await => '0');
SELECT outcome, attempt FROM idem_begin('aw-rr', await => NULL);
ROLLBACK;

-- a cancelled wait (statement_timeout) is 57014 and changes nothing
SET statement_timeout = '300ms';
SELECT * FROM idem_begin('aw-named', await => '1 minute');
\echo :SQLSTATE
RESET statement_timeout;
SELECT state, attempt FROM idem_ledger WHERE key = 'aw-named';

-- the privileges of the new function are those of 1.0's install script
SELECT p.prosecdef, p.proowner::regrole = e.extowner::regrole AS extension_owner_owns,
       (SELECT array_agg(a.grantee::regrole::text || ':' || a.privilege_type ORDER BY 1)
          FROM aclexplode(p.proacl) a WHERE a.grantee <> p.proowner) AS grants
  FROM pg_proc p, pg_extension e
 WHERE p.oid = 'idem_begin'::regproc AND e.extname = 'idempotency';
SELECT obj_description('idem_begin'::regproc, 'pg_proc') IS NOT NULL AS commented;

DROP EXTENSION idempotency;
