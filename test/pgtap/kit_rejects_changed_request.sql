-- kit_rejects_changed_request.sql: rejects_changed_request() of the
-- idempotency_tap kit passes a handler that refuses a reused key with a
-- different request (SQLSTATE IK001) and catches handlers that accept it or
-- fail with another error.  Runs in one transaction that rolls back.
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS idempotency_tap;
\ir ../../examples/handlers.sql

-- A handler that leans on a unique constraint instead of the ledger
CREATE TABLE kit_unique_payments (pay_key text UNIQUE, amount int);
CREATE FUNCTION kit_pay_unique(key text, amount int)
RETURNS void
LANGUAGE sql
AS $$
    INSERT INTO kit_unique_payments VALUES (key, amount);
$$;

SELECT plan(18);

SELECT * FROM check_test(
    rejects_changed_request($$SELECT example_pay_idempotent('rc-1', 100)$$,
                            $$SELECT example_pay_idempotent('rc-1', 200)$$,
                            'another amount on the same key is refused'),
    true, 'rejects_changed_request on the idempotent handler',
    'another amount on the same key is refused', '');

SELECT * FROM check_test(
    rejects_changed_request($$SELECT example_pay_idempotent('rc-1', 100)$$,
                            $$SELECT example_pay_idempotent('rc-1', 200)$$),
    true, 'rejects_changed_request with its default description',
    $$SELECT example_pay_idempotent('rc-1', 200) is rejected with IK001 after SELECT example_pay_idempotent('rc-1', 100)$$,
    '');

-- The naive handler pays the second amount too
SELECT * FROM check_test(
    rejects_changed_request($$SELECT example_pay_naive('rc-2', 100)$$,
                            $$SELECT example_pay_naive('rc-2', 200)$$,
                            'the naive handler refuses another amount'),
    false, 'rejects_changed_request on the naive handler',
    'the naive handler refuses another amount',
    $re$^the second call, with a changed request, did not fail; it returned:
    \[\{"example_pay_naive": \{"amount": 200, "payment_id": \d+\}\}\]
    want: SQLSTATE IK001 \(key reused with a different request\)$$re$, true);

-- Check-then-insert answers with the first payment, as if nothing changed
SELECT * FROM check_test(
    rejects_changed_request($$SELECT example_pay_check_then_insert('rc-3', 100)$$,
                            $$SELECT example_pay_check_then_insert('rc-3', 200)$$,
                            'check-then-insert refuses another amount'),
    false, 'rejects_changed_request on check-then-insert',
    'check-then-insert refuses another amount',
    $re$^the second call, with a changed request, did not fail; it returned:
    \[\{"example_pay_check_then_insert": \{"amount": 100, "payment_id": \d+\}\}\]
    want: SQLSTATE IK001 \(key reused with a different request\)$$re$, true);

-- A unique constraint refuses it, but with the wrong error
SELECT * FROM check_test(
    rejects_changed_request($$SELECT kit_pay_unique('rc-4', 100)$$,
                            $$SELECT kit_pay_unique('rc-4', 200)$$,
                            'a unique constraint refuses another amount'),
    false, 'rejects_changed_request on a unique constraint',
    'a unique constraint refuses another amount',
    'the second call failed: SQLSTATE 23505: duplicate key value violates unique constraint "kit_unique_payments_pay_key_key"
    want: SQLSTATE IK001 (key reused with a different request)');

-- A first call that fails proves nothing
SELECT * FROM check_test(
    rejects_changed_request($$SELECT example_pay_idempotent(NULL, 100)$$,
                            $$SELECT example_pay_idempotent(NULL, 200)$$,
                            'a NULL key'),
    false, 'rejects_changed_request when the first call fails', 'a NULL key',
    '^the first call failed: SQLSTATE 22004: ', true);

SELECT * FROM finish();
ROLLBACK;
