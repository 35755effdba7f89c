--
-- idem_fail: releases the caller's attempt so that a retry starts afresh
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- a released attempt: the next begin starts with the next attempt number
SELECT * FROM idem_begin('job-1', '{"run": 1}');
SELECT idem_fail('job-1');
SELECT state, attempt, lease_until IS NULL AS released FROM idem_ledger WHERE key = 'job-1';
SELECT * FROM idem_begin('job-1', '{"run": 1}');
SELECT * FROM idem_begin('job-1', '{"run": 1}');
-- release with the attempt number begin returned
SELECT idem_fail('job-1', attempt => 2);
-- after a release a different request may use the key
SELECT * FROM idem_begin('job-1', '{"run": 2}');
SELECT * FROM idem_finish('job-1', '{"done": true}', attempt => 3);
SELECT * FROM idem_begin('job-1', '{"run": 2}');
SELECT * FROM idem_begin('job-1', '{"run": 1}');
\echo :SQLSTATE

-- fail twice
SELECT * FROM idem_begin('job-2');
SELECT idem_fail('job-2');
SELECT idem_fail('job-2');
\echo :SQLSTATE

-- fail without begin, and in another scope
SELECT idem_fail('never-begun');
\echo :SQLSTATE
SELECT * FROM idem_begin('job-3');
SELECT idem_fail('job-3', scope => 'other');
\echo :SQLSTATE
SELECT state, attempt, lease_until IS NULL AS released FROM idem_ledger WHERE key = 'job-3';

-- fail after finish: the completed key stays completed
SELECT * FROM idem_finish('job-3', '{"ok": 1}');
SELECT idem_fail('job-3');
\echo :SQLSTATE
SELECT * FROM idem_begin('job-3');

-- fail with an old attempt after a takeover: IK003, the new attempt keeps the key
SELECT * FROM idem_begin('job-4', '{"n": 4}', lease => '1 minute');
SET idempotency.clock_offset = '2 minutes';
SELECT * FROM idem_begin('job-4', '{"n": 4}');
SELECT idem_fail('job-4', attempt => 1);
\echo :SQLSTATE
SELECT state, attempt, lease_until IS NULL AS released FROM idem_ledger WHERE key = 'job-4';
SELECT * FROM idem_begin('job-4', '{"n": 4}');
-- an attempt number below 1 was never superseded, since begin never returns one: IK002
SELECT idem_fail('job-4', attempt => 0);
\echo :SQLSTATE
SELECT idem_fail('job-4', attempt => -1);
\echo :SQLSTATE
SELECT idem_fail('job-4', attempt => 2);
SELECT * FROM idem_begin('job-4', '{"n": 4}');
RESET idempotency.clock_offset;

-- fail of an in-progress row past its lease plus its ttl
SELECT * FROM idem_begin('job-5', lease => '1 minute', ttl => '1 hour');
SET idempotency.clock_offset = '1 hour 2 minutes';
SELECT idem_fail('job-5');
\echo :SQLSTATE
RESET idempotency.clock_offset;

-- a fail in a rolled-back transaction changes nothing: the attempt still holds
SELECT * FROM idem_begin('job-6', '{"n": 6}');
BEGIN;
SELECT idem_fail('job-6');
SELECT * FROM idem_begin('job-6', '{"n": 6}');
ROLLBACK;
SELECT state, attempt, lease_until IS NULL AS released FROM idem_ledger WHERE key = 'job-6';
SELECT * FROM idem_begin('job-6', '{"n": 6}');

-- a released key still belongs to nobody after its lease would have ended
SELECT * FROM idem_begin('job-7', lease => '1 minute');
SELECT idem_fail('job-7');
SET idempotency.clock_offset = '10 minutes';
SELECT * FROM idem_begin('job-7');
RESET idempotency.clock_offset;

DROP EXTENSION idempotency;
