-- A transaction's own attempt holds its key until the transaction ends:
-- its lease lapses only once it is committed.
CREATE EXTENSION idempotency;

BEGIN;
SELECT outcome, attempt FROM idem_begin('own', lease => '1 minute');
SET LOCAL idempotency.clock_offset = '5 minutes';
SELECT outcome, attempt FROM idem_begin('own');
SELECT (idem_finish('own', '{"done": true}', attempt => 1)).outcome;
COMMIT;
SELECT outcome, attempt, response FROM idem_begin('own');

-- committed, the same lapse is a takeover
SELECT outcome, attempt FROM idem_begin('theirs', lease => '1 minute');
SET idempotency.clock_offset = '5 minutes';
SELECT outcome, attempt FROM idem_begin('theirs');
RESET idempotency.clock_offset;
SELECT idem_finish('theirs', attempt => 1);
\echo :SQLSTATE

-- Calendar months and days: a ttl with parts of both signs is refused,
-- whatever month it is (70 days on puts the clock in February)
SET idempotency.clock_offset = '70 days';
SELECT idem_once('feb-1', ttl => '1 month -29 days');
\echo :SQLSTATE
SELECT idem_once('feb-1', ttl => '1 month');
SELECT idem_once('feb-1', ttl => '1 month');
RESET idempotency.clock_offset;
SELECT outcome FROM idem_begin('mixed', lease => '1 day -23 hours');
\echo :SQLSTATE

-- One limit for arguments and settings: 100 years of 360 days
SELECT idem_once('long', ttl => '36000 days');
SELECT idem_once('longer', ttl => '36001 days');
\echo :SQLSTATE
SET idempotency.default_ttl = '36000 days';
SET idempotency.default_ttl = '36001 days';
\echo :SQLSTATE
RESET idempotency.default_ttl;

DROP EXTENSION idempotency;
