-- test/upgrade/fill.sql: a ledger with keys in every state, for test/upgrade/run.sh
-- to move to a newer major.  With -v unlogged=on the ledger is UNLOGGED.
\set ON_ERROR_STOP 1
\set QUIET 1
CREATE EXTENSION idempotency;
\if :unlogged
SELECT idem_set_logged(false);
\endif

-- completed: replayed with their status and response
SELECT idem_begin('pay-1', '{"amount": 100}', ttl => '7 days');
SELECT idem_finish('pay-1', '{"id": 1, "items": [1, 2.50, null]}', 201);
SELECT idem_begin('pay-2', '{"amount": 5}', scope => 'tenant-b', ttl => '7 days');
SELECT idem_finish('pay-2', '{"error": "card declined"}', 422, scope => 'tenant-b');
SELECT idem_begin('pay-nobody', NULL, ttl => '7 days');
SELECT idem_finish('pay-nobody', NULL, 204);
SELECT idem_begin('日本語のキー', '{"ü": "ß"}', ttl => '7 days');
SELECT idem_finish('日本語のキー', '{"ok": "✓"}');

-- in progress under a lease of one hour.  Begun with no owner recorded, so
-- that the lease alone holds it: this session ends right after the fill, and
-- a restore runs on another server, either of which would count as its
-- owner gone (see README, "When the owner's session is gone").
SET idempotency.owner_liveness = off;
SELECT idem_begin('job-1', '{"job": 1}', lease => '1 hour', ttl => '7 days');
RESET idempotency.owner_liveness;

-- released: the next begin starts afresh
SELECT idem_begin('pay-3', '{"amount": 3}');
SELECT idem_fail('pay-3');

-- taken over after its lease lapsed: attempt 2 in progress, attempt 1 superseded
SET idempotency.owner_liveness = off;
SELECT idem_begin('taken', '{"t": 1}', lease => '1 minute');
SET idempotency.clock_offset = '2 minutes';
SELECT idem_begin('taken', '{"t": 1}', lease => '1 hour');
RESET idempotency.clock_offset;
RESET idempotency.owner_liveness;

-- consumer de-duplication
SELECT idem_once('msg-1', ttl => '7 days');
SELECT idem_once('msg-2', scope => 'queue-a', ttl => '7 days');
-- a UUIDv7 key, whose digest starts with the key's first 32 bits
SELECT idem_begin('01932c07-8a5b-7abc-9def-000000000001', '{"amount": 7}', ttl => '7 days');
SELECT idem_finish('01932c07-8a5b-7abc-9def-000000000001', '{"id": 7}', 201);

-- Every column of every row, as one digest; check.sql compares it with the
-- source's.  Times in UTC, whatever the server's TimeZone.
CREATE FUNCTION ledger_digest() RETURNS text LANGUAGE sql STABLE SET TimeZone = 'UTC'
AS $$
	SELECT md5(string_agg(concat_ws(' | ', scope, key, state, status, response, attempt,
	                                created_at, expires_at, lease_until, fingerprint, digest),
	                      E'\n' ORDER BY scope, key))
	  FROM idem_ledger
$$;
