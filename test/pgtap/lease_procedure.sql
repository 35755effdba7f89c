-- lease_procedure.sql: a procedure that calls out to another service between
-- idem_begin and idem_finish, committing the attempt first so that other
-- callers see it in progress while the call is out.
--
-- This file does NOT run in one transaction that rolls back, unlike the
-- other pgTAP files: a procedure that COMMITs cannot run inside an explicit
-- transaction block.  Every statement here commits on its own (autocommit).
-- All keys live in the scope 'pgtap-lease-procedure'; the file deletes those
-- ledger rows and drops its objects at the end, and clears leftovers of an
-- interrupted earlier run at the start.  The simulated crash is a real error
-- that reaches psql, so ON_ERROR_STOP is lifted around that one CALL and
-- psql prints the error on stderr; the file then checks that error through
-- :LAST_ERROR_SQLSTATE and :LAST_ERROR_MESSAGE.

SET client_min_messages = warning;

-- leftovers of an interrupted earlier run
DELETE FROM idem_ledger WHERE scope = 'pgtap-lease-procedure';
DROP PROCEDURE IF EXISTS pgtap_lease_charge(text, numeric);
DROP PROCEDURE IF EXISTS pgtap_lease_charge_crashing(text, numeric);
DROP TABLE IF EXISTS pgtap_lease_calls, pgtap_lease_log;

SELECT plan(24);

-- What the remote service received, one row per call out
CREATE TABLE pgtap_lease_calls (
    key     text NOT NULL,
    attempt int  NOT NULL,
    amount  numeric NOT NULL
);
-- What each run of the procedure saw at idem_begin
CREATE TABLE pgtap_lease_log (
    run      int GENERATED ALWAYS AS IDENTITY,
    key      text  NOT NULL,
    outcome  text  NOT NULL,
    attempt  int,
    response jsonb
);

-- The charge procedure: begin, COMMIT, call out, COMMIT, finish, COMMIT
CREATE PROCEDURE pgtap_lease_charge(key text, amount numeric)
LANGUAGE plpgsql AS $proc$
DECLARE
    r idem_result;
BEGIN
    r := idem_begin(key, jsonb_build_object('amount', amount),
                    scope => 'pgtap-lease-procedure', lease => '30 seconds');
    INSERT INTO pgtap_lease_log (key, outcome, attempt, response)
        VALUES (key, r.outcome, r.attempt, r.response);
    IF r.outcome <> 'started' THEN
        RETURN;                 -- replayed, or another attempt holds the key
    END IF;
    COMMIT;                     -- the attempt is durable: others see it in progress

    INSERT INTO pgtap_lease_calls VALUES (key, r.attempt, amount);   -- the call out
    COMMIT;

    PERFORM idem_finish(key, jsonb_build_object('charged', amount, 'attempt', r.attempt),
                        201, scope => 'pgtap-lease-procedure', attempt => r.attempt);
    COMMIT;
END
$proc$;

-- The same procedure, crashing after the call out and before the finish
CREATE PROCEDURE pgtap_lease_charge_crashing(key text, amount numeric)
LANGUAGE plpgsql AS $proc$
DECLARE
    r idem_result;
BEGIN
    r := idem_begin(key, jsonb_build_object('amount', amount),
                    scope => 'pgtap-lease-procedure', lease => '30 seconds');
    INSERT INTO pgtap_lease_log (key, outcome, attempt, response)
        VALUES (key, r.outcome, r.attempt, r.response);
    IF r.outcome <> 'started' THEN
        RETURN;
    END IF;
    COMMIT;

    INSERT INTO pgtap_lease_calls VALUES (key, r.attempt, amount);
    COMMIT;

    RAISE EXCEPTION 'worker died before finishing %', key;
END
$proc$;

-- A normal run
CALL pgtap_lease_charge('charge-1', 10);

SELECT results_eq(
    $$SELECT outcome, attempt FROM pgtap_lease_log WHERE key = 'charge-1' ORDER BY run$$,
    $$VALUES ('started'::text, 1)$$,
    'the first CALL starts attempt 1');
SELECT results_eq(
    $$SELECT state, status, attempt, response FROM idem_ledger
       WHERE scope = 'pgtap-lease-procedure' AND key = 'charge-1'$$,
    $$VALUES ('completed'::text, 201, 1, '{"charged": 10, "attempt": 1}'::jsonb)$$,
    'after the CALL the ledger holds the committed response');
SELECT results_eq(
    $$SELECT outcome, status, response
        FROM idem_begin('charge-1', '{"amount": 10}', scope => 'pgtap-lease-procedure')$$,
    $$VALUES ('replayed'::text, 201, '{"charged": 10, "attempt": 1}'::jsonb)$$,
    'after the CALL the key replays the stored response');

-- A second CALL with the same key
CALL pgtap_lease_charge('charge-1', 10);

SELECT results_eq(
    $$SELECT outcome FROM pgtap_lease_log WHERE key = 'charge-1' ORDER BY run$$,
    $$VALUES ('started'::text), ('replayed')$$,
    'the second CALL finds the key completed');
SELECT is((SELECT response FROM pgtap_lease_log WHERE key = 'charge-1' AND outcome = 'replayed'),
          '{"charged": 10, "attempt": 1}'::jsonb,
          'the second CALL gets the stored response');
SELECT is((SELECT count(*) FROM pgtap_lease_calls WHERE key = 'charge-1'), 1::bigint,
          'the second CALL does not call out again');

-- A worker dies between its call out and its finish
\set VERBOSITY terse
\set ON_ERROR_STOP 0
CALL pgtap_lease_charge_crashing('charge-2', 20);
\set ON_ERROR_STOP 1
\set VERBOSITY default

SELECT is(:'LAST_ERROR_SQLSTATE'::text, 'P0001', 'the crashing CALL raised an error');
SELECT is(:'LAST_ERROR_MESSAGE'::text, 'worker died before finishing charge-2',
          'the error is the simulated crash');
SELECT is((SELECT count(*) FROM pgtap_lease_calls WHERE key = 'charge-2'), 1::bigint,
          'the crashed worker did call out');
SELECT results_eq(
    $$SELECT state, attempt FROM idem_ledger
       WHERE scope = 'pgtap-lease-procedure' AND key = 'charge-2'$$,
    $$VALUES ('in_progress'::text, 1)$$,
    'the committed attempt 1 of the crashed worker stays in progress');
SELECT results_eq(
    $$SELECT outcome, attempt
        FROM idem_begin('charge-2', '{"amount": 20}', scope => 'pgtap-lease-procedure')$$,
    $$VALUES ('in_progress'::text, 1)$$,
    'within the lease another caller sees the key in progress');

CALL pgtap_lease_charge('charge-2', 20);

SELECT results_eq(
    $$SELECT outcome, attempt FROM pgtap_lease_log WHERE key = 'charge-2' ORDER BY run$$,
    $$VALUES ('started'::text, 1), ('in_progress', 1)$$,
    'a retry within the lease is told the key is in progress');
SELECT is((SELECT count(*) FROM pgtap_lease_calls WHERE key = 'charge-2'), 1::bigint,
          'a retry within the lease does not call out');
SELECT throws_ok(
    $$SELECT idem_begin('charge-2', '{"amount": 25}', scope => 'pgtap-lease-procedure')$$,
    'IK001', NULL,
    'a different request on the key in progress raises IK001');

-- The lease (30 seconds) lapses
SET idempotency.clock_offset = '1 minute';

CALL pgtap_lease_charge('charge-2', 20);

SELECT results_eq(
    $$SELECT outcome, attempt FROM pgtap_lease_log WHERE key = 'charge-2' ORDER BY run$$,
    $$VALUES ('started'::text, 1), ('in_progress', 1), ('started', 2)$$,
    'after the lease lapsed the retry takes over as attempt 2');
SELECT results_eq(
    $$SELECT attempt FROM pgtap_lease_calls WHERE key = 'charge-2' ORDER BY attempt$$,
    $$VALUES (1), (2)$$,
    'attempt 2 calls out again (the crashed call is not known to have happened)');
SELECT results_eq(
    $$SELECT state, status, attempt, response FROM idem_ledger
       WHERE scope = 'pgtap-lease-procedure' AND key = 'charge-2'$$,
    $$VALUES ('completed'::text, 201, 2, '{"charged": 20, "attempt": 2}'::jsonb)$$,
    'attempt 2 completes the key');

-- The crashed worker comes back late
SELECT throws_ok(
    $$SELECT idem_finish('charge-2', '{"charged": 20, "attempt": 1}', 201,
                         scope => 'pgtap-lease-procedure', attempt => 1)$$,
    'IK003', NULL,
    'the late finish of the superseded attempt 1 raises IK003');
SELECT throws_ok(
    $$SELECT idem_fail('charge-2', scope => 'pgtap-lease-procedure', attempt => 1)$$,
    'IK003', NULL,
    'a late release by the superseded attempt 1 raises IK003 too');
SELECT results_eq(
    $$SELECT outcome, status, response, attempt
        FROM idem_begin('charge-2', '{"amount": 20}', scope => 'pgtap-lease-procedure')$$,
    $$VALUES ('replayed'::text, 201, '{"charged": 20, "attempt": 2}'::jsonb, 2)$$,
    'the late finish stored nothing: the key replays attempt 2');

CALL pgtap_lease_charge('charge-2', 20);

SELECT results_eq(
    $$SELECT outcome, attempt FROM pgtap_lease_log WHERE key = 'charge-2' ORDER BY run DESC LIMIT 1$$,
    $$VALUES ('replayed'::text, 2)$$,
    'a further CALL replays the response of attempt 2');
SELECT is((SELECT count(*) FROM pgtap_lease_calls WHERE key = 'charge-2'), 2::bigint,
          'and does not call out');

-- An owner that finishes after its lease lapsed, with nobody taking over, still succeeds
RESET idempotency.clock_offset;
SELECT is((idem_begin('charge-3', '{"amount": 30}', scope => 'pgtap-lease-procedure',
                      lease => '30 seconds')).attempt,
          1, 'a third key starts attempt 1 with a 30 second lease');
SET idempotency.clock_offset = '1 minute';
SELECT is((idem_finish('charge-3', '{"charged": 30}', 201,
                       scope => 'pgtap-lease-procedure', attempt => 1)).outcome,
          'completed', 'its owner finishes after the lease lapsed while nobody took over');

SELECT * FROM finish();

-- Clean up: this file committed its work
RESET idempotency.clock_offset;
DELETE FROM idem_ledger WHERE scope = 'pgtap-lease-procedure';
DROP PROCEDURE pgtap_lease_charge(text, numeric);
DROP PROCEDURE pgtap_lease_charge_crashing(text, numeric);
DROP TABLE pgtap_lease_calls, pgtap_lease_log;
RESET client_min_messages;
