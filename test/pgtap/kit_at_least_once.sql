-- kit_at_least_once.sql: at_least_once() of the idempotency_tap kit delivers
-- a message N times, rolling back deliveries 1, 4, 7 ... as a consumer that
-- died before COMMIT would.  The effect must appear once: applied by the
-- first delivery that commits, never again.  It catches a consumer that
-- applies every delivery and one that keeps its de-duplication outside the
-- transaction, which loses the effect of a rolled-back delivery for good.
-- Runs in one transaction that rolls back.
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS idempotency_tap;
\ir ../../examples/handlers.sql

CREATE TABLE kit_shipments (order_id int NOT NULL);

-- De-duplicated by idem_once, in the consumer's transaction
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

-- De-duplicated by a marker a rollback cannot take back (a sequence here;
-- a cache or another database in real life)
CREATE SEQUENCE kit_seen;
CREATE FUNCTION kit_consume_marked_outside(order_id int)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF nextval('kit_seen') = 1 THEN
        INSERT INTO kit_shipments VALUES (order_id);
    END IF;
END
$$;

SELECT plan(23);

SELECT * FROM check_test(
    at_least_once($$SELECT example_pay_idempotent('al-1', 100)$$, 5,
                  ARRAY['example_payments']::regclass[], 'a payment delivered 5 times pays once'),
    true, 'at_least_once on the idempotent handler', 'a payment delivered 5 times pays once', '');
SELECT * FROM check_test(
    at_least_once($$SELECT kit_consume('al-2', 7)$$, 4,
                  ARRAY['kit_shipments']::regclass[]),
    true, 'at_least_once on an idem_once consumer',
    $$SELECT kit_consume('al-2', 7) delivered 4 times has one effect$$, '');
SELECT is((SELECT count(*) FROM kit_shipments), 0::bigint,
          'at_least_once leaves no effect behind');

-- Every delivery that commits pays
SELECT * FROM check_test(
    at_least_once($$SELECT example_pay_naive('al-3', 100)$$, 5,
                  ARRAY['example_payments']::regclass[], 'the naive handler pays once'),
    false, 'at_least_once on the naive handler', 'the naive handler pays once',
    $re$^deliveries 3 to 5 changed table example_payments after delivery 2 had applied the effect:
    added:   \(\d+,al-3,100\)
    added:   \(\d+,al-3,100\)$$re$, true);

-- Check-then-insert survives deliveries that do not overlap
SELECT * FROM check_test(
    at_least_once($$SELECT example_pay_check_then_insert('al-4', 100)$$, 3,
                  ARRAY['example_payments']::regclass[], 'check-then-insert pays once'),
    true, 'at_least_once on check-then-insert', 'check-then-insert pays once', '');

-- The rolled-back first delivery left its marker: the effect never happens
SELECT * FROM check_test(
    at_least_once($$SELECT kit_consume_marked_outside(9)$$, 3,
                  ARRAY['kit_shipments']::regclass[], 'a marker outside the transaction'),
    false, 'at_least_once on de-duplication outside the transaction', 'a marker outside the transaction',
    'table kit_shipments: one execution adds 1 and removes 0 rows; delivery 2, the first to commit after delivery 1 rolled back, added 0 and removed 0:');

-- Nothing observed changes: there is nothing to count
SELECT * FROM check_test(
    at_least_once($$SELECT kit_consume('al-5', 7)$$, 3,
                  ARRAY['example_payments']::regclass[], 'the wrong table'),
    false, 'at_least_once watching a table the call does not write', 'the wrong table',
    'delivery 1 changed none of the observed tables: there is no effect to check');

SELECT * FROM check_test(
    at_least_once($$SELECT example_pay_idempotent('', 100)$$, 3,
                  ARRAY['example_payments']::regclass[], 'an empty key'),
    false, 'at_least_once when a delivery fails', 'an empty key',
    '^delivery 1 \(rolled back\) failed: SQLSTATE 22023: ', true);

SELECT throws_ok(
    $$SELECT at_least_once('SELECT 1', 2, ARRAY['kit_shipments']::regclass[])$$,
    '22023', 'deliveries must be at least 3',
    'at_least_once needs at least 3 deliveries');

SELECT * FROM finish();
ROLLBACK;
