--
-- ALTER EXTENSION ... UPDATE from 1.0 to 1.1 keeps every key's behaviour,
-- and what 1.1 adds works afterwards; the same for idempotency_tap.  1.1
-- to 1.2: upgrade_digest and upgrade_1_2 (a ledger of 1.1 is served
-- through SQL until updated).
--
SET client_min_messages = warning;
CREATE EXTENSION dblink;
RESET client_min_messages;
CREATE EXTENSION idempotency VERSION '1.0';
\set SHOW_CONTEXT never
SET timezone = 'UTC';
SELECT extversion FROM pg_extension WHERE extname = 'idempotency';
SELECT to_regclass('idem_scope_grants') AS grants_before_update;

-- a ledger filled by 1.0: completed keys (a success and a permanent
-- failure), an attempt in progress under a 10-minute lease, a released
-- attempt, consumer keys with the default and a longer ttl
SELECT outcome, attempt FROM idem_begin('up-done-1', '{"amount": 10}');
SELECT outcome, status FROM idem_finish('up-done-1', '{"payment_id": 1}', 201);
SELECT outcome, attempt FROM idem_begin('up-done-2', scope => 'payments');
SELECT outcome, status FROM idem_finish('up-done-2', '{"error": "declined"}', 422, scope => 'payments');
SELECT outcome, attempt FROM idem_begin('up-held', '{"amount": 30}', lease => '10 minutes');
SELECT outcome, attempt FROM idem_begin('up-released', '{"amount": 40}');
SELECT idem_fail('up-released');
SELECT idem_once('up-msg-1', scope => 'queue');
SELECT idem_once('up-msg-2', scope => 'queue', ttl => '7 days');
-- an attempt begun by another session, which has ended since
SELECT dblink_connect('up_worker', 'dbname=' || current_database());
SELECT * FROM dblink('up_worker', $$
    SELECT outcome, attempt FROM idem_begin('up-orphan', lease => '10 minutes')
$$) AS t(outcome text, attempt int);
SELECT dblink_disconnect('up_worker');
CREATE TEMP TABLE ledger_before AS SELECT * FROM idem_ledger;

ALTER EXTENSION idempotency UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'idempotency';

-- the update changed no row, and added the owner column last, empty: no
-- attempt of 1.0 names its session
SELECT count(*) AS rows_before FROM ledger_before;
CREATE TEMP VIEW ledger_1_0 AS
SELECT created_at, expires_at, lease_until, status, attempt, scope, key,
       state, response, fingerprint
  FROM idem_ledger;
SELECT count(*) AS rows_changed FROM (
    (SELECT * FROM ledger_1_0 EXCEPT ALL SELECT * FROM ledger_before)
    UNION ALL
    (SELECT * FROM ledger_before EXCEPT ALL SELECT * FROM ledger_1_0)) AS d;
DROP VIEW ledger_1_0;
SELECT count(*) FILTER (WHERE owner IS NOT NULL) AS rows_with_owner
  FROM idem_ledger;
SELECT attnum, attname, atttypid::regtype, attnotnull
  FROM pg_attribute
 WHERE attrelid = 'idem_ledger'::regclass AND attnum > 0 AND NOT attisdropped
 ORDER BY attnum;

-- completed keys replay what was stored; a changed request is still IK001
SELECT * FROM idem_begin('up-done-1', '{"amount": 10}');
SELECT * FROM idem_begin('up-done-1', '{"amount": 11}');
\echo :SQLSTATE
SELECT * FROM idem_begin('up-done-2', scope => 'payments');
-- the attempt in progress still holds its key
SELECT * FROM idem_begin('up-held', '{"amount": 30}');
-- so does the one whose session has ended: with no owner recorded, its
-- lease binds it
SELECT * FROM idem_begin('up-orphan');
-- the released key starts afresh, attempt one higher
SELECT * FROM idem_begin('up-released', '{"amount": 40}');
SELECT * FROM idem_finish('up-released', '{"payment_id": 4}', 201);
-- consumer keys are still seen
SELECT idem_once('up-msg-1', scope => 'queue') AS first_again;
SELECT idem_once('up-msg-2', scope => 'queue') AS first_again;

-- past its lease the held attempt is taken over, attempt one higher, and
-- its old owner's late finish meets IK003
SET idempotency.clock_offset = '11 minutes';
SELECT * FROM idem_begin('up-held', '{"amount": 30}');
SELECT * FROM idem_finish('up-held', '{"payment_id": 3}', 201, attempt => 1);
\echo :SQLSTATE
SELECT * FROM idem_finish('up-held', '{"payment_id": 3}', 201, attempt => 2);
SELECT * FROM idem_begin('up-orphan');
-- a takeover (SQL) and a first attempt (the direct path) after the update
-- name their session as the owner, in this session too, which prepared its
-- statements before the update
SELECT owner IS NOT NULL AS has_owner FROM idem_ledger WHERE key = 'up-orphan';
SELECT outcome, attempt FROM idem_begin('up-owned', lease => '1 hour');
SELECT owner IS NOT NULL AS has_owner FROM idem_ledger WHERE key = 'up-owned';
-- past their ttl the keys of 1.0 expire as before
SET idempotency.clock_offset = '2 days';
SELECT * FROM idem_begin('up-done-2', scope => 'payments');
SELECT idem_once('up-msg-1', scope => 'queue') AS first_again;
SELECT idem_once('up-msg-2', scope => 'queue') AS first_again;
RESET idempotency.clock_offset;

-- what 1.1 adds: the grants table, dumped with the ledger and closed to
-- PUBLIC, its trigger, and the settings
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'idempotency';
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'idem_scope_grants'::regclass AND NOT tgisinternal;
SELECT relacl IS NOT NULL
       AND NOT EXISTS (SELECT FROM aclexplode(relacl) a WHERE a.grantee <> relowner) AS owner_only
  FROM pg_class WHERE oid = 'idem_scope_grants'::regclass;
CREATE ROLE regress_upgrade_app;
GRANT idempotency_user TO regress_upgrade_app;
INSERT INTO idem_scope_grants (scope_prefix, grantee) VALUES ('payments', 'regress_upgrade_app');
SET idempotency.enforce_scope_grants = on;
SET ROLE regress_upgrade_app;
SELECT * FROM idem_begin('up-done-1', '{"amount": 1}', scope => 'payments');
SELECT idem_once('up-msg-2', scope => 'queue');
\echo :SQLSTATE
RESET ROLE;
RESET idempotency.enforce_scope_grants;
SET idempotency.max_lease = '1 hour';
SELECT * FROM idem_begin('up-new', lease => '2 hours');
\echo :SQLSTATE
RESET idempotency.max_lease;

-- and the counters, one row, readable by pg_read_all_stats
SELECT count(*) AS stats_rows FROM idem_stats;
SELECT has_table_privilege('pg_read_all_stats', 'idem_stats', 'SELECT') AS monitor_reads,
       has_function_privilege('pg_read_all_stats', 'idem_stats_reset()', 'EXECUTE') AS monitor_resets;

-- idempotency_tap 1.0 to 1.1: the ledger snapshot of 1.0 mixed in the rows
-- of a table that inherits from the ledger; 1.1 reads the ledger's own
SET client_min_messages = warning;
CREATE EXTENSION pgtap;
CREATE EXTENSION idempotency_tap VERSION '1.0';
RESET client_min_messages;
CREATE TABLE up_history () INHERITS (idem_ledger);
INSERT INTO up_history (created_at, expires_at, scope, key, state)
VALUES (now(), now() + interval '1 day', 'archive', 'up-archived', 'completed');
SELECT _idem_tap_ledger() ? '["archive", "up-archived"]' AS archived_row_seen,
       _idem_tap_ledger() ? '["payments", "up-done-1"]' AS ledger_row_seen;
ALTER EXTENSION idempotency_tap UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'idempotency_tap';
SELECT _idem_tap_ledger() ? '["archive", "up-archived"]' AS archived_row_seen,
       _idem_tap_ledger() ? '["payments", "up-done-1"]' AS ledger_row_seen;
-- and its assertions work
CREATE FUNCTION up_pay(k text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r idem_result;
BEGIN
    r := idem_begin(k, scope => 'tap');
    IF r.outcome = 'replayed' THEN
        RETURN r.response;
    END IF;
    r := idem_finish(k, jsonb_build_object('paid', k), 201, scope => 'tap');
    RETURN r.response;
END
$$;
SELECT plan(1);
SELECT replays($$SELECT up_pay('up-tap-1')$$, 'a retried payment replays');
SELECT * FROM finish();

DROP FUNCTION up_pay(text);
DROP TABLE up_history;
DROP EXTENSION idempotency_tap;
DROP EXTENSION dblink;
DROP EXTENSION pgtap;
DROP ROLE regress_upgrade_app;
DROP EXTENSION idempotency;
