-- kit_is_idempotent.sql: is_idempotent() of the idempotency_tap kit passes a
-- handler whose duplicate changes nothing and catches one whose duplicate
-- pays again or touches a table, naming the table and the rows that differ.
-- Runs in one transaction that rolls back.
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS idempotency_tap;
\ir ../../examples/handlers.sql

-- A procedure around the idempotent handler
CREATE PROCEDURE kit_pay_proc(key text, amount int)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM example_pay_idempotent(key, amount);
END
$$;

-- A handler that replays the payment but counts every call in a table
CREATE TABLE kit_visits (customer text PRIMARY KEY, calls int NOT NULL);
INSERT INTO kit_visits VALUES ('ann', 0);
CREATE FUNCTION kit_pay_counting(key text, amount int)
RETURNS jsonb
LANGUAGE sql
AS $$
    UPDATE kit_visits SET calls = calls + 1 WHERE customer = 'ann';
    SELECT example_pay_idempotent(key, amount);
$$;

SELECT plan(26);

-- The idempotent handler passes, as a function and inside a procedure
SELECT * FROM check_test(
    is_idempotent($$SELECT example_pay_idempotent('ii-1', 100)$$,
                  ARRAY['example_payments']::regclass[], 'paying twice pays once'),
    true, 'is_idempotent on the idempotent handler', 'paying twice pays once', '');
SELECT * FROM check_test(
    is_idempotent($$CALL kit_pay_proc('ii-2', 100)$$,
                  ARRAY['example_payments']::regclass[], 'a procedure pays once'),
    true, 'is_idempotent on a CALL', 'a procedure pays once', '');

-- The assertion undoes its calls: nothing is left behind, and the same key
-- can be tested again
SELECT is((SELECT count(*) FROM example_payments), 0::bigint,
          'is_idempotent leaves no payment behind');
SELECT is((SELECT count(*) FROM idem_ledger WHERE scope = 'example_pay'), 0::bigint,
          'is_idempotent leaves no ledger row behind');
SELECT * FROM check_test(
    is_idempotent($$SELECT example_pay_idempotent('ii-1', 100)$$,
                  ARRAY['example_payments']::regclass[]),
    true, 'is_idempotent on a key tested before',
    $$SELECT example_pay_idempotent('ii-1', 100) is idempotent$$, '');

-- The naive handler pays again: the new row and both results are shown
SELECT * FROM check_test(
    is_idempotent($$SELECT example_pay_naive('ii-3', 100)$$,
                  ARRAY['example_payments']::regclass[], 'the naive handler pays once'),
    false, 'is_idempotent on the naive handler', 'the naive handler pays once',
    $re$^the second call changed table example_payments:
    added:   \(\d+,ii-3,100\)
the second call returned a different result:
    first:  \[\{"example_pay_naive": \{"amount": 100, "payment_id": \d+\}\}\]
    second: \[\{"example_pay_naive": \{"amount": 100, "payment_id": \d+\}\}\]$$re$, true);

-- A statement without a result set: the rows tell
SELECT * FROM check_test(
    is_idempotent($$INSERT INTO example_payments (pay_key, amount) VALUES ('ii-4', 7)$$,
                  ARRAY['example_payments']::regclass[], 'a bare INSERT'),
    false, 'is_idempotent on a bare INSERT', 'a bare INSERT',
    $re$^the second call changed table example_payments:
    added:   \(\d+,ii-4,7\)$$re$, true);

-- A duplicate that replays the payment but still writes elsewhere is caught
-- on that table, with the row before and after
SELECT * FROM check_test(
    is_idempotent($$SELECT kit_pay_counting('ii-5', 100)$$,
                  ARRAY['example_payments', 'kit_visits']::regclass[], 'counting calls'),
    false, 'is_idempotent on a handler that counts calls', 'counting calls',
    'the second call changed table kit_visits:
    removed: (ann,1)
    added:   (ann,2)');

-- Check-then-insert is idempotent when the calls do not overlap (only
-- is_idempotent_concurrently catches it)
SELECT * FROM check_test(
    is_idempotent($$SELECT example_pay_check_then_insert('ii-6', 100)$$,
                  ARRAY['example_payments']::regclass[], 'check-then-insert, one call after the other'),
    true, 'is_idempotent on check-then-insert', 'check-then-insert, one call after the other', '');

-- A call that fails is a failed test, not an error
SELECT * FROM check_test(
    is_idempotent($$SELECT example_pay_idempotent('', 100)$$,
                  ARRAY['example_payments']::regclass[], 'an empty key'),
    false, 'is_idempotent on a failing call', 'an empty key',
    '^the first call failed: SQLSTATE 22023: ', true);

SELECT * FROM finish();
ROLLBACK;
