-- stats.sql: each counter of idem_stats counts its calls.  In one
-- transaction that rolls back: the counters are not transactional (a call
-- counts even when its transaction rolls back), so each test compares the
-- counter with its value at the start.  With the library preloaded the
-- counters are the database's, and another session's calls would count
-- too: pg_prove runs one file at a time.  Takeovers need committed attempts
-- of other sessions: stats_takeovers.sql.
BEGIN;
SELECT plan(14);

CREATE TEMP TABLE stats_before AS SELECT * FROM idem_stats;
CREATE FUNCTION pg_temp.grown(counter text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT s.%1$I - b.%1$I FROM idem_stats s, stats_before b', counter)
       INTO n;
    RETURN n;
END
$$;

SELECT is((SELECT shared FROM idem_stats),
          current_setting('shared_preload_libraries') ~ '(^|[ ,])idempotency($|[ ,])',
          'the counters are the server''s when preloaded, the session''s otherwise');

SELECT idem_begin('stats-1', '{"n": 1}');
SELECT idem_begin('stats-2', '{"n": 2}');
SELECT idem_finish('stats-1', '{"paid": 1}');
SELECT idem_begin('stats-1', '{"n": 1}');          -- replayed
SELECT idem_begin('stats-2', '{"n": 2}');          -- in_progress (its own attempt)
SELECT idem_begin('stats-2', '{"n": 2}');          -- in_progress
SELECT throws_ok($$SELECT idem_begin('stats-1', '{"n": 99}')$$, 'IK001',
                 NULL, 'a changed request is IK001');
SELECT idem_fail('stats-2');
SELECT idem_once('stats-msg');
SELECT idem_once('stats-msg');
SELECT idem_once('stats-msg');

SELECT is(pg_temp.grown('started'), 2::bigint, 'started counts begins that started');
SELECT is(pg_temp.grown('replayed'), 1::bigint, 'replayed counts replays');
SELECT is(pg_temp.grown('in_progress'), 2::bigint, 'in_progress counts begins told in_progress');
SELECT is(pg_temp.grown('mismatches'), 1::bigint, 'mismatches counts IK001');
SELECT is(pg_temp.grown('finishes'), 1::bigint, 'finishes counts idem_finish');
SELECT is(pg_temp.grown('fails'), 1::bigint, 'fails counts idem_fail');
SELECT is(pg_temp.grown('once_true'), 1::bigint, 'once_true counts idem_once answering true');
SELECT is(pg_temp.grown('once_false'), 2::bigint, 'once_false counts idem_once answering false');
SELECT is(pg_temp.grown('takeovers_lease') + pg_temp.grown('takeovers_owner_gone'),
          0::bigint, 'no takeover happened');

-- keys swept: three keys that have expired two days on
SELECT idem_once('stats-sweep-' || g, ttl => '1 hour') FROM generate_series(1, 3) g;
SET LOCAL idempotency.clock_offset = '2 days';
CREATE TEMP TABLE swept AS SELECT idem_sweep() AS n;
SELECT cmp_ok((SELECT n FROM swept), '>=', 3::bigint, 'idem_sweep deleted the expired keys');
-- (a preloaded sweeper may delete other expired keys meanwhile)
SELECT cmp_ok(pg_temp.grown('keys_swept'), '>=', (SELECT n FROM swept),
              'keys_swept counts the keys swept');

-- idem_stats_reset zeroes them
SELECT idem_stats_reset();
SELECT is((SELECT started + replayed + in_progress + mismatches + takeovers_lease
                  + takeovers_owner_gone + finishes + fails + once_true + once_false
                  + keys_swept
             FROM idem_stats),
          0::bigint, 'idem_stats_reset zeroes every counter');

SELECT * FROM finish();
ROLLBACK;
