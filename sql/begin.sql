--
-- idem_begin: started, replayed, in_progress; request matching; scopes;
-- leases and expiry; defaults; large documents
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
-- intervals between ledger timestamps must not depend on daylight saving time
SET timezone = 'UTC';

-- the first begin owns the key
SELECT * FROM idem_begin('order-1', '{"item": "book", "qty": 1}');
-- the row: in progress, fingerprint of the request, default lease and ttl
SELECT scope, key, state, status, response, attempt,
       lease_until - created_at AS lease,
       expires_at - lease_until AS ttl,
       encode(fingerprint, 'hex') = idem_fingerprint('{"item": "book", "qty": 1}') AS fingerprint_ok
  FROM idem_ledger;
-- the lease ends in the future
SELECT lease_until > now() AS lease_ahead FROM idem_ledger WHERE key = 'order-1';

-- a committed attempt holds the key: in_progress, with its attempt number
SELECT * FROM idem_begin('order-1', '{"item": "book", "qty": 1}');
-- the same request as jsonb: key order, white space and 1.0 versus 1 do not matter
SELECT * FROM idem_begin('order-1', '{ "qty" : 1.0 ,"item":"book"}');
-- a different request while in progress
SELECT * FROM idem_begin('order-1', '{"item": "book", "qty": 2}');
\echo :SQLSTATE

-- finish, then duplicates replay exactly what was stored
SELECT * FROM idem_finish('order-1', '{"id": 42, "total": 9.50, "tags": ["a", "b"], "note": "café ☕"}', 201);
SELECT * FROM idem_begin('order-1', '{"item": "book", "qty": 1}');
SELECT response = '{"id": 42, "total": 9.50, "tags": ["a", "b"], "note": "café ☕"}'::jsonb AS same_response,
       response->>'total' AS total_text
  FROM idem_begin('order-1', '{"qty": 1.00, "item": "book"}');
-- a different request on a completed key
SELECT * FROM idem_begin('order-1', '{"item": "pen", "qty": 1}');
\echo :SQLSTATE
-- replay changed nothing
SELECT state, status, attempt, response->'id' AS id FROM idem_ledger WHERE key = 'order-1';

-- a NULL request matches only a NULL request
SELECT * FROM idem_begin('nullreq');
SELECT * FROM idem_begin('nullreq', NULL);
SELECT * FROM idem_begin('nullreq', '{}');
\echo :SQLSTATE
-- JSON null is a request, not the absence of one
SELECT * FROM idem_begin('nullreq', 'null');
\echo :SQLSTATE
SELECT * FROM idem_finish('nullreq', '"done"');
SELECT * FROM idem_begin('nullreq');
SELECT * FROM idem_begin('nullreq', '{}');
\echo :SQLSTATE
SELECT * FROM idem_begin('somereq', '{}');
SELECT * FROM idem_begin('somereq');
\echo :SQLSTATE

-- scopes keep keys apart: '' is the default scope
SELECT * FROM idem_begin('shared', '{"a": 1}');
SELECT * FROM idem_begin('shared', '{"a": 2}', scope => 'other');
SELECT * FROM idem_finish('shared', '{"from": "default"}');
SELECT * FROM idem_begin('shared', '{"a": 1}', scope => '');
SELECT * FROM idem_begin('shared', '{"a": 2}', scope => 'other');
SELECT * FROM idem_begin('shared', '{"a": 1}', scope => 'other');
\echo :SQLSTATE
SELECT scope, key, state FROM idem_ledger WHERE key = 'shared' ORDER BY scope;

-- twice in one transaction: the second call sees the first attempt
BEGIN;
SELECT * FROM idem_begin('tx-twice', '[1, 2]');
SELECT * FROM idem_begin('tx-twice', '[1, 2]');
COMMIT;
SELECT * FROM idem_begin('tx-twice', '[1, 2]');

-- a rolled-back begin leaves nothing behind
BEGIN;
SELECT * FROM idem_begin('tx-abort', '{"x": 1}');
ROLLBACK;
SELECT count(*) FROM idem_ledger WHERE key = 'tx-abort';
SELECT * FROM idem_begin('tx-abort', '{"x": 2}');

-- wait => false behaves the same when nobody else holds the key
SELECT * FROM idem_begin('nowait', wait => false);
SELECT * FROM idem_begin('nowait', wait => false);

-- explicit ttl and lease are kept on the row
SELECT * FROM idem_begin('explicit', ttl => '2 hours', lease => '30 seconds');
SELECT lease_until - created_at AS lease, expires_at - lease_until AS ttl
  FROM idem_ledger WHERE key = 'explicit';

-- the defaults come from idempotency.default_ttl and idempotency.default_lease
SET idempotency.default_ttl = '3 hours';
SET idempotency.default_lease = '45 seconds';
SELECT * FROM idem_begin('from-guc');
SELECT lease_until - created_at AS lease, expires_at - lease_until AS ttl
  FROM idem_ledger WHERE key = 'from-guc';
RESET idempotency.default_ttl;
RESET idempotency.default_lease;

-- a lapsed lease: the same request takes over with the next attempt number,
-- a different request is still refused
SELECT * FROM idem_begin('lease-1', '{"n": 1}', lease => '1 minute');
SELECT * FROM idem_begin('lease-1', '{"n": 1}');
SET idempotency.clock_offset = '2 minutes';
SELECT * FROM idem_begin('lease-1', '{"n": 2}');
\echo :SQLSTATE
SELECT * FROM idem_begin('lease-1', '{"n": 1}');
SELECT * FROM idem_begin('lease-1', '{"n": 1}');
SELECT state, attempt, lease_until - created_at > '5 minutes' AS lease_renewed
  FROM idem_ledger WHERE key = 'lease-1';
RESET idempotency.clock_offset;

-- a completed key past its ttl counts as absent: attempt 1 again, and a
-- different request is allowed
SELECT * FROM idem_begin('ttl-1', '{"v": 1}', ttl => '1 hour');
SELECT * FROM idem_finish('ttl-1', '{"first": true}');
SELECT * FROM idem_begin('ttl-2', '{"v": 1}', ttl => '1 hour');
SELECT * FROM idem_finish('ttl-2', '{"first": true}');
SET idempotency.clock_offset = '59 minutes';
SELECT * FROM idem_begin('ttl-1', '{"v": 1}');
SET idempotency.clock_offset = '1 hour 1 minute';
SELECT * FROM idem_begin('ttl-1', '{"v": 1}');
SELECT * FROM idem_begin('ttl-2', '{"v": 2}');
SELECT key, state, status, response, attempt,
       encode(fingerprint, 'hex') = idem_fingerprint('{"v": 2}') AS fingerprint_v2
  FROM idem_ledger WHERE key LIKE 'ttl-%' ORDER BY key;
RESET idempotency.clock_offset;

-- a 20 MB response is stored and replayed intact
SELECT * FROM idem_begin('big-response', '{"report": "yearly"}');
SELECT outcome, status, attempt, md5(response::text) = md5(jsonb_build_object('blob', repeat('x', 20 * 1024 * 1024))::text) AS intact
  FROM idem_finish('big-response', jsonb_build_object('blob', repeat('x', 20 * 1024 * 1024)));
SELECT outcome, status, attempt, md5(response::text) = md5(jsonb_build_object('blob', repeat('x', 20 * 1024 * 1024))::text) AS intact,
       length(response->>'blob') AS blob_length
  FROM idem_begin('big-response', '{"report": "yearly"}');

-- a large request is fingerprinted: equal replays, one changed byte is refused
SELECT * FROM idem_begin('big-request', jsonb_build_object('payload', repeat('y', 5 * 1024 * 1024), 'n', 1));
SELECT * FROM idem_finish('big-request', '{"accepted": true}');
SELECT * FROM idem_begin('big-request', jsonb_build_object('n', 1.0, 'payload', repeat('y', 5 * 1024 * 1024)));
SELECT * FROM idem_begin('big-request', jsonb_build_object('payload', repeat('y', 5 * 1024 * 1024 - 1) || 'z', 'n', 1));
\echo :SQLSTATE

-- begin still finds the ledger after the extension was dropped and created
-- again in this session, in the same schema or in another one
DROP EXTENSION idempotency;
CREATE EXTENSION idempotency;
SELECT * FROM idem_begin('order-1', '{"item": "pen"}');
SELECT * FROM idem_begin('order-1', '{"item": "pen"}');
DROP EXTENSION idempotency;
CREATE SCHEMA idem_elsewhere;
CREATE EXTENSION idempotency SCHEMA idem_elsewhere;
SELECT * FROM idem_elsewhere.idem_begin('order-1', '{"item": "ink"}');
SELECT * FROM idem_elsewhere.idem_begin('order-1', '{"item": "ink"}');
SELECT key, state FROM idem_elsewhere.idem_ledger;
DROP EXTENSION idempotency;
DROP SCHEMA idem_elsewhere;
