--
-- ALTER SCHEMA ... RENAME of the extension's schema: a session that has used
-- the extension before goes on working under the new name
--
-- a fresh install in a schema of its own, whatever an earlier test left
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS idempotency;
RESET client_min_messages;
CREATE SCHEMA idem;
CREATE EXTENSION idempotency SCHEMA idem;
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- this session prepares its statements under the first name
SELECT idem.idem_fail('never-begun');
\echo :SQLSTATE
SELECT outcome FROM idem.idem_begin('held', lease => '1 minute');
SELECT outcome FROM idem.idem_begin('done', ttl => '1 hour');
SELECT outcome FROM idem.idem_finish('done', '{"ok": true}');
SELECT idem.idem_once('short', ttl => '1 minute');

ALTER SCHEMA idem RENAME TO idem_renamed;

-- no attempt in progress (IK002), not a missing relation
SELECT idem_renamed.idem_fail('never-begun');
\echo :SQLSTATE
-- a takeover of a lapsed lease
SET idempotency.clock_offset = '2 minutes';
SELECT * FROM idem_renamed.idem_begin('held');
-- in REPEATABLE READ, begin reads and inserts through SQL
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM idem_renamed.idem_begin('done');
SELECT * FROM idem_renamed.idem_begin('repeatable');
COMMIT;
-- the sweep removes the expired key
SELECT idem_renamed.idem_sweep();
RESET idempotency.clock_offset;
SELECT key, state, attempt FROM idem_renamed.idem_ledger ORDER BY key;

-- a rename rolled back: the name before it counts again
BEGIN;
ALTER SCHEMA idem_renamed RENAME TO idem_for_a_moment;
SELECT idem_for_a_moment.idem_fail('held', attempt => 1);
\echo :SQLSTATE
ROLLBACK;
SELECT idem_renamed.idem_fail('held', attempt => 2);

-- and back to the first name
ALTER SCHEMA idem_renamed RENAME TO idem;
SELECT * FROM idem.idem_begin('held');
SELECT * FROM idem.idem_finish('held', '{"ok": 2}');
SELECT idem.idem_sweep();

DROP EXTENSION idempotency;
DROP SCHEMA idem;
