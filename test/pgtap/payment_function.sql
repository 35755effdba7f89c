-- payment_function.sql: an HTTP-style payment handler written as a PL/pgSQL
-- function.  The payment row and the ledger row commit or roll back together,
-- so a retried request is charged once and gets the first response back.
BEGIN;

SELECT plan(24);

-- The business table and a switch that stands for the payment gateway
CREATE TABLE payments (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idem_key text    NOT NULL,
    customer text    NOT NULL,
    amount   numeric NOT NULL
);
CREATE TABLE gateway (up boolean NOT NULL);
INSERT INTO gateway VALUES (true);

-- The handler.  It returns what the HTTP layer would send back:
-- {"status": <HTTP status>, "body": <response body>}.
CREATE FUNCTION pay(key text, amount numeric, customer text) RETURNS jsonb
LANGUAGE plpgsql AS $fn$
DECLARE
    request    jsonb := jsonb_build_object('amount', pay.amount,
                                           'customer', pay.customer);
    r          idem_result;
    payment_id bigint;
    body       jsonb;
BEGIN
    r := idem_begin(pay.key, request, scope => 'payments');

    IF r.outcome = 'replayed' THEN
        RETURN jsonb_build_object('status', r.status, 'body', r.response);
    ELSIF r.outcome = 'in_progress' THEN
        RAISE EXCEPTION 'payment request % is being processed', pay.key
            USING ERRCODE = 'object_in_use',
                  HINT = 'Answer 409 Conflict; the client retries later.';
    END IF;

    -- outcome = 'started': this call owns the attempt
    IF pay.amount <= 0 THEN
        -- A permanent failure: store it, so that retries replay it
        body := jsonb_build_object('error', 'amount must be positive');
        PERFORM idem_finish(pay.key, body, 422, scope => 'payments');
        RETURN jsonb_build_object('status', 422, 'body', body);
    END IF;

    IF NOT (SELECT up FROM gateway) THEN
        -- A transient failure: release the attempt so that a retry runs again
        PERFORM idem_fail(pay.key, scope => 'payments');
        RETURN jsonb_build_object('status', 503,
                                  'body', jsonb_build_object('error', 'gateway unavailable'));
    END IF;

    INSERT INTO payments (idem_key, customer, amount)
        VALUES (pay.key, pay.customer, pay.amount)
        RETURNING id INTO payment_id;
    body := jsonb_build_object('payment_id', payment_id, 'amount', pay.amount,
                               'customer', pay.customer, 'attempt', r.attempt);
    PERFORM idem_finish(pay.key, body, 201, scope => 'payments');
    RETURN jsonb_build_object('status', 201, 'body', body);
END
$fn$;

-- Responses the client received, for comparison with later replays
CREATE TEMP TABLE responses (label text PRIMARY KEY, response jsonb NOT NULL);

-- First request: the payment is made
INSERT INTO responses VALUES ('first', pay('pay-1', 100, 'alice'));

SELECT is((SELECT (response ->> 'status')::int FROM responses WHERE label = 'first'),
          201, 'first call answers 201 Created');
SELECT is((SELECT count(*) FROM payments WHERE idem_key = 'pay-1'),
          1::bigint, 'first call creates one payment');
SELECT is((SELECT (response #>> '{body,payment_id}')::bigint FROM responses WHERE label = 'first'),
          (SELECT id FROM payments WHERE idem_key = 'pay-1'),
          'the response names the payment it created');

-- The client retries (lost response, timeout ...)
INSERT INTO responses VALUES ('duplicate', pay('pay-1', 100, 'alice'));

SELECT is((SELECT response FROM responses WHERE label = 'duplicate'),
          (SELECT response FROM responses WHERE label = 'first'),
          'a duplicate call returns the identical response');
SELECT is((SELECT count(*) FROM payments WHERE idem_key = 'pay-1'),
          1::bigint, 'a duplicate call creates no payment');
SELECT is(pay('pay-1', 100.00, 'alice'),
          (SELECT response FROM responses WHERE label = 'first'),
          'an amount of 100.00 is the same request as 100 (equal as jsonb) and replays');
SELECT results_eq(
    $$SELECT state, status, attempt, response FROM idem_ledger
       WHERE scope = 'payments' AND key = 'pay-1'$$,
    $$SELECT 'completed'::text, 201, 1, response -> 'body'
        FROM responses WHERE label = 'first'$$,
    'the ledger holds the completed key with status 201 and the response body');

-- The same key reused for a different payment
SELECT throws_ok($$SELECT pay('pay-1', 250, 'alice')$$, 'IK001', NULL,
                 'the same key with a different amount raises IK001');
SELECT throws_ok($$SELECT pay('pay-1', 100, 'bob')$$, 'IK001', NULL,
                 'the same key for a different customer raises IK001');
SELECT is((SELECT count(*) FROM payments WHERE idem_key = 'pay-1'),
          1::bigint, 'a rejected reuse creates no payment');
SELECT is(pay('pay-1', 100, 'alice'),
          (SELECT response FROM responses WHERE label = 'first'),
          'after a rejected reuse the key still replays the first response');

-- A permanent failure is stored like a success, and replayed
INSERT INTO responses VALUES ('invalid', pay('pay-neg', -5, 'bob'));

SELECT is((SELECT response FROM responses WHERE label = 'invalid'),
          '{"status": 422, "body": {"error": "amount must be positive"}}'::jsonb,
          'a non-positive amount answers 422 with an error body');
SELECT is(pay('pay-neg', -5, 'bob'),
          (SELECT response FROM responses WHERE label = 'invalid'),
          'a retry of the invalid request replays the 422 response');
SELECT is((SELECT count(*) FROM payments WHERE idem_key = 'pay-neg'),
          0::bigint, 'neither the invalid request nor its retry creates a payment');
SELECT results_eq(
    $$SELECT state, status, response FROM idem_ledger
       WHERE scope = 'payments' AND key = 'pay-neg'$$,
    $$VALUES ('completed'::text, 422, '{"error": "amount must be positive"}'::jsonb)$$,
    'the ledger stores the 422 and its error body');

-- A transient failure releases the attempt; the retry runs again
UPDATE gateway SET up = false;
INSERT INTO responses VALUES ('unavailable', pay('pay-2', 40, 'carol'));

SELECT is((SELECT (response ->> 'status')::int FROM responses WHERE label = 'unavailable'),
          503, 'a call while the gateway is down answers 503');
SELECT is((SELECT count(*) FROM payments WHERE idem_key = 'pay-2'),
          0::bigint, 'the failed call creates no payment');
UPDATE gateway SET up = true;
INSERT INTO responses VALUES ('recovered', pay('pay-2', 40, 'carol'));

SELECT is((SELECT (response ->> 'status')::int FROM responses WHERE label = 'recovered'),
          201, 'the retry after the gateway recovers answers 201');
SELECT is((SELECT (response #>> '{body,attempt}')::int FROM responses WHERE label = 'recovered'),
          2, 'the retry ran as attempt 2');
SELECT is((SELECT count(*) FROM payments WHERE idem_key = 'pay-2'),
          1::bigint, 'the successful retry creates exactly one payment');
SELECT is(pay('pay-2', 40, 'carol'),
          (SELECT response FROM responses WHERE label = 'recovered'),
          'a further duplicate replays the successful response');
SELECT results_eq(
    $$SELECT state, status, attempt FROM idem_ledger
       WHERE scope = 'payments' AND key = 'pay-2'$$,
    $$VALUES ('completed'::text, 201, 2)$$,
    'the ledger shows the completed attempt 2 with status 201');

-- Another attempt holds the key: the handler answers 409, charges nothing
SELECT is((idem_begin('pay-3', '{"amount": 75, "customer": "dave"}',
                      scope => 'payments')).outcome,
          'started', 'another worker starts request pay-3');
SELECT throws_ok($$SELECT pay('pay-3', 75, 'dave')$$, '55006', NULL,
                 'a duplicate while the first attempt is in progress is refused (409)');

SELECT * FROM finish();
ROLLBACK;
