-- bench/levers.sql: bytes per key of the ledger's layout levers,
-- measured on scratch tables filled like bench/run.sh's bytes phase.
--
-- Load it into a database that has bench/layers.sql, then, for each table
-- (v0 ... v6), floor table (m1 ... m3) and layer (hand, ext),
-- CALL fill('v0', 50000, false), CALL fill_floor('m1', 50000, false) or
-- CALL fill_layer('ext', 50000, false) (true: random UUID keys; false:
-- bench/run.sh's keys, '1-b-' and 12 random digits), VACUUM, and
-- SELECT * FROM bpk('v0').  Each key is begun (an attempt in progress with
-- a lease, a fingerprint and an owner) and finished (completed, status and
-- a small response) in a transaction of its own, as the extension does it;
-- dg() stands for idem_digest (same width, not the same bytes).  Results
-- and method: bench/README.md, "Bytes per key: the levers".

CREATE OR REPLACE FUNCTION dg(s text, k text) RETURNS uuid LANGUAGE sql IMMUTABLE AS
$$ SELECT encode(substr(sha256(convert_to(s || chr(1) || k, 'UTF8')), 1, 16), 'hex')::uuid $$;

-- v0: the ledger of 1.1
CREATE TABLE v0 (created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, lease_until timestamptz,
  status int, attempt int NOT NULL DEFAULT 1, scope text NOT NULL, key text NOT NULL, state text NOT NULL,
  response jsonb, fingerprint bytea, owner bytea, PRIMARY KEY (key, scope));
-- v1: digest uuid PK, key and scope stay
CREATE TABLE v1 (created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, lease_until timestamptz,
  status int, attempt int NOT NULL DEFAULT 1, scope text NOT NULL, key text NOT NULL, state text NOT NULL,
  response jsonb, fingerprint bytea, owner bytea, digest uuid NOT NULL PRIMARY KEY);
-- v2: state "char"
CREATE TABLE v2 (created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, lease_until timestamptz,
  status int, attempt int NOT NULL DEFAULT 1, scope text NOT NULL, key text NOT NULL, state "char" NOT NULL,
  response jsonb, fingerprint bytea, owner bytea, PRIMARY KEY (key, scope));
-- v3: fingerprint uuid
CREATE TABLE v3 (created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, lease_until timestamptz,
  status int, attempt int NOT NULL DEFAULT 1, scope text NOT NULL, key text NOT NULL, state text NOT NULL,
  response jsonb, fingerprint uuid, owner bytea, PRIMARY KEY (key, scope));
-- v4: all: digest PK + "char" + fingerprint uuid
CREATE TABLE v4 (created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, lease_until timestamptz,
  status int, attempt int NOT NULL DEFAULT 1, scope text NOT NULL, key text NOT NULL, state "char" NOT NULL,
  response jsonb, fingerprint uuid, owner bytea, digest uuid NOT NULL PRIMARY KEY);
-- v5: digest and "char" state, fingerprint kept as bytea
CREATE TABLE v5 (created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, lease_until timestamptz,
  status int, attempt int NOT NULL DEFAULT 1, scope text NOT NULL, key text NOT NULL, state "char" NOT NULL,
  response jsonb, fingerprint bytea, owner bytea, digest uuid NOT NULL PRIMARY KEY);
-- v6: v4 with the digest first and state before the texts (column order)
CREATE TABLE v6 (digest uuid NOT NULL PRIMARY KEY, created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, lease_until timestamptz,
  status int, attempt int NOT NULL DEFAULT 1, state "char" NOT NULL, scope text NOT NULL, key text NOT NULL,
  response jsonb, fingerprint uuid, owner bytea);

-- The contract's floor: only the columns SPEC.md requires of idem_ledger
-- (no fingerprint, lease, owner or digest column), each row written once,
-- completed, by fill_floor: what any ledger with a heap row and a B-tree
-- entry per key takes at the least.
-- m1: unique (key, scope), as SPEC.md words it
CREATE TABLE m1 (created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, status int, attempt int NOT NULL,
  scope text NOT NULL, key text NOT NULL, state text NOT NULL, response jsonb, UNIQUE (key, scope));
-- m2: a digest column as the unique key, as the ledger has it since 1.2
CREATE TABLE m2 (created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, status int, attempt int NOT NULL,
  scope text NOT NULL, key text NOT NULL, state text NOT NULL, response jsonb, digest uuid NOT NULL UNIQUE);
-- m3: the digest in the index only (a unique index on an expression)
CREATE TABLE m3 (created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, status int, attempt int NOT NULL,
  scope text NOT NULL, key text NOT NULL, state text NOT NULL, response jsonb);
CREATE UNIQUE INDEX ON m3 (dg(scope, key));

CREATE OR REPLACE PROCEDURE fill_floor(t text, n int, uuidkeys bool) LANGUAGE plpgsql AS $$
DECLARE k text; ins text;
BEGIN
  ins := format('INSERT INTO %I (created_at, expires_at, status, attempt, scope, key, state, response%s)
       VALUES (now(), now() + interval ''1 day'', 201, 1, '''', $1, ''completed'', jsonb_build_object(''payment_id'', $2::bigint)%s)',
       t, CASE t WHEN 'm2' THEN ', digest' ELSE '' END, CASE t WHEN 'm2' THEN ', dg('''', $1)' ELSE '' END);
  FOR i IN 1..n LOOP
    IF uuidkeys THEN k := gen_random_uuid()::text; ELSE k := (1 + i % 2) || '-b-' || (random() * 1e12)::bigint; END IF;
    EXECUTE ins USING k, i;
    COMMIT;
  END LOOP;
END $$;

CREATE OR REPLACE PROCEDURE fill(t text, n int, uuidkeys bool) LANGUAGE plpgsql AS $$
DECLARE k text; has_digest bool; fpt text; st_in text; st_done text; fpx text; ins text; upd text;
  owner bytea := '\x0102030405060708090a0b0c0d0e0f1011121314';
BEGIN
  SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = t::regclass AND attname = 'digest') INTO has_digest;
  SELECT format_type(atttypid, NULL) INTO fpt FROM pg_attribute WHERE attrelid = t::regclass AND attname = 'fingerprint';
  SELECT CASE format_type(atttypid, NULL) WHEN 'text' THEN 'in_progress' ELSE 'i' END,
         CASE format_type(atttypid, NULL) WHEN 'text' THEN 'completed' ELSE 'c' END
    INTO st_in, st_done FROM pg_attribute WHERE attrelid = t::regclass AND attname = 'state';
  ins := format('INSERT INTO %I (created_at, expires_at, lease_until, status, attempt, scope, key, state, response, fingerprint, owner%s)
       VALUES (now(), now() + interval ''1 day 30 s'', now() + interval ''30 s'', NULL, 1, '''', $1, %L, NULL, %s, $3%s)',
       t, CASE WHEN has_digest THEN ', digest' ELSE '' END, st_in,
       CASE WHEN fpt = 'uuid' THEN '$2::uuid' ELSE 'decode($2, ''hex'')' END,
       CASE WHEN has_digest THEN ', dg('''', $1)' ELSE '' END);
  upd := format('UPDATE %I SET state = %L, status = 201, response = jsonb_build_object(''payment_id'', $2::bigint),
       lease_until = NULL, owner = NULL, expires_at = now() + interval ''1 day'' WHERE %s', t, st_done,
       CASE WHEN has_digest THEN 'digest = dg('''', $1)' ELSE 'key = $1 AND scope = ''''' END);
  FOR i IN 1..n LOOP
    IF uuidkeys THEN k := gen_random_uuid()::text; ELSE k := (1 + i % 2) || '-b-' || (random() * 1e12)::bigint; END IF;
    fpx := encode(substr(sha256(convert_to(k, 'UTF8')), 1, 16), 'hex');
    EXECUTE ins USING k, fpx, owner;
    EXECUTE upd USING k, i;
    COMMIT;
  END LOOP;
END $$;

CREATE OR REPLACE PROCEDURE fill_layer(layer text, n int, uuidkeys bool) LANGUAGE plpgsql AS $$
DECLARE k text;
BEGIN
  FOR i IN 1..n LOOP
    IF uuidkeys THEN k := gen_random_uuid()::text; ELSE k := (1 + i % 2) || '-b-' || (random() * 1e12)::bigint; END IF;
    EXECUTE format('SELECT pay_%s($1, 100)', layer) USING k;
    COMMIT;
  END LOOP;
END $$;

CREATE OR REPLACE FUNCTION bpk(t regclass) RETURNS TABLE (rel text, n bigint, heap numeric, idx numeric, total numeric) LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY EXECUTE format('SELECT %L, count(*), round(pg_table_size(%L)::numeric / count(*), 1),
     round(pg_indexes_size(%L)::numeric / count(*), 1), round(pg_total_relation_size(%L)::numeric / count(*), 1) FROM %s',
     t::text, t, t, t, t);
END $$;
