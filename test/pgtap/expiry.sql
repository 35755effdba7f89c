-- expiry.sql: keys live for their ttl and then count as absent, whether or
-- not the sweeper has run.  Time is stepped with idempotency.clock_offset
-- (SET LOCAL: it ends with the transaction), never slept.
BEGIN;

SELECT plan(29);

-- A completed key replays until its ttl runs out
SELECT is((idem_begin('exp-1', '{"n": 1}', scope => 'pgtap-expiry',
                      ttl => '10 minutes')).outcome,
          'started', 'a new key with a ttl of 10 minutes starts');
SELECT is((idem_finish('exp-1', '{"ok": 1}', 200, scope => 'pgtap-expiry')).outcome,
          'completed', 'and completes');

SET LOCAL idempotency.clock_offset = '9 minutes';
SELECT results_eq(
    $$SELECT outcome, status, response, attempt
        FROM idem_begin('exp-1', '{"n": 1}', scope => 'pgtap-expiry')$$,
    $$VALUES ('replayed'::text, 200, '{"ok": 1}'::jsonb, 1)$$,
    'nine minutes later the key replays its response');
SELECT throws_ok(
    $$SELECT idem_begin('exp-1', '{"n": 2}', scope => 'pgtap-expiry')$$,
    'IK001', NULL,
    'nine minutes later a different request on the key is still refused');

SET LOCAL idempotency.clock_offset = '11 minutes';
SELECT results_eq(
    $$SELECT outcome, attempt
        FROM idem_begin('exp-1', '{"n": 2}', scope => 'pgtap-expiry',
                        ttl => '10 minutes')$$,
    $$VALUES ('started'::text, 1)$$,
    'eleven minutes later the key is absent: a new request starts afresh as attempt 1');
SELECT is((idem_finish('exp-1', '{"ok": 2}', 201, scope => 'pgtap-expiry')).outcome,
          'completed', 'the new request completes on the reused key');
SELECT results_eq(
    $$SELECT outcome, status, response, attempt
        FROM idem_begin('exp-1', '{"n": 2}', scope => 'pgtap-expiry')$$,
    $$VALUES ('replayed'::text, 201, '{"ok": 2}'::jsonb, 1)$$,
    'the key now replays the new response');
SELECT throws_ok(
    $$SELECT idem_begin('exp-1', '{"n": 1}', scope => 'pgtap-expiry')$$,
    'IK001', NULL,
    'the old request is now the different one');

-- idem_once is true again once its record has expired
SET LOCAL idempotency.clock_offset = '0';
SELECT ok(idem_once('once-1', 'pgtap-expiry', '5 minutes'),
          'idem_once is true the first time');
SELECT ok(NOT idem_once('once-1', 'pgtap-expiry', '5 minutes'),
          'and false for a duplicate');
SET LOCAL idempotency.clock_offset = '4 minutes';
SELECT ok(NOT idem_once('once-1', 'pgtap-expiry', '5 minutes'),
          'four minutes later, within the ttl, still false');
SET LOCAL idempotency.clock_offset = '6 minutes';
SELECT ok(idem_once('once-1', 'pgtap-expiry', '5 minutes'),
          'six minutes later, past the ttl, true again');
SELECT ok(NOT idem_once('once-1', 'pgtap-expiry', '5 minutes'),
          'and recorded afresh: false for the next duplicate');

-- The default ttl comes from idempotency.default_ttl
SET LOCAL idempotency.clock_offset = '0';
SELECT is((idem_begin('ttl-shipped', '{}', scope => 'pgtap-expiry')).outcome,
          'started', 'a key begun under the shipped default ttl starts');
SELECT is((idem_finish('ttl-shipped', '{"kept": "default"}', scope => 'pgtap-expiry')).outcome,
          'completed', 'and completes');

SET LOCAL idempotency.default_ttl = '1 hour';
SELECT is((idem_begin('ttl-1h', '{}', scope => 'pgtap-expiry')).outcome,
          'started', 'a key begun with default_ttl set to 1 hour starts');
SELECT is((idem_finish('ttl-1h', '{"kept": "1 hour"}', scope => 'pgtap-expiry')).outcome,
          'completed', 'and completes');
SELECT is((idem_begin('ttl-2h', '{}', scope => 'pgtap-expiry', ttl => '2 hours')).outcome,
          'started', 'a key begun with an explicit ttl of 2 hours starts');
SELECT is((idem_finish('ttl-2h', '{"kept": "2 hours"}', scope => 'pgtap-expiry')).outcome,
          'completed', 'and completes');

SET LOCAL idempotency.clock_offset = '59 minutes';
SELECT is((idem_begin('ttl-1h', '{}', scope => 'pgtap-expiry')).outcome,
          'replayed', 'after 59 minutes the key with the 1 hour default still replays');

SET LOCAL idempotency.clock_offset = '61 minutes';
SELECT results_eq(
    $$SELECT outcome, attempt FROM idem_begin('ttl-1h', '{}', scope => 'pgtap-expiry')$$,
    $$VALUES ('started'::text, 1)$$,
    'after 61 minutes the key with the 1 hour default has expired and starts afresh');
SELECT is((idem_begin('ttl-2h', '{}', scope => 'pgtap-expiry')).outcome,
          'replayed', 'after 61 minutes an explicit ttl of 2 hours overrides the default');
SELECT is((idem_begin('ttl-shipped', '{}', scope => 'pgtap-expiry')).outcome,
          'replayed', 'after 61 minutes a key kept by the shipped default (24 hours) replays');

-- idem_sweep removes the expired rows, and only those
SET LOCAL idempotency.clock_offset = '0';
DO $setup$
BEGIN
    -- completed, expires after 1 minute
    PERFORM idem_begin('sweep-a', '{}', scope => 'pgtap-sweep', ttl => '1 minute');
    PERFORM idem_finish('sweep-a', '{}', scope => 'pgtap-sweep');
    -- recorded by idem_once, expires after 1 minute
    PERFORM idem_once('sweep-b', 'pgtap-sweep', '1 minute');
    -- completed, kept for a day
    PERFORM idem_begin('sweep-c', '{}', scope => 'pgtap-sweep', ttl => '1 day');
    PERFORM idem_finish('sweep-c', '{}', scope => 'pgtap-sweep');
    -- an attempt never finished: lease lapses after 1 minute, row kept
    -- until lease plus ttl (2 minutes)
    PERFORM idem_begin('sweep-d', '{}', scope => 'pgtap-sweep',
                       ttl => '1 minute', lease => '1 minute');
END
$setup$;

CREATE TEMP TABLE sweeps (pass int PRIMARY KEY, rows_before bigint,
                          removed bigint, rows_after bigint);

SET LOCAL idempotency.clock_offset = '90 seconds';
INSERT INTO sweeps (pass, rows_before) SELECT 1, count(*) FROM idem_ledger;
UPDATE sweeps SET removed = idem_sweep() WHERE pass = 1;
UPDATE sweeps SET rows_after = (SELECT count(*) FROM idem_ledger) WHERE pass = 1;

SELECT results_eq(
    $$SELECT key FROM idem_ledger WHERE scope = 'pgtap-sweep' ORDER BY key$$,
    $$VALUES ('sweep-c'::text), ('sweep-d')$$,
    'after 90 seconds the sweep removes the two expired keys and keeps the live key and the lapsed attempt');
SELECT is((SELECT removed FROM sweeps WHERE pass = 1),
          (SELECT rows_before - rows_after FROM sweeps WHERE pass = 1),
          'idem_sweep returns the number of rows it removed');
SELECT results_eq(
    $$SELECT outcome, attempt FROM idem_begin('sweep-a', '{"new": true}', scope => 'pgtap-sweep')$$,
    $$VALUES ('started'::text, 1)$$,
    'a swept key starts afresh as attempt 1');

SET LOCAL idempotency.clock_offset = '3 minutes';
INSERT INTO sweeps (pass, rows_before) SELECT 2, count(*) FROM idem_ledger;
UPDATE sweeps SET removed = idem_sweep() WHERE pass = 2;
UPDATE sweeps SET rows_after = (SELECT count(*) FROM idem_ledger) WHERE pass = 2;

SELECT results_eq(
    $$SELECT key FROM idem_ledger WHERE scope = 'pgtap-sweep' ORDER BY key$$,
    $$VALUES ('sweep-a'::text), ('sweep-c')$$,
    'after 3 minutes the lapsed attempt is swept too (lease plus ttl passed)');
SELECT is((SELECT removed FROM sweeps WHERE pass = 2),
          (SELECT rows_before - rows_after FROM sweeps WHERE pass = 2),
          'the second sweep also returns the number of rows it removed');
SELECT cmp_ok((SELECT removed FROM sweeps WHERE pass = 2), '>=', 1::bigint,
              'the second sweep removed at least the lapsed attempt');

SELECT * FROM finish();
ROLLBACK;
