-- examples/handlers.sql: sample payment handlers for the idempotency_tap kit.
--
-- example_pay_idempotent goes through idem_begin / idem_finish and passes
-- every assertion of the kit.  example_pay_naive is a plain INSERT, and
-- example_pay_check_then_insert looks for an earlier payment before it
-- inserts: the kit catches both (the second only when duplicates race,
-- which is what is_idempotent_concurrently is for).
--
-- Load it with psql into a database that has the idempotency extension on
-- its search_path:  \i examples/handlers.sql  (or \ir from a file beside it).
-- The test files of the kit load it; to remove it:
--
--   DROP FUNCTION example_pay_idempotent(text, int), example_pay_naive(text, int),
--                 example_pay_check_then_insert(text, int);
--   DROP TABLE example_payments;
--   DELETE FROM idem_ledger WHERE scope = 'example_pay';

-- One row per payment made, whichever handler made it
CREATE TABLE example_payments (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pay_key text NOT NULL,
    amount  int  NOT NULL
);

-- Idempotent: the first call pays and stores its response, a duplicate
-- replays that response, a concurrent duplicate waits for the first and
-- then replays, the same key with another amount is refused (IK001).
CREATE FUNCTION example_pay_idempotent(key text, amount int)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    r   idem_result;
    pid bigint;
BEGIN
    r := idem_begin(key, jsonb_build_object('amount', amount), scope => 'example_pay');
    IF r.outcome = 'replayed' THEN
        RETURN r.response;
    ELSIF r.outcome = 'in_progress' THEN
        RAISE EXCEPTION 'payment % is being processed', key USING ERRCODE = '55006';
    END IF;

    INSERT INTO example_payments (pay_key, amount) VALUES (key, amount)
    RETURNING id INTO pid;

    r := idem_finish(key, jsonb_build_object('payment_id', pid, 'amount', amount), 201,
                     scope => 'example_pay');
    RETURN r.response;
END
$$;

-- Naive: every call pays again
CREATE FUNCTION example_pay_naive(key text, amount int)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    pid bigint;
BEGIN
    INSERT INTO example_payments (pay_key, amount) VALUES (key, amount)
    RETURNING id INTO pid;
    RETURN jsonb_build_object('payment_id', pid, 'amount', amount);
END
$$;

-- Naive too: a retry after the first call has committed finds its payment,
-- but duplicates that overlap all find nothing and all pay (the sleep stands
-- for the call to the card network between the check and the insert, which
-- is what makes overlaps common); a changed amount is not noticed either
CREATE FUNCTION example_pay_check_then_insert(key text, amount int)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    pid  bigint;
    paid int;
BEGIN
    SELECT p.id, p.amount INTO pid, paid
      FROM example_payments AS p
     WHERE p.pay_key = key;
    IF NOT FOUND THEN
        PERFORM pg_sleep(0.05);     -- the card network takes its time
        INSERT INTO example_payments (pay_key, amount) VALUES (key, amount)
        RETURNING id, example_payments.amount INTO pid, paid;
    END IF;
    RETURN jsonb_build_object('payment_id', pid, 'amount', paid);
END
$$;
