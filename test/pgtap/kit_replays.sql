-- kit_replays.sql: replays() of the idempotency_tap kit passes a handler
-- whose duplicate returns the first result and leaves the ledger as it was,
-- and catches handlers that run again, use no ledger key, draw a new key per
-- call or never finish their attempt.  Runs in one transaction that rolls
-- back.
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS idempotency_tap;
\ir ../../examples/handlers.sql

-- A consumer de-duplicated by idem_once
CREATE TABLE kit_shipments (order_id int NOT NULL);
CREATE FUNCTION kit_consume(msg_id text, order_id int)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF idem_once(msg_id, scope => 'kit-consumer') THEN
        INSERT INTO kit_shipments VALUES (order_id);
    END IF;
END
$$;

-- A handler that derives its key from something that changes on every call
CREATE FUNCTION kit_pay_nonce_key(amount int)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN example_pay_idempotent(
        idem_key('payment', 'create',
                 jsonb_build_object('amount', amount, 'nonce', gen_random_uuid())),
        amount);
END
$$;

-- A handler that begins an attempt and never finishes it
CREATE FUNCTION kit_pay_unfinished(key text)
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN (idem_begin(key, scope => 'example_pay')).outcome;
END
$$;

SELECT plan(22);

SELECT * FROM check_test(
    replays($$SELECT example_pay_idempotent('rp-1', 100)$$, 'a duplicate payment replays'),
    true, 'replays on the idempotent handler', 'a duplicate payment replays', '');
SELECT * FROM check_test(
    replays($$SELECT kit_consume('rp-2', 7)$$, 'a redelivered message is skipped'),
    true, 'replays on an idem_once consumer', 'a redelivered message is skipped', '');
SELECT is((SELECT count(*) FROM idem_ledger WHERE scope IN ('example_pay', 'kit-consumer')), 0::bigint,
          'replays leaves no ledger row behind');

-- The default description
SELECT * FROM check_test(
    replays($$SELECT example_pay_idempotent('rp-1', 100)$$),
    true, 'replays with its default description',
    $$SELECT example_pay_idempotent('rp-1', 100) replays its first result$$, '');

-- The naive handler has no key and pays again
SELECT * FROM check_test(
    replays($$SELECT example_pay_naive('rp-3', 100)$$, 'the naive handler replays'),
    false, 'replays on the naive handler', 'the naive handler replays',
    $re$^the first call completed no key in idem_ledger: it does not go through idem_begin and idem_finish \(or idem_once\), or its key was already used
the second call returned a different result:
    first:  \[\{"example_pay_naive": \{"amount": 100, "payment_id": \d+\}\}\]
    second: \[\{"example_pay_naive": \{"amount": 100, "payment_id": \d+\}\}\]$$re$, true);

-- Check-then-insert returns the same payment, but nothing replayed it
SELECT * FROM check_test(
    replays($$SELECT example_pay_check_then_insert('rp-4', 100)$$, 'check-then-insert replays'),
    false, 'replays on check-then-insert', 'check-then-insert replays',
    'the first call completed no key in idem_ledger: it does not go through idem_begin and idem_finish (or idem_once), or its key was already used');

-- A new key on every call: the second call is a second execution
SELECT * FROM check_test(
    replays($$SELECT kit_pay_nonce_key(100)$$, 'a key drawn per call replays'),
    false, 'replays on a handler with a key drawn per call', 'a key drawn per call replays',
    $re$^the second call changed the ledger row of key "[0-9a-f]{32}" \(scope "example_pay"\): it executed again instead of replaying
    before: absent
    after:  completed, attempt 1, created \S+, expires \S+
the second call returned a different result:
    first:  .*
    second: .*$$re$, true);

-- An attempt left in progress is not a completed key
SELECT * FROM check_test(
    replays($$SELECT kit_pay_unfinished('rp-5')$$, 'an unfinished attempt replays'),
    false, 'replays on a handler that never finishes', 'an unfinished attempt replays',
    'after the first call key "rp-5" (scope "example_pay") is in_progress, not completed: the call must finish its attempt (idem_finish) before it returns
the second call returned a different result:
    first:  [{"kit_pay_unfinished": "started"}]
    second: [{"kit_pay_unfinished": "in_progress"}]');

SELECT * FROM finish();
ROLLBACK;
