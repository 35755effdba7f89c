-- kit_concurrently.sql: is_idempotent_concurrently() of the idempotency_tap
-- kit sends the same call from several dblink sessions that start at the
-- same moment.  The idempotent handler pays once and every session sees
-- the same payment; the naive and check-then-insert handlers pay once per
-- session and are caught.
--
-- This file does NOT run in one transaction that rolls back: the sessions
-- see committed work only, so every statement here commits on its own
-- (autocommit).  The handlers and their table are committed first; at the
-- end the file drops them, deletes their ledger rows (scope 'example_pay')
-- and drops the extensions it created.  An error in a test does not stop
-- the file (ON_ERROR_STOP is lifted once the set-up is done), so that the
-- clean-up always runs; the missing test fails the plan instead.  Leftovers
-- of an interrupted earlier run are cleared at the start.

SET client_min_messages = warning;

-- leftovers of an interrupted earlier run
DELETE FROM idem_ledger WHERE scope = 'example_pay';
DROP FUNCTION IF EXISTS example_pay_idempotent(text, int), example_pay_naive(text, int),
                        example_pay_check_then_insert(text, int);
DROP TABLE IF EXISTS example_payments;

SELECT NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'dblink') AS kit_created_dblink,
       NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'idempotency_tap') AS kit_created_tap
\gset
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS idempotency_tap;
\ir ../../examples/handlers.sql

SELECT plan(27);
\set ON_ERROR_STOP 0

-- Four sessions at once: one pays, three wait for it and replay
SELECT * FROM check_test(
    is_idempotent_concurrently($$SELECT example_pay_idempotent('cc-1', 100)$$, 4,
                               ARRAY['example_payments']::regclass[],
                               'four concurrent duplicates pay once'),
    true, 'is_idempotent_concurrently on the idempotent handler',
    'four concurrent duplicates pay once', '');
SELECT is((SELECT count(*) FROM example_payments WHERE pay_key = 'cc-1'), 1::bigint,
          'the sessions committed one payment');
SELECT is((SELECT state FROM idem_ledger WHERE scope = 'example_pay' AND key = 'cc-1'), 'completed',
          'and one completed key');

-- Every session pays
SELECT * FROM check_test(
    is_idempotent_concurrently($$SELECT example_pay_naive('cc-2', 100)$$, 3,
                               ARRAY['example_payments']::regclass[]),
    false, 'is_idempotent_concurrently on the naive handler',
    $$SELECT example_pay_naive('cc-2', 100) from 3 sessions at once runs once$$,
    $re$^table example_payments: one execution adds 1 and removes 0 rows; 3 concurrent calls added 3 and removed 0:
    added:   \(\d+,cc-2,100\)
    added:   \(\d+,cc-2,100\)
    added:   \(\d+,cc-2,100\)
the sessions saw different results:
    session 1: \[\{"example_pay_naive": \{"amount": 100, "payment_id": \d+\}\}\]
    session 2: \[\{"example_pay_naive": \{"amount": 100, "payment_id": \d+\}\}\]
    session 3: \[\{"example_pay_naive": \{"amount": 100, "payment_id": \d+\}\}\]$$re$, true);

-- Overlapping duplicates all find nothing, and all pay
SELECT * FROM check_test(
    is_idempotent_concurrently($$SELECT example_pay_check_then_insert('cc-3', 100)$$, 2,
                               ARRAY['example_payments']::regclass[],
                               'check-then-insert pays once when duplicates overlap'),
    false, 'is_idempotent_concurrently on check-then-insert',
    'check-then-insert pays once when duplicates overlap',
    $re$^table example_payments: one execution adds 1 and removes 0 rows; 2 concurrent calls added 2 and removed 0:
    added:   \(\d+,cc-3,100\)
    added:   \(\d+,cc-3,100\)
the sessions saw different results:
    session 1: .*
    session 2: .*$$re$, true);

-- A duplicate that errors instead of waiting: the session is named
SELECT * FROM check_test(
    is_idempotent_concurrently(
        $$SELECT CASE WHEN (idem_begin('cc-5', scope => 'example_pay', wait => false)).outcome = 'started'
                      THEN 1 ELSE 1 / (pg_backend_pid() * 0) END$$, 2, '{}', 'duplicates that do not wait'),
    false, 'is_idempotent_concurrently when a session fails', 'duplicates that do not wait',
    $re$^session [12] failed: SQLSTATE 22012: division by zero$$re$, true);

-- A call that fails on its own never reaches the sessions
SELECT * FROM check_test(
    is_idempotent_concurrently($$SELECT example_pay_idempotent('', 100)$$, 2,
                               ARRAY['example_payments']::regclass[], 'an empty key'),
    false, 'is_idempotent_concurrently when the call fails', 'an empty key',
    '^the call, run once in a session of its own, failed: SQLSTATE 22023: ', true);

-- A call that hangs is cancelled after idempotency_tap.timeout
SET idempotency_tap.timeout = '1 second';
SELECT * FROM check_test(
    is_idempotent_concurrently($$SELECT pg_sleep(5)$$, 2, '{}', 'a call that hangs'),
    false, 'is_idempotent_concurrently when the call hangs', 'a call that hangs',
    'the call, run once in a session of its own, did not finish within 00:00:01 (idempotency_tap.timeout): canceling statement due to statement timeout');
RESET idempotency_tap.timeout;

-- Sessions that cannot connect are reported, with the way to fix it
SET idempotency_tap.connstr = 'port=1';
SELECT * FROM check_test(
    is_idempotent_concurrently($$SELECT 1$$, 2, '{}', 'a wrong port'),
    false, 'is_idempotent_concurrently when the sessions cannot connect', 'a wrong port',
    $re$^could not open the sessions: could not establish connection
    .*
    idempotency_tap.connstr adds to or overrides the keywords the kit uses$$re$, true);
RESET idempotency_tap.connstr;

-- Refused inside a transaction with uncommitted work, which the sessions
-- could not see
BEGIN;
CREATE TEMP TABLE kit_uncommitted AS SELECT 1 AS n;
SELECT * FROM check_test(
    is_idempotent_concurrently($$SELECT example_pay_idempotent('cc-4', 100)$$, 2,
                               ARRAY['example_payments']::regclass[], 'inside a transaction'),
    false, 'is_idempotent_concurrently in a transaction that wrote', 'inside a transaction',
    'is_idempotent_concurrently must run outside a transaction block:
    its sessions cannot see the uncommitted work of the test''s transaction.
    Run the test file without BEGIN (autocommit), commit the handler and its
    tables first, and drop them and delete their ledger rows at the end.');
COMMIT;
DROP TABLE kit_uncommitted;

SELECT throws_ok(
    $$SELECT is_idempotent_concurrently('SELECT 1', 1, '{}')$$,
    '22023', 'sessions must be at least 2',
    'is_idempotent_concurrently needs at least 2 sessions');

SELECT * FROM finish();
\set ON_ERROR_STOP 1

-- clean up what the sessions committed
DELETE FROM idem_ledger WHERE scope = 'example_pay';
DROP FUNCTION example_pay_idempotent(text, int), example_pay_naive(text, int),
              example_pay_check_then_insert(text, int);
DROP TABLE example_payments;
\if :kit_created_tap
DROP EXTENSION idempotency_tap;
\endif
\if :kit_created_dblink
DROP EXTENSION dblink;
\endif
