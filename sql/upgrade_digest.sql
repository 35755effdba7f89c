--
-- ALTER EXTENSION ... UPDATE from 1.1 to 1.2 gives every row its digest,
-- makes digest the primary key, and keeps every key's behaviour
--
SET client_min_messages = warning;
CREATE EXTENSION dblink;
RESET client_min_messages;
CREATE EXTENSION idempotency VERSION '1.1';
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- a ledger filled by 1.1: completed keys, an attempt in progress under a
-- 10-minute lease, a released attempt, consumer keys, an attempt whose
-- session has ended, an expired key, and a row in a table that inherits
-- from the ledger (an archive)
SELECT outcome, attempt FROM idem_begin('u2-done', '{"amount": 10}');
SELECT outcome, status FROM idem_finish('u2-done', '{"payment_id": 1}', 201);
SELECT outcome, attempt FROM idem_begin('u2-done', scope => 'payments');
SELECT outcome, status FROM idem_finish('u2-done', '{"error": "declined"}', 422, scope => 'payments');
SELECT outcome, attempt FROM idem_begin('u2-held', '{"amount": 30}', lease => '10 minutes');
SELECT outcome, attempt FROM idem_begin('u2-released', '{"amount": 40}');
SELECT idem_fail('u2-released');
SELECT idem_once('u2-msg', scope => 'queue');
SELECT idem_once('u2-old', ttl => '1 minute');
SELECT dblink_connect('u2_worker', 'dbname=' || current_database());
SELECT * FROM dblink('u2_worker', $$
    SELECT outcome, attempt FROM idem_begin('u2-orphan', lease => '10 minutes')
$$) AS t(outcome text, attempt int);
SELECT dblink_disconnect('u2_worker');
SET client_min_messages = warning;
CREATE TABLE u2_history () INHERITS (idem_ledger);
RESET client_min_messages;
INSERT INTO u2_history (created_at, expires_at, scope, key, state)
VALUES (now(), now() + interval '1 day', 'archive', 'u2-archived', 'completed');
CREATE TEMP TABLE ledger_before AS SELECT * FROM ONLY idem_ledger;

ALTER EXTENSION idempotency UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'idempotency';

-- no row changed but for its new digest, the last column; every digest is
-- idem_digest of the row's (scope, key), the archive's too; the primary key
-- is digest alone
SELECT count(*) AS rows_changed FROM (
    (SELECT created_at, expires_at, lease_until, status, attempt, scope, key,
            state, response, fingerprint, owner FROM ONLY idem_ledger
     EXCEPT ALL SELECT * FROM ledger_before)
    UNION ALL
    (SELECT * FROM ledger_before
     EXCEPT ALL SELECT created_at, expires_at, lease_until, status, attempt,
            scope, key, state, response, fingerprint, owner FROM ONLY idem_ledger)) AS d;
SELECT count(*) AS rows, count(*) FILTER (WHERE digest = idem_digest(scope, key)) AS digests_right
  FROM idem_ledger;
SELECT attnum, attname, atttypid::regtype, attnotnull
  FROM pg_attribute
 WHERE attrelid = 'idem_ledger'::regclass AND attnum > 9 AND NOT attisdropped
 ORDER BY attnum;
SELECT pg_get_indexdef(indexrelid) FROM pg_index
 WHERE indrelid = 'idem_ledger'::regclass;
-- a key is read through the index by its digest
SET enable_seqscan = off;
SELECT key, state FROM idem_ledger WHERE digest = idem_digest('payments', 'u2-done');
RESET enable_seqscan;

-- completed keys replay what was stored; a changed request is still IK001
SELECT * FROM idem_begin('u2-done', '{"amount": 10}');
SELECT * FROM idem_begin('u2-done', '{"amount": 11}');
\echo :SQLSTATE
SELECT * FROM idem_begin('u2-done', scope => 'payments');
-- the attempt in progress still holds its key
SELECT * FROM idem_begin('u2-held', '{"amount": 30}');
-- the released key starts afresh, attempt one higher
SELECT * FROM idem_begin('u2-released', '{"amount": 40}');
SELECT * FROM idem_finish('u2-released', '{"payment_id": 4}', 201);
SELECT * FROM idem_begin('u2-released', '{"amount": 40}');
-- consumer keys are still seen
SELECT idem_once('u2-msg', scope => 'queue') AS first_again;
-- the orphan's session is gone: the next begin takes it over
SELECT outcome, attempt FROM idem_begin('u2-orphan');
-- past its lease the held attempt is taken over, attempt one higher, and
-- its old owner's late finish meets IK003
SET idempotency.clock_offset = '11 minutes';
SELECT * FROM idem_begin('u2-held', '{"amount": 30}');
SELECT * FROM idem_finish('u2-held', '{"payment_id": 3}', 201, attempt => 1);
\echo :SQLSTATE
SELECT * FROM idem_finish('u2-held', '{"payment_id": 3}', 201, attempt => 2);
-- the expired consumer key is seen afresh
SELECT idem_once('u2-old') AS first_again;
RESET idempotency.clock_offset;
-- new keys go in with their digest
SELECT outcome FROM idem_begin('u2-new');
SELECT outcome FROM idem_finish('u2-new', '{}');
SELECT idem_once('u2-new-msg');
SELECT count(*) FILTER (WHERE digest <> idem_digest(scope, key)) AS wrong_digests
  FROM idem_ledger;
-- the sweeper's statement still runs
SET idempotency.clock_offset = '100 days';
SELECT idem_sweep() > 0 AS swept;
RESET idempotency.clock_offset;
SELECT count(*) AS left_in_archive FROM u2_history;

DROP TABLE u2_history;
DROP EXTENSION idempotency;
DROP EXTENSION dblink;
