-- bench/layers.sql: one caller function per layer, identical apart from the
-- layer.  Loaded into the benchmark database by bench/run.sh.

CREATE EXTENSION IF NOT EXISTS idempotency;

-- The work every layer does: one payment row.
CREATE TABLE bench_payments (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pay_key  text    NOT NULL,
    amount   int     NOT NULL
);

-- bare: no idempotency at all (the ceiling)
CREATE FUNCTION pay_bare(p_key text, p_amount int) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    pid bigint;
BEGIN
    INSERT INTO bench_payments (pay_key, amount) VALUES (p_key, p_amount)
    RETURNING id INTO pid;
    RETURN jsonb_build_object('payment_id', pid);
END $$;

-- hand-rolled: the common Stripe-style recipe, written in PL/pgSQL: a table
-- with key, request hash, status, response and expiry; INSERT ... ON
-- CONFLICT DO NOTHING, then SELECT; UPDATE on finish.
CREATE TABLE hand_keys (
    key          text        PRIMARY KEY,
    request_hash text        NOT NULL,
    status       int,
    response     jsonb,
    locked_at    timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

CREATE FUNCTION pay_hand(p_key text, p_amount int) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    req  jsonb := jsonb_build_object('amount', p_amount);
    h    text  := encode(sha256(convert_to(req::text, 'UTF8')), 'hex');
    r    hand_keys;
    pid  bigint;
    resp jsonb;
BEGIN
    INSERT INTO hand_keys (key, request_hash, locked_at, expires_at)
    VALUES (p_key, h, now(), now() + interval '24 hours')
    ON CONFLICT (key) DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO r FROM hand_keys WHERE key = p_key;
        IF r.request_hash <> h THEN
            RAISE EXCEPTION 'key reused with a different request' USING ERRCODE = 'IK001';
        END IF;
        IF r.status IS NOT NULL AND r.expires_at > now() THEN
            RETURN r.response;
        END IF;
        RAISE EXCEPTION 'request in progress' USING ERRCODE = '55006';
    END IF;
    INSERT INTO bench_payments (pay_key, amount) VALUES (p_key, p_amount)
    RETURNING id INTO pid;
    resp := jsonb_build_object('payment_id', pid);
    UPDATE hand_keys SET status = 201, response = resp, locked_at = NULL
     WHERE key = p_key;
    RETURN resp;
END $$;

-- the extension
CREATE FUNCTION pay_ext(p_key text, p_amount int) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r   idem_result;
    pid bigint;
BEGIN
    r := idem_begin(p_key, jsonb_build_object('amount', p_amount));
    IF r.outcome = 'replayed' THEN
        RETURN r.response;
    ELSIF r.outcome = 'in_progress' THEN
        RAISE EXCEPTION 'request in progress' USING ERRCODE = '55006';
    END IF;
    INSERT INTO bench_payments (pay_key, amount) VALUES (p_key, p_amount)
    RETURNING id INTO pid;
    r := idem_finish(p_key, jsonb_build_object('payment_id', pid), 201);
    RETURN r.response;
END $$;

-- consumer de-duplication: bare, hand-rolled, extension
CREATE TABLE bench_effects (msg_id text NOT NULL, note text);
CREATE TABLE hand_seen (msg_id text PRIMARY KEY, seen_at timestamptz NOT NULL DEFAULT now());

CREATE FUNCTION consume_bare(p_msg text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_effects VALUES (p_msg, 'x');
    RETURN true;
END $$;

CREATE FUNCTION consume_hand(p_msg text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hand_seen (msg_id) VALUES (p_msg) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO bench_effects VALUES (p_msg, 'x');
    RETURN true;
END $$;

CREATE FUNCTION consume_ext(p_msg text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT idem_once(p_msg) THEN
        RETURN false;
    END IF;
    INSERT INTO bench_effects VALUES (p_msg, 'x');
    RETURN true;
END $$;
