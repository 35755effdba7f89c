--
-- idem_finish: completes the caller's attempt and stores status and response
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
-- intervals between ledger timestamps must not depend on daylight saving time
SET timezone = 'UTC';

-- returns the stored result; later begins replay it
SELECT * FROM idem_begin('pay-1', '{"amount": 10}');
SELECT * FROM idem_finish('pay-1', '{"charge": "ch_1"}');
SELECT * FROM idem_begin('pay-1', '{"amount": 10}');
SELECT state, status, response, attempt, lease_until IS NULL AS lease_cleared
  FROM idem_ledger WHERE key = 'pay-1';

-- any status is stored and replayed: a permanent failure too
SELECT * FROM idem_begin('pay-2', '{"amount": -5}');
SELECT * FROM idem_finish('pay-2', '{"error": "amount must be positive"}', 422);
SELECT * FROM idem_begin('pay-2', '{"amount": -5}');

-- a NULL response is allowed and replayed as NULL
SELECT * FROM idem_begin('pay-3');
SELECT * FROM idem_finish('pay-3', NULL, 204);
SELECT * FROM idem_begin('pay-3');

-- status must not be NULL; the attempt stays in progress
SELECT * FROM idem_begin('pay-4');
SELECT * FROM idem_finish('pay-4', '{}', NULL);
\echo :SQLSTATE
SELECT state, status, attempt FROM idem_ledger WHERE key = 'pay-4';

-- finish without begin
SELECT * FROM idem_finish('never-begun', '{}');
\echo :SQLSTATE
-- finish in a scope where the key was not begun
SELECT * FROM idem_finish('pay-4', '{}', scope => 'other');
\echo :SQLSTATE

-- finish twice: the second finish finds nothing in progress, and the
-- stored response is not overwritten
SELECT * FROM idem_finish('pay-1', '{"charge": "ch_2"}');
\echo :SQLSTATE
SELECT response FROM idem_ledger WHERE key = 'pay-1';

-- finish after idem_fail
SELECT * FROM idem_begin('pay-5');
SELECT idem_fail('pay-5');
SELECT * FROM idem_finish('pay-5', '{}');
\echo :SQLSTATE

-- begin, finish and a duplicate in one transaction
BEGIN;
SELECT * FROM idem_begin('pay-tx', '{"amount": 1}');
SELECT * FROM idem_finish('pay-tx', '{"tx": true}', 201);
SELECT * FROM idem_begin('pay-tx', '{"amount": 1}');
COMMIT;
SELECT * FROM idem_begin('pay-tx', '{"amount": 1}');

-- finish with the attempt begin returned
SELECT * FROM idem_begin('pay-6', '{"amount": 6}');
SELECT * FROM idem_finish('pay-6', '{"ok": true}', attempt => 1);
-- a rolled-back finish stores nothing
SELECT * FROM idem_begin('pay-7');
BEGIN;
SELECT * FROM idem_finish('pay-7', '{"ok": true}');
ROLLBACK;
SELECT state, status, response, attempt FROM idem_ledger WHERE key = 'pay-7';

-- an old attempt after a takeover: IK003, and nothing is stored
SELECT * FROM idem_begin('pay-8', '{"amount": 8}', lease => '1 minute');
SET idempotency.clock_offset = '2 minutes';
SELECT * FROM idem_begin('pay-8', '{"amount": 8}');
CREATE TEMP TABLE before_late_finish AS SELECT * FROM idem_ledger WHERE key = 'pay-8';
SELECT * FROM idem_finish('pay-8', '{"late": true}', attempt => 1);
\echo :SQLSTATE
SELECT count(*) AS changed_rows
  FROM ((SELECT * FROM idem_ledger WHERE key = 'pay-8') EXCEPT (SELECT * FROM before_late_finish)) AS d;
SELECT state, status, response, attempt FROM idem_ledger WHERE key = 'pay-8';
-- the new owner finishes; the old one still meets IK003
SELECT * FROM idem_finish('pay-8', '{"winner": 2}', attempt => 2);
SELECT * FROM idem_finish('pay-8', '{"late": true}', attempt => 1);
\echo :SQLSTATE
SELECT * FROM idem_begin('pay-8', '{"amount": 8}');
-- an attempt number that never existed is not superseded: IK002
SELECT * FROM idem_begin('pay-9');
SELECT * FROM idem_finish('pay-9', attempt => 5);
\echo :SQLSTATE
-- nor is an attempt number below 1: begin never returns one
SELECT * FROM idem_finish('pay-9', attempt => 0);
\echo :SQLSTATE
SELECT * FROM idem_finish('pay-9', attempt => -1);
\echo :SQLSTATE
RESET idempotency.clock_offset;

-- an owner whose lease lapsed while nobody took over still finishes
SELECT * FROM idem_begin('pay-10', lease => '1 minute', ttl => '1 hour');
SET idempotency.clock_offset = '30 minutes';
SELECT * FROM idem_finish('pay-10', '{"slow": true}', attempt => 1);
SELECT * FROM idem_begin('pay-10');
RESET idempotency.clock_offset;

-- an in-progress row past its lease plus its ttl has expired: IK002
SELECT * FROM idem_begin('pay-11', lease => '1 minute', ttl => '1 hour');
SET idempotency.clock_offset = '1 hour 2 minutes';
SELECT * FROM idem_finish('pay-11', '{}');
\echo :SQLSTATE
SELECT * FROM idem_finish('pay-11', '{}', attempt => 1);
\echo :SQLSTATE
RESET idempotency.clock_offset;

-- after finish a key expires its ttl after the finish, not after the begin
SELECT * FROM idem_begin('pay-12', ttl => '2 hours', lease => '10 minutes');
SET idempotency.clock_offset = '7 minutes';
SELECT * FROM idem_finish('pay-12', '{}');
SELECT expires_at - created_at BETWEEN '2 hours 7 minutes' AND '2 hours 8 minutes' AS kept_from_finish
  FROM idem_ledger WHERE key = 'pay-12';
SET idempotency.clock_offset = '2 hours 6 minutes';
SELECT * FROM idem_begin('pay-12');
SET idempotency.clock_offset = '2 hours 8 minutes';
SELECT * FROM idem_begin('pay-12');
RESET idempotency.clock_offset;

-- a ttl of 24 hours keeps a key 24 hours, also over a change to daylight
-- saving time in the session's time zone (2030-03-10 in New York)
SET timezone = 'America/New_York';
SELECT set_config('idempotency.clock_offset',
                  ('2030-03-09 12:00:00 America/New_York'::timestamptz - clock_timestamp())::text,
                  false) IS NOT NULL AS clock_moved;
SELECT * FROM idem_begin('pay-dst', ttl => '24 hours');
SELECT * FROM idem_finish('pay-dst', '{}');
SELECT expires_at - created_at BETWEEN '24 hours' AND '24 hours 1 minute' AS kept_24_hours
  FROM idem_ledger WHERE key = 'pay-dst';
RESET idempotency.clock_offset;
RESET timezone;

DROP EXTENSION idempotency;
