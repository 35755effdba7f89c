-- The fast path enforces what the executor would: a CHECK constraint or a
-- NOT NULL added to the ledger sends calls through the SQL path, which
-- raises the constraint's error; a publication that replicates updates
-- needs a replica identity.
CREATE EXTENSION idempotency;
\set VERBOSITY terse

ALTER TABLE idem_ledger ADD CONSTRAINT key_short CHECK (length(key) <= 8);
SELECT outcome FROM idem_begin('this-key-is-too-long');
\echo :SQLSTATE
SELECT idem_once('this-key-is-too-long');
\echo :SQLSTATE
SELECT outcome FROM idem_begin('short');
SELECT count(*) AS rows FROM idem_ledger;
ALTER TABLE idem_ledger DROP CONSTRAINT key_short;
TRUNCATE idem_ledger;

-- NOT NULL on a column the extension leaves NULL for an attempt in progress
ALTER TABLE idem_ledger ALTER COLUMN status SET NOT NULL;
SELECT outcome FROM idem_begin('no-status');
\echo :SQLSTATE
SELECT idem_once('no-status-once') AS first;
\echo :SQLSTATE
ALTER TABLE idem_ledger ALTER COLUMN status DROP NOT NULL;
SELECT key FROM idem_ledger WHERE key LIKE 'no-status%' ORDER BY key;

-- A NULL where the extension never writes one: a clear error, no crash
ALTER TABLE idem_ledger ALTER COLUMN state DROP NOT NULL;
SELECT outcome FROM idem_begin('null-state');
UPDATE idem_ledger SET state = NULL WHERE key = 'null-state';
SELECT outcome FROM idem_begin('null-state');
\echo :SQLSTATE
SELECT idem_once('null-state');
\echo :SQLSTATE
SELECT idem_finish('null-state', '{}');
\echo :SQLSTATE
DELETE FROM idem_ledger WHERE key = 'null-state';
ALTER TABLE idem_ledger ALTER COLUMN state SET NOT NULL;

-- A publication of updates with no replica identity: finishing is refused
-- on either path, as an UPDATE would be
SET client_min_messages = error;
CREATE PUBLICATION idem_pub FOR TABLE idem_ledger;
RESET client_min_messages;
ALTER TABLE idem_ledger REPLICA IDENTITY NOTHING;
BEGIN;
SELECT outcome FROM idem_begin('published');
SELECT idem_finish('published', '{}');
\echo :SQLSTATE
ROLLBACK;
ALTER TABLE idem_ledger REPLICA IDENTITY DEFAULT;
BEGIN;
SELECT outcome FROM idem_begin('published');
SELECT (idem_finish('published', '{}')).outcome;
COMMIT;
DROP PUBLICATION idem_pub;

DROP EXTENSION idempotency;
