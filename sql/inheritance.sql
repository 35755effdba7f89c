-- Only the ledger's own rows are ever read or changed: a table that
-- inherits from idem_ledger (an archive, say) is not part of the ledger.
CREATE EXTENSION idempotency;
SET client_min_messages = warning;
CREATE TABLE idem_history () INHERITS (idem_ledger);
RESET client_min_messages;

SELECT idem_once('live-' || g, ttl => '7 days') FROM generate_series(1, 3) AS g;
INSERT INTO idem_history (created_at, expires_at, attempt, scope, key, state, digest)
SELECT now() - interval '2 days', now() - interval '1 day', 1, '', 'old-' || g, 'completed',
       idem_digest('', 'old-' || g)
  FROM generate_series(1, 3) AS g;

-- the sweep removes nothing: the ledger's rows are live, the child's are not its own
SELECT idem_sweep();
SELECT count(*) AS history_rows FROM idem_history;
SELECT idem_once('live-1', ttl => '7 days') AS first_again;

-- a key whose row stands in the child only is absent from the ledger
INSERT INTO idem_history (created_at, expires_at, lease_until, attempt, scope, key, state, digest)
VALUES (now(), now() + interval '1 day', now() + interval '1 hour', 1, '', 'child-only', 'in_progress',
        idem_digest('', 'child-only'));
SELECT idem_finish('child-only', '{}');
\echo :SQLSTATE
SELECT idem_fail('child-only');
\echo :SQLSTATE
SELECT outcome, attempt FROM idem_begin('child-only');
SELECT idem_finish('child-only', '{"ok": true}') IS NOT NULL AS finished;
SELECT key, state, attempt FROM ONLY idem_ledger WHERE key = 'child-only';
SELECT key, state, attempt FROM idem_history WHERE key = 'child-only';

-- takeover on the SQL path (a lapsed lease) touches the ledger's row alone
SELECT outcome FROM idem_begin('lapse', lease => '1 minute');
INSERT INTO idem_history (created_at, expires_at, lease_until, attempt, scope, key, state, digest)
VALUES (now(), now() + interval '1 day', now() - interval '1 hour', 7, '', 'lapse', 'in_progress',
        idem_digest('', 'lapse'));
SET idempotency.clock_offset = '2 minutes';
SELECT outcome, attempt FROM idem_begin('lapse');
RESET idempotency.clock_offset;
SELECT attempt FROM idem_history WHERE key = 'lapse';

DROP TABLE idem_history;
DROP EXTENSION idempotency;
