/* idempotency--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION idempotency" to load this file. \quit

-- The ledger: one row per (scope, key).  The primary key arbitrates between
-- concurrent duplicates.  Only the primary key is indexed, so that finishing
-- an attempt is a HOT update.  The extension's functions are the only
-- writers, so state needs no CHECK constraint evaluated on every write.
--
-- The columns are in the order that wastes no alignment padding: the
-- fixed-width ones first, then the variable-width ones.  The default
-- fillfactor (100) is right: the finishing update prunes the page first, so
-- the previous version's space is reused at once and the update stays HOT.
-- The primary key is unique on the pair in either column order; with key
-- first, a search tells keys apart on the first column and seldom reads
-- the second, where the scope, mostly the same for all rows, would be
-- compared first and the key read from behind it every time.
CREATE TABLE @extschema@.idem_ledger (
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    lease_until timestamptz,
    status      int,
    attempt     int         NOT NULL DEFAULT 1,
    scope       text        NOT NULL,
    key         text        NOT NULL,
    state       text        NOT NULL,
    response    jsonb,
    fingerprint bytea,
    CONSTRAINT idem_ledger_pkey PRIMARY KEY (key, scope)
);

COMMENT ON TABLE @extschema@.idem_ledger IS
'One row per (scope, key): the attempt in progress or the completed response that duplicates replay';
COMMENT ON COLUMN @extschema@.idem_ledger.state IS
'in_progress (an attempt holds the key) or completed (status and response are replayed)';
COMMENT ON COLUMN @extschema@.idem_ledger.expires_at IS
'When the row counts as absent and may be swept: finish time plus ttl, or lease end plus ttl for an attempt in progress';
COMMENT ON COLUMN @extschema@.idem_ledger.lease_until IS
'End of the lease of an attempt in progress; NULL once the attempt was released by idem_fail';
COMMENT ON COLUMN @extschema@.idem_ledger.fingerprint IS
'The first 128 bits of the SHA-256 of the canonical request (idem_fingerprint); NULL for a NULL request';

-- pg_dump keeps the ledger's rows, so a restore keeps its keys
SELECT pg_catalog.pg_extension_config_dump('@extschema@.idem_ledger', '');

-- The API functions are SECURITY DEFINER so that an application role can use
-- the ledger without any privilege on it.  They need no SET search_path: the
-- C code runs its statements with pg_catalog alone as the search path, every
-- name in them schema-qualified, and looks up nothing else by name.

CREATE TYPE @extschema@.idem_result AS (
    outcome  text,
    status   int,
    response jsonb,
    attempt  int
);

COMMENT ON TYPE @extschema@.idem_result IS
'Outcome of an idempotency call: started, replayed, in_progress or completed, with the stored status and response';

CREATE FUNCTION @extschema@.idem_begin(
    key     text,
    request jsonb    DEFAULT NULL,
    scope   text     DEFAULT '',
    ttl     interval DEFAULT NULL,
    lease   interval DEFAULT NULL,
    wait    boolean  DEFAULT true)
RETURNS @extschema@.idem_result
AS 'MODULE_PATHNAME', 'idem_begin'
LANGUAGE C VOLATILE SECURITY DEFINER;

COMMENT ON FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean) IS
'Claim an idempotency key: started (do the work), replayed (stored response) or in_progress (another attempt holds it)';

CREATE FUNCTION @extschema@.idem_finish(
    key      text,
    response jsonb DEFAULT NULL,
    status   int   DEFAULT 200,
    scope    text  DEFAULT '',
    attempt  int   DEFAULT NULL)
RETURNS @extschema@.idem_result
AS 'MODULE_PATHNAME', 'idem_finish'
LANGUAGE C VOLATILE SECURITY DEFINER;

COMMENT ON FUNCTION @extschema@.idem_finish(text, jsonb, int, text, int) IS
'Complete the attempt in progress and store the status and response that later duplicates replay';

CREATE FUNCTION @extschema@.idem_fail(
    key     text,
    scope   text DEFAULT '',
    attempt int  DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_fail'
LANGUAGE C VOLATILE SECURITY DEFINER;

COMMENT ON FUNCTION @extschema@.idem_fail(text, text, int) IS
'Release the attempt in progress so that the next idem_begin of the key starts afresh';

CREATE FUNCTION @extschema@.idem_once(
    key   text,
    scope text     DEFAULT '',
    ttl   interval DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_once'
LANGUAGE C VOLATILE SECURITY DEFINER;

COMMENT ON FUNCTION @extschema@.idem_once(text, text, interval) IS
'Consumer de-duplication: true the first time a key is seen (recorded in the caller''s transaction), false while that record lives';

CREATE FUNCTION @extschema@.idem_key(
    entity text,
    action text,
    params jsonb DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'idem_key'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.idem_key(text, text, jsonb) IS
'Deterministic key: first 32 hex digits of sha256(entity:action[:canonical params]), params canonical as Python json.dumps(sort_keys=True)';

CREATE FUNCTION @extschema@.idem_fingerprint(request jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'idem_fingerprint'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.idem_fingerprint(jsonb) IS
'Request fingerprint compared by idem_begin (hex SHA-256): equal exactly when the requests are equal as jsonb';

CREATE FUNCTION @extschema@.idem_canonical(doc jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'idem_canonical'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.idem_canonical(jsonb) IS
'The canonical text idem_key hashes: what Python json.dumps(json.loads(doc), sort_keys=True) prints';

CREATE FUNCTION @extschema@.idem_sweep(batch_size int DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_sweep'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION @extschema@.idem_sweep(int) IS
'Delete up to batch_size expired keys (default idempotency.sweep_batch_size) and return how many were removed';

CREATE FUNCTION @extschema@.idem_set_logged(logged boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_set_logged'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION @extschema@.idem_set_logged(boolean) IS
'Switch the ledger between a logged table (crash-safe, replicated) and an UNLOGGED one (faster, emptied by a crash)';

-- Nothing is open to PUBLIC.  The role idempotency_user gets the API;
-- "GRANT idempotency_user TO app" is the one grant an application needs.
REVOKE ALL ON TABLE @extschema@.idem_ledger FROM PUBLIC;
REVOKE ALL ON FUNCTION
    @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean),
    @extschema@.idem_finish(text, jsonb, int, text, int),
    @extschema@.idem_fail(text, text, int),
    @extschema@.idem_once(text, text, interval),
    @extschema@.idem_key(text, text, jsonb),
    @extschema@.idem_fingerprint(jsonb),
    @extschema@.idem_canonical(jsonb),
    @extschema@.idem_sweep(int),
    @extschema@.idem_set_logged(boolean)
FROM PUBLIC;

DO $do$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles
                   WHERE rolname OPERATOR(pg_catalog.=) 'idempotency_user') THEN
        CREATE ROLE idempotency_user NOLOGIN;
    END IF;
END
$do$;

GRANT USAGE ON SCHEMA @extschema@ TO idempotency_user;
GRANT USAGE ON TYPE @extschema@.idem_result TO idempotency_user;
GRANT EXECUTE ON FUNCTION
    @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean),
    @extschema@.idem_finish(text, jsonb, int, text, int),
    @extschema@.idem_fail(text, text, int),
    @extschema@.idem_once(text, text, interval),
    @extschema@.idem_key(text, text, jsonb),
    @extschema@.idem_fingerprint(jsonb),
    @extschema@.idem_canonical(jsonb)
TO idempotency_user;

-- The sweeper
--
-- With shared_preload_libraries = 'idempotency' a launcher runs a sweeper in
-- every database that has the extension; without it, idem_sweeper_start()
-- runs one for the current database.  These functions are for superusers:
-- none is granted to idempotency_user.

CREATE FUNCTION @extschema@.idem_sweeper_start()
RETURNS integer
AS 'MODULE_PATHNAME', 'idem_sweeper_start'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION @extschema@.idem_sweeper_start() IS
'Start a background sweeper for the current database and return its process id (the running one''s if any); when the library is preloaded, ask the launcher to sweep this database now';

CREATE FUNCTION @extschema@.idem_sweeper_stop()
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_sweeper_stop'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION @extschema@.idem_sweeper_stop() IS
'Stop the sweeper that idem_sweeper_start() started for the current database and wait until it is gone; false when none ran';

CREATE FUNCTION @extschema@.idem_sweeper_status(
    OUT datname            name,
    OUT pid                integer,
    OUT state              text,
    OUT last_pass_started  timestamptz,
    OUT last_pass_finished timestamptz,
    OUT removed_last_pass  bigint,
    OUT removed_total      bigint,
    OUT expired_waiting    bigint,
    OUT longest_batch      interval,
    OUT next_pass          timestamptz,
    OUT last_error         text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'idem_sweeper_status'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION @extschema@.idem_sweeper_status() IS
'One row per database with a sweeper, and one for the current database: state (sweeping, idle, failing, stopped, off), when the last pass ran, keys removed by it and since server start, expired keys waiting (current database only), longest batch, next pass, last error';

CREATE FUNCTION @extschema@.idem_sweeper_wake()
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_sweeper_wake'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION @extschema@.idem_sweeper_wake() IS
'Tell the launcher, once the transaction commits, that this database has a ledger to sweep (CREATE EXTENSION calls it); false when the library is not preloaded';

REVOKE ALL ON FUNCTION
    @extschema@.idem_sweeper_start(),
    @extschema@.idem_sweeper_stop(),
    @extschema@.idem_sweeper_status(),
    @extschema@.idem_sweeper_wake()
FROM PUBLIC;

-- A new ledger gets its sweeper at once rather than at the launcher's next look
SELECT @extschema@.idem_sweeper_wake();
