--
-- The ledger's primary key is idem_digest(scope, key); a row of another key
-- under a key's digest (a collision, made here by hand) raises an error on
-- every path and is never replayed, taken over, finished or released
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- the digest: the first 128 bits of sha256(length of scope, scope, key) in
-- UTF-8, pinned here so that no change of the encoding goes unnoticed
SELECT idem_digest('', 'k1') AS digest;
SELECT idem_digest('', 'k1') =
       encode(substr(sha256('\x00000000'::bytea || convert_to('k1', 'UTF8')), 1, 16), 'hex')::uuid
       AS as_documented;
SELECT idem_digest('payments', 'k1') =
       encode(substr(sha256('\x00000008'::bytea || convert_to('paymentsk1', 'UTF8')), 1, 16), 'hex')::uuid
       AS as_documented;
-- the scope's length keeps the pair unambiguous
SELECT idem_digest('a', 'bc') <> idem_digest('ab', 'c') AS distinct_pairs;
SELECT idem_digest(NULL, 'k') IS NULL AS strict;

-- from 1.3, a key that is a UUIDv7 in its text form: its first 32 bits (the
-- top of its millisecond timestamp), then the first 96 bits of the same
-- SHA-256; either case of hex digits
SELECT idem_digest('', '01932c07-8a5b-7abc-9def-0123456789ab') AS v7_digest;
SELECT idem_digest('', '01932c07-8a5b-7abc-9def-0123456789ab') =
       encode('\x01932c07'::bytea ||
              substr(sha256('\x00000000'::bytea ||
                            convert_to('01932c07-8a5b-7abc-9def-0123456789ab', 'UTF8')), 1, 12),
              'hex')::uuid AS as_documented;
SELECT idem_digest('t', '01932C07-8A5B-7ABC-BDEF-0123456789AB') =
       encode('\x01932c07'::bytea ||
              substr(sha256('\x00000001'::bytea ||
                            convert_to('t01932C07-8A5B-7ABC-BDEF-0123456789AB', 'UTF8')), 1, 12),
              'hex')::uuid AS upper_case;
-- keys made one after another sort as their digests do, whatever the rest
SELECT idem_digest('', '01932c07-8a5b-7abc-9def-0123456789ab') <
       idem_digest('', '01932c08-0000-7000-8000-000000000000') AS in_order;
-- anything else keeps the SHA-256's first 128 bits: another version or
-- variant, a missing or misplaced dash, a non-hex digit, braces, a length
-- off by one, spaces around
SELECT k AS not_v7,
       idem_digest('', k) =
       encode(substr(sha256('\x00000000'::bytea || convert_to(k, 'UTF8')), 1, 16), 'hex')::uuid
       AS sha256_only
  FROM (VALUES ('01932c07-8a5b-4abc-9def-0123456789ab'),
               ('01932c07-8a5b-7abc-cdef-0123456789ab'),
               ('01932c07-8a5b-7abc-7def-0123456789ab'),
               ('01932c078a5b7abc9def0123456789ab'),
               ('01932c07-8a5b7-abc-9def-0123456789ab'),
               ('01932c0g-8a5b-7abc-9def-0123456789ab'),
               ('{01932c07-8a5b-7abc-9def-0123456789ab}'),
               ('01932c07-8a5b-7abc-9def-0123456789abc'),
               ('01932c07-8a5b-7abc-9def-0123456789a'),
               (' 01932c07-8a5b-7abc-9def-0123456789ab')) AS t(k);
-- the ledger's rows carry it, through the direct path and through SQL
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-0123456789ab');
SELECT idem_once('01932c07-8a5b-7abc-9def-0123456789ac', scope => 'q');
ALTER TABLE idem_ledger ADD CONSTRAINT sql_path CHECK (attempt > 0);
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-0123456789ad');
SELECT outcome FROM idem_finish('01932c07-8a5b-7abc-9def-0123456789ad', '{}');
ALTER TABLE idem_ledger DROP CONSTRAINT sql_path;
SELECT outcome FROM idem_finish('01932c07-8a5b-7abc-9def-0123456789ab', '{}');
SELECT key, substr(digest::text, 1, 8) AS prefix, digest = idem_digest(scope, key) AS right
  FROM idem_ledger ORDER BY key;
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-0123456789ab');
SELECT outcome FROM idem_begin('01932c07-8a5b-7abc-9def-0123456789ad');
SELECT idem_once('01932c07-8a5b-7abc-9def-0123456789ac', scope => 'q') AS first_again;
DELETE FROM idem_ledger;

-- the ledger's CHECK constraint writes the digest out in SQL: every row the
-- library wrote meets it, whatever the key (UUIDv7 in either case, other
-- UUIDs, backslashes, quotes, multibyte text, the longest key) or scope
SELECT count(*) AS keys FROM (
    SELECT idem_once(k, scope => s)
      FROM (VALUES (''), ('payments'), ('日本'), ('a\b')) AS sc(s),
           LATERAL (SELECT gen_random_uuid()::text FROM generate_series(1, 50)
                    UNION ALL
                    SELECT overlay(overlay(gen_random_uuid()::text PLACING '7' FROM 15)
                                   PLACING substr('89abAB', 1 + (i % 6), 1) FROM 20)
                      FROM generate_series(1, 50) i
                    UNION ALL
                    SELECT upper(overlay(gen_random_uuid()::text PLACING '7' FROM 15))
                      FROM generate_series(1, 20)
                    UNION ALL
                    VALUES ('01932c07-8a5b-7abc-9def-0123456789ab'), ('k\1'), ('it''s'),
                           ('ключ-7'), (repeat('x', 255)), ('{01932c07-8a5b-7abc-9def-0123456789ab}')
                   ) AS ks(k)) AS t;
ALTER TABLE idem_ledger VALIDATE CONSTRAINT idem_ledger_digest_check;
SELECT count(*) FILTER (WHERE digest <> idem_digest(scope, key)) AS wrong,
       count(*) FILTER (WHERE substr(digest::text, 1, 8) = lower(substr(key, 1, 8))) AS ordered
  FROM idem_ledger;
DELETE FROM idem_ledger;

-- a row whose digest is not idem_digest's cannot be written by hand (the
-- library's own writes go around the check, right by construction)
\set VERBOSITY terse
INSERT INTO idem_ledger (created_at, expires_at, scope, key, state, digest)
VALUES (now(), now() + interval '1 day', '', 'k-wrong', 'completed', idem_digest('', 'k-other'));
\echo :SQLSTATE
\set VERBOSITY default

-- a collision: the row of 'c-victim' is put under the digest of 'c-other',
-- which takes dropping that check first
ALTER TABLE idem_ledger DROP CONSTRAINT idem_ledger_digest_check;
SELECT outcome FROM idem_begin('c-victim', '{"a": 1}');
SELECT outcome FROM idem_finish('c-victim', '{"secret": "victim"}', 201);
UPDATE idem_ledger SET digest = idem_digest('', 'c-other') WHERE key = 'c-victim';
CREATE TEMP TABLE victim_before AS SELECT * FROM idem_ledger WHERE key = 'c-victim';

-- every entry point of 'c-other' raises 23505, through the direct path ...
SELECT * FROM idem_begin('c-other', '{"a": 1}');
\echo :SQLSTATE
SELECT * FROM idem_begin('c-other', '{"a": 1}', wait => false);
\echo :SQLSTATE
SELECT idem_once('c-other');
\echo :SQLSTATE
SELECT * FROM idem_finish('c-other', '{}');
\echo :SQLSTATE
SELECT idem_fail('c-other');
\echo :SQLSTATE
-- ... and through SQL (a CHECK constraint sends every call there)
ALTER TABLE idem_ledger ADD CONSTRAINT sql_path CHECK (attempt > 0);
SELECT * FROM idem_begin('c-other', '{"a": 1}');
\echo :SQLSTATE
SELECT * FROM idem_begin('c-other', '{"a": 1}', wait => false);
\echo :SQLSTATE
SELECT idem_once('c-other');
\echo :SQLSTATE
SELECT * FROM idem_finish('c-other', '{}');
\echo :SQLSTATE
SELECT idem_fail('c-other');
\echo :SQLSTATE
-- even once the victim's row has expired, nobody takes it over
SET idempotency.clock_offset = '2 days';
SELECT * FROM idem_begin('c-other', '{"a": 1}');
\echo :SQLSTATE
ALTER TABLE idem_ledger DROP CONSTRAINT sql_path;
SELECT * FROM idem_begin('c-other', '{"a": 1}');
\echo :SQLSTATE
RESET idempotency.clock_offset;

-- the victim's row is as it was
SELECT count(*) AS victim_changed FROM (
    (SELECT * FROM idem_ledger WHERE key = 'c-victim' EXCEPT ALL SELECT * FROM victim_before)
    UNION ALL
    (SELECT * FROM victim_before EXCEPT ALL SELECT * FROM idem_ledger WHERE key = 'c-victim')) AS d;
SELECT count(*) AS other_rows FROM idem_ledger WHERE key = 'c-other';

-- an attempt in progress of another key under the digest, written by the
-- caller's own transaction, is a collision too for a caller that will not
-- wait (the probe reports it before it looks at who writes the row)
BEGIN;
SELECT outcome FROM idem_begin('c-pending');
UPDATE idem_ledger SET digest = idem_digest('', 'c-pending-other') WHERE key = 'c-pending';
SAVEPOINT s;
SELECT * FROM idem_begin('c-pending-other', wait => false);
\echo :SQLSTATE
ROLLBACK TO s;
ROLLBACK;

DROP EXTENSION idempotency;
