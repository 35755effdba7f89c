-- test/upgrade/check.sql: the keys that fill.sql made behave as they did, in a
-- transaction that rolls back.  Variables: persistence (p or u, the ledger's
-- relpersistence), digest (ledger_digest() on the source).
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(21);

SELECT is(relpersistence::text, :'persistence', 'the ledger is ' ||
          CASE :'persistence' WHEN 'u' THEN 'UNLOGGED' ELSE 'logged' END)
  FROM pg_class WHERE oid = 'idem_ledger'::regclass;
SELECT is(ledger_digest(), :'digest', 'every row is the source''s, column for column');
SELECT is(count(*), 10::bigint, 'ten keys') FROM idem_ledger;
SELECT is(count(*) FILTER (WHERE digest IS DISTINCT FROM idem_digest(scope, key)), 0::bigint,
          'every row is found under its digest, the multibyte key''s too')
  FROM idem_ledger;

SELECT results_eq($$SELECT outcome, status, response FROM idem_begin('pay-1', '{"amount": 100}')$$,
                  $$VALUES ('replayed', 201, '{"id": 1, "items": [1, 2.50, null]}'::jsonb)$$,
                  'a completed key replays its status and response');
SELECT results_eq($$SELECT outcome, status, response FROM idem_begin('pay-2', '{"amount": 5}', scope => 'tenant-b')$$,
                  $$VALUES ('replayed', 422, '{"error": "card declined"}'::jsonb)$$,
                  'a completed key in another scope replays its failure');
SELECT results_eq($$SELECT outcome, status, response FROM idem_begin('pay-nobody')$$,
                  $$VALUES ('replayed', 204, NULL::jsonb)$$,
                  'a completed key without a request or response replays');
SELECT results_eq($$SELECT outcome, response FROM idem_begin('日本語のキー', '{"ü": "ß"}')$$,
                  $$VALUES ('replayed', '{"ok": "✓"}'::jsonb)$$,
                  'a multibyte key replays');
SELECT throws_ok($$SELECT idem_begin('pay-1', '{"amount": 999}')$$, 'IK001', NULL,
                 'a different request on a completed key is IK001');
SELECT is(outcome, 'in_progress', 'the attempt in progress holds its key under its lease')
  FROM idem_begin('job-1', '{"job": 1}');
SELECT results_eq($$SELECT outcome, attempt FROM idem_begin('pay-3', '{"amount": 3}')$$,
                  $$VALUES ('started', 2)$$, 'a released key starts afresh');
SELECT is(idem_once('msg-1'), false, 'idem_once remembers its key');
SELECT is(idem_once('msg-2', scope => 'queue-a'), false, 'idem_once remembers its key in a scope');
SELECT results_eq($$SELECT b.outcome, b.status, b.response, substr(l.digest::text, 1, 8)
                      FROM idem_begin('01932c07-8a5b-7abc-9def-000000000001', '{"amount": 7}') b,
                           idem_ledger l WHERE l.key = '01932c07-8a5b-7abc-9def-000000000001'$$,
                  $$VALUES ('replayed', 201, '{"id": 7}'::jsonb, '01932c07')$$,
                  'a UUIDv7 key replays, found under its digest, which starts with the key');
SELECT is(idem_once('msg-3'), true, 'idem_once records a new key');
SELECT throws_ok($$SELECT idem_finish('taken', attempt => 1)$$, 'IK003', NULL,
                 'the superseded attempt meets IK003');

SET LOCAL idempotency.clock_offset = '2 hours';
SELECT results_eq($$SELECT outcome, attempt FROM idem_begin('job-1', '{"job": 1}')$$,
                  $$VALUES ('started', 2)$$, 'after its lease, the attempt in progress is taken over');
SELECT results_eq($$SELECT outcome, status FROM idem_finish('job-1', '{"done": true}', attempt => 2)$$,
                  $$VALUES ('completed', 200)$$, 'and the new owner finishes it');
SELECT is(outcome, 'replayed', 'a completed key still replays within its ttl')
  FROM idem_begin('pay-1', '{"amount": 100}');

SET LOCAL idempotency.clock_offset = '8 days';
SELECT is(outcome, 'started', 'past its ttl a completed key counts as absent')
  FROM idem_begin('pay-1', '{"amount": 100}');
SELECT cmp_ok(idem_sweep(), '>', 0::bigint, 'the sweep removes expired keys');

SELECT * FROM finish();
ROLLBACK;
