--
-- ALTER EXTENSION ... UPDATE from 1.2 to 1.3: a UUIDv7 key's digest starts
-- with the key's first 32 bits.  The library writes and reads each ledger
-- with the digest of its version, before the update and after it, and the
-- update rewrites the digests of UUIDv7 keys alone, keeping every key's
-- behaviour
--
SET client_min_messages = warning;
CREATE EXTENSION amcheck;
RESET client_min_messages;
CREATE EXTENSION idempotency VERSION '1.2';
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- 1.2's digest, as SQL: the first 128 bits of the SHA-256 of the pair
CREATE FUNCTION sha256_digest(scope text, key text) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(substr(sha256(int4send(octet_length(convert_to(scope, 'UTF8'))) ||
                                convert_to(scope || key, 'UTF8')), 1, 16), 'hex')::uuid
$$;

-- a ledger of 1.2 filled by this library: a completed UUIDv7 key, one in
-- progress under a 10-minute lease, a consumer's, one written through SQL
-- (a CHECK constraint sends every call there), another key, and a UUIDv7
-- key in a table that inherits from the ledger (an archive)
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-000000000001', '{"amount": 10}');
SELECT outcome, status FROM idem_finish('01932c07-8a5b-7abc-9def-000000000001', '{"payment_id": 1}', 201);
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-000000000002', lease => '10 minutes');
SELECT idem_once('01932c08-0000-7000-8000-000000000003', scope => 'queue');
ALTER TABLE idem_ledger ADD CONSTRAINT sql_path CHECK (attempt > 0);
SELECT outcome FROM idem_begin('01932c09-0000-7000-a000-000000000004', '{"amount": 40}');
SELECT outcome FROM idem_finish('01932c09-0000-7000-a000-000000000004', '{"payment_id": 4}', 201);
ALTER TABLE idem_ledger DROP CONSTRAINT sql_path;
SELECT outcome FROM idem_begin('order-42', '{"amount": 5}');
SELECT outcome FROM idem_finish('order-42', '{"payment_id": 42}', 201);
SET client_min_messages = warning;
CREATE TABLE u3_history () INHERITS (idem_ledger);
RESET client_min_messages;
INSERT INTO u3_history (created_at, expires_at, scope, key, state, digest)
VALUES (now(), now() + interval '1 day', 'archive', '01932c00-0000-7000-8000-000000000005',
        'completed', idem_digest('archive', '01932c00-0000-7000-8000-000000000005'));

-- under 1.2, every row carries 1.2's digest, UUIDv7 keys too, and the
-- keys behave as written
SELECT count(*) AS rows, count(*) FILTER (WHERE digest = sha256_digest(scope, key)) AS sha256_digests
  FROM idem_ledger;
SELECT outcome, status, response FROM idem_begin('01932c07-8a5b-7abc-9def-000000000001', '{"amount": 10}');
SELECT idem_once('01932c08-0000-7000-8000-000000000003', scope => 'queue') AS first_again;
CREATE TEMP TABLE ledger_before AS SELECT * FROM ONLY idem_ledger;
CREATE TEMP TABLE xmin_before AS SELECT key, xmin::text AS x FROM idem_ledger;

ALTER EXTENSION idempotency UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'idempotency';

-- no row changed but for its digest; every digest is idem_digest of the
-- row's (scope, key), the archive's too: a UUIDv7 key's starts with the
-- key's first 32 bits, any other key's is 1.2's
SELECT count(*) AS rows_changed FROM (
    (SELECT created_at, expires_at, lease_until, status, attempt, scope, key,
            state, response, fingerprint, owner FROM ONLY idem_ledger
     EXCEPT ALL SELECT created_at, expires_at, lease_until, status, attempt, scope, key,
            state, response, fingerprint, owner FROM ledger_before)
    UNION ALL
    (SELECT created_at, expires_at, lease_until, status, attempt, scope, key,
            state, response, fingerprint, owner FROM ledger_before
     EXCEPT ALL SELECT created_at, expires_at, lease_until, status, attempt,
            scope, key, state, response, fingerprint, owner FROM ONLY idem_ledger)) AS d;
SELECT key, substr(digest::text, 1, 8) AS prefix,
       digest = idem_digest(scope, key) AS right,
       digest = sha256_digest(scope, key) AS as_in_1_2,
       l.xmin::text = b.x AS untouched
  FROM idem_ledger l JOIN xmin_before b USING (key) ORDER BY key;
SELECT pg_get_indexdef(indexrelid) FROM pg_index
 WHERE indrelid = 'idem_ledger'::regclass;
-- from now on a row must carry idem_digest's digest: a 1.2 row of a UUIDv7
-- key (as a dump of 1.2 restored here would bring) is refused, in the
-- ledger and in the archive
SELECT conrelid::regclass, conname, convalidated FROM pg_constraint
 WHERE contype = 'c' AND conname = 'idem_ledger_digest_check' ORDER BY 1;
\set VERBOSITY terse
INSERT INTO idem_ledger (created_at, expires_at, scope, key, state, digest)
VALUES (now(), now() + interval '1 day', 'restored', '01932c0a-0000-7000-8000-000000000007',
        'completed', sha256_digest('restored', '01932c0a-0000-7000-8000-000000000007'));
\echo :SQLSTATE
\set VERBOSITY default
\set VERBOSITY terse
INSERT INTO u3_history (created_at, expires_at, scope, key, state, digest)
VALUES (now(), now() + interval '1 day', 'restored', '01932c0a-0000-7000-8000-000000000007',
        'completed', sha256_digest('restored', '01932c0a-0000-7000-8000-000000000007'));
\echo :SQLSTATE
\set VERBOSITY default
SELECT bt_index_check('idem_ledger_pkey', true);
-- a key is read through the index by its digest
SET enable_seqscan = off;
SELECT key, state FROM idem_ledger
 WHERE digest = idem_digest('', '01932c07-8a5b-7abc-9def-000000000001');
RESET enable_seqscan;

-- completed keys replay what was stored, and a changed request is still
-- IK001; the attempt in progress still holds its key; the consumer's key
-- is still seen; the same through SQL
SELECT outcome, status, response FROM idem_begin('01932c07-8a5b-7abc-9def-000000000001', '{"amount": 10}');
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-000000000001', '{"amount": 11}');
\echo :SQLSTATE
SELECT outcome, attempt FROM idem_begin('01932c07-8a5b-7abc-9def-000000000002');
SELECT idem_once('01932c08-0000-7000-8000-000000000003', scope => 'queue') AS first_again;
SELECT outcome, status, response FROM idem_begin('order-42', '{"amount": 5}');
ALTER TABLE idem_ledger ADD CONSTRAINT sql_path CHECK (attempt > 0);
SELECT outcome, status, response FROM idem_begin('01932c09-0000-7000-a000-000000000004', '{"amount": 40}');
SELECT outcome, attempt FROM idem_begin('01932c07-8a5b-7abc-9def-000000000002');
ALTER TABLE idem_ledger DROP CONSTRAINT sql_path;
-- past its lease the attempt in progress is taken over, attempt 2
SET idempotency.clock_offset = '11 minutes';
SELECT outcome, attempt FROM idem_begin('01932c07-8a5b-7abc-9def-000000000002');
SELECT outcome FROM idem_finish('01932c07-8a5b-7abc-9def-000000000002', '{}', attempt => 2);
RESET idempotency.clock_offset;
-- new keys go in with 1.3's digest
SELECT outcome FROM idem_begin('01932c10-0000-7000-8000-000000000006');
SELECT outcome FROM idem_finish('01932c10-0000-7000-8000-000000000006', '{}');
SELECT count(*) AS rows, count(*) FILTER (WHERE digest <> idem_digest(scope, key)) AS wrong_digests
  FROM idem_ledger;
SELECT bt_index_check('idem_ledger_pkey', true);
-- every row, the ones the update rewrote too, meets the check
ALTER TABLE idem_ledger VALIDATE CONSTRAINT idem_ledger_digest_check;

-- the same session, the extension made anew at 1.2: the library forgets
-- the digest it looked up, and writes 1.2's again
DROP TABLE u3_history;
DROP EXTENSION idempotency;
CREATE EXTENSION idempotency VERSION '1.2';
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-000000000001');
SELECT outcome FROM idem_begin('plain-1');
SELECT key, digest = sha256_digest(scope, key) AS as_in_1_2 FROM idem_ledger ORDER BY key;
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-000000000001');

-- a ledger without UUIDv7 keys is left as it is
DELETE FROM idem_ledger WHERE key LIKE '01932c07%';
SELECT xmin::text AS xmin_before FROM idem_ledger \gset
ALTER EXTENSION idempotency UPDATE TO '1.3';
SELECT xmin::text = :'xmin_before' AS untouched FROM idem_ledger;
SELECT outcome FROM idem_begin('plain-1');
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-000000000001');
SELECT key, substr(digest::text, 1, 8) AS prefix, digest = idem_digest(scope, key) AS right
  FROM idem_ledger ORDER BY key;

DROP EXTENSION idempotency;
DROP FUNCTION sha256_digest(text, text);
DROP EXTENSION amcheck;
