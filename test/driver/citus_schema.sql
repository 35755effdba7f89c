-- test/driver/citus_schema.sql: the payments service of schema.sql on a Citus
-- cluster, run on the coordinator (the workers added, Citus created).
--
-- The ledger is distributed by key, and the payments by key too, co-located
-- with it: a key's row and its payment are on one shard, so the handler's
-- transaction stays on one worker.  pay() is a distributed function
-- co-located with the ledger: a call outside a transaction block runs on
-- the worker holding the key's shard, one inside a block runs on the
-- coordinator (Citus delegates only single-statement calls).  The lease
-- handler pay_lease() and the retry procedure run on the coordinator.
-- Counters are not kept (a delegated call cannot reach the coordinator's
-- sequences): the test counts the clients' transactions instead.
CREATE EXTENSION IF NOT EXISTS idempotency;
SELECT idem_distribute('key');

CREATE TABLE payments (
    key     text   NOT NULL,
    id      bigserial,
    amount  int    NOT NULL,
    attempt int    NOT NULL,
    PRIMARY KEY (key, id)
);
SELECT create_distributed_table('payments', 'key', colocate_with => 'idem_ledger');

-- The sliding window of keys, as in schema.sql (local to the coordinator)
CREATE TABLE storm_clock (
    t0    double precision NOT NULL,
    slide int NOT NULL,
    width int NOT NULL
);
INSERT INTO storm_clock VALUES (extract(epoch FROM clock_timestamp()), 20, 100);

CREATE FUNCTION storm_key(p_from int, p_spread int) RETURNS int
LANGUAGE sql VOLATILE AS $$
    SELECT 1 + floor((extract(epoch FROM clock_timestamp()) - t0) * slide)::int
           + p_from + floor(random() * p_spread)::int
      FROM storm_clock
$$;

CREATE FUNCTION storm_top() RETURNS int
LANGUAGE sql VOLATILE AS $$
    SELECT storm_key(width - 1, 1) FROM storm_clock
$$;

-- One transaction: begin, pay, finish (see schema.sql)
CREATE FUNCTION pay(p_key text, p_amount int, p_finish boolean DEFAULT true,
                    p_wait boolean DEFAULT true)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r   idem_result;
    pid bigint;
BEGIN
    r := idem_begin(p_key, jsonb_build_object('amount', p_amount),
                    scope => 'storm', lease => '1 hour', wait => p_wait);
    IF r.outcome <> 'started' THEN
        RETURN r.response;
    END IF;
    PERFORM pg_sleep(random() * 0.004);
    INSERT INTO payments (key, amount, attempt)
    VALUES (p_key, p_amount, r.attempt) RETURNING id INTO pid;
    IF NOT p_finish THEN
        RETURN NULL;
    END IF;
    r := idem_finish(p_key, jsonb_build_object('payment_id', pid, 'key', p_key),
                     201, scope => 'storm');
    RETURN r.response;
END
$$;
SELECT create_distributed_function('pay(text,int,boolean,boolean)', 'p_key',
                                   colocate_with => 'idem_ledger');

-- Lease mode (see schema.sql), on the coordinator
CREATE PROCEDURE pay_lease(p_key text, p_amount int, p_end text)
LANGUAGE plpgsql AS $$
DECLARE
    r   idem_result;
    pid bigint;
BEGIN
    r := idem_begin(p_key, jsonb_build_object('amount', p_amount),
                    scope => 'storm', lease => '1 hour');
    IF r.outcome <> 'started' THEN
        RETURN;
    END IF;
    COMMIT;
    PERFORM pg_sleep(random() * 0.004);
    IF p_end = 'vanish' THEN
        RETURN;
    ELSIF p_end = 'fail' THEN
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

-- Retry every key of 1..p_keys until it completes (see schema.sql)
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
