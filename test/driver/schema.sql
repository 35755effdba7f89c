-- test/driver/schema.sql: the payments service that the retry-storm tests hammer.
--
-- A payment handler in the two shapes the README recommends:
--   pay()        one transaction: begin, do the work, finish (pattern 1)
--   pay_lease()  lease mode: begin and COMMIT, call out, then pay and finish
--                with the attempt number in a second transaction (pattern 2)
-- Every key always carries the same request (amount = the key's number), so a
-- retry is a true duplicate.  payments.key is deliberately not unique: a
-- second payment for a key must be possible, so that a test can see one.
CREATE EXTENSION IF NOT EXISTS idempotency;

CREATE TABLE payments (
    id      bigserial PRIMARY KEY,
    key     text NOT NULL,
    amount  int  NOT NULL,
    attempt int  NOT NULL
);
CREATE INDEX payments_key_idx ON payments (key);

-- The sliding window of keys: at time t the window is the keys
-- base .. base + width - 1, where base = 1 + (t - t0) * slide.  Keys enter at
-- the top of the window, so its top is where first attempts and their
-- concurrent duplicates meet.  The test sets t0 when the storm starts.
CREATE TABLE storm_clock (
    t0    double precision NOT NULL,
    slide int NOT NULL,
    width int NOT NULL
);
INSERT INTO storm_clock VALUES (extract(epoch FROM clock_timestamp()), 40, 100);

-- A key number drawn from p_spread keys starting p_from keys into the window
CREATE FUNCTION storm_key(p_from int, p_spread int) RETURNS int
LANGUAGE sql VOLATILE AS $$
    SELECT 1 + floor((extract(epoch FROM clock_timestamp()) - t0) * slide)::int
           + p_from + floor(random() * p_spread)::int
      FROM storm_clock
$$;

-- The highest key the window has reached so far
CREATE FUNCTION storm_top() RETURNS int
LANGUAGE sql VOLATILE AS $$
    SELECT storm_key(width - 1, 1) FROM storm_clock
$$;

-- Non-transactional counters (sequences survive rollbacks): what the storm did
CREATE SEQUENCE storm_started;
CREATE SEQUENCE storm_replayed;
CREATE SEQUENCE storm_in_progress;
CREATE SEQUENCE storm_gave_up;

-- One transaction: begin, pay, finish.  With p_finish => false the handler
-- stops after paying without finishing; the driver then rolls the
-- transaction back (a handler that gives up half-way).  p_wait is passed to
-- idem_begin's wait.
CREATE FUNCTION pay(p_key text, p_amount int, p_finish boolean DEFAULT true,
                    p_wait boolean DEFAULT true)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r   idem_result;
    pid bigint;
BEGIN
    r := idem_begin(p_key, jsonb_build_object('amount', p_amount),
                    scope => 'storm', lease => '1 hour', wait => p_wait);
    IF r.outcome = 'replayed' THEN
        PERFORM nextval('storm_replayed');
        RETURN r.response;
    ELSIF r.outcome = 'in_progress' THEN
        PERFORM nextval('storm_in_progress');
        RETURN NULL;
    END IF;
    PERFORM nextval('storm_started');
    -- the work takes a moment, so concurrent duplicates queue behind it
    PERFORM pg_sleep(random() * 0.004);
    INSERT INTO payments (key, amount, attempt)
    VALUES (p_key, p_amount, r.attempt) RETURNING id INTO pid;
    IF NOT p_finish THEN
        PERFORM nextval('storm_gave_up');
        RETURN NULL;
    END IF;
    r := idem_finish(p_key, jsonb_build_object('payment_id', pid, 'key', p_key),
                     201, scope => 'storm');
    RETURN r.response;
END
$$;

-- Lease mode.  p_end says how the worker's story ends after the attempt is
-- committed: 'finish' pays and finishes, 'fail' releases the attempt (a
-- retryable failure), 'vanish' returns without either (a worker that died
-- after its first commit: the attempt stays in progress until its lease
-- lapses and a retry takes it over).
CREATE PROCEDURE pay_lease(p_key text, p_amount int, p_end text)
LANGUAGE plpgsql AS $$
DECLARE
    r   idem_result;
    pid bigint;
BEGIN
    r := idem_begin(p_key, jsonb_build_object('amount', p_amount),
                    scope => 'storm', lease => '1 hour');
    IF r.outcome = 'replayed' THEN
        PERFORM nextval('storm_replayed');
        RETURN;
    ELSIF r.outcome = 'in_progress' THEN
        PERFORM nextval('storm_in_progress');
        RETURN;
    END IF;
    PERFORM nextval('storm_started');
    COMMIT;                             -- the attempt is durable now
    PERFORM pg_sleep(random() * 0.004); -- the external call
    IF p_end = 'vanish' THEN
        PERFORM nextval('storm_gave_up');
        RETURN;
    ELSIF p_end = 'fail' THEN
        PERFORM nextval('storm_gave_up');
        PERFORM idem_fail(p_key, scope => 'storm', attempt => r.attempt);
        COMMIT;
        RETURN;
    END IF;
    INSERT INTO payments (key, amount, attempt)
    VALUES (p_key, p_amount, r.attempt) RETURNING id INTO pid;
    PERFORM idem_finish(p_key, jsonb_build_object('payment_id', pid, 'key', p_key),
                        201, scope => 'storm', attempt => r.attempt);
    COMMIT;
END
$$;

-- Retry every key of 1..p_keys until it completes, one transaction per key,
-- the way a client that never gives up would.  Run with the clock moved past
-- the lease (idempotency.clock_offset), so lapsed attempts are taken over.
-- Returns how many calls it needed.
CREATE PROCEDURE retry_all(p_keys int, INOUT calls int DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    resp jsonb;
BEGIN
    calls := 0;
    FOR k IN 1..p_keys LOOP
        LOOP
            calls := calls + 1;
            resp := pay('k' || k, k);
            COMMIT;
            EXIT WHEN resp IS NOT NULL;
            IF calls > 10 * p_keys THEN
                RAISE EXCEPTION 'key k% does not complete', k;
            END IF;
        END LOOP;
    END LOOP;
END
$$;
