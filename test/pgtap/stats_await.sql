-- stats_await.sql: the await counters of idem_stats.  An await needs an
-- attempt that another transaction committed: a dblink session begins two
-- keys and commits them (with no owner recorded, so that its lease alone
-- binds them); the tests run in a transaction that rolls back, and the
-- dblink session deletes its keys at the end.
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;

SELECT plan(8);
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

SELECT dblink_connect('await_owner',
                      format('dbname=%s port=%s host=%s', current_database(),
                             current_setting('port'),
                             split_part(current_setting('unix_socket_directories'), ',', 1)));
SELECT dblink_exec('await_owner', 'SET idempotency.owner_liveness = off');
SELECT * FROM dblink('await_owner', $$
    SELECT (idem_begin('held', scope => 'stats-await', lease => '1 hour')).outcome
$$) AS t(outcome text);
SELECT * FROM dblink('await_owner', $$
    SELECT (idem_begin('lapsing', scope => 'stats-await', lease => '1 hour')).outcome
$$) AS t(outcome text);

-- an await that runs out
SELECT is((idem_begin('held', scope => 'stats-await', await => '100 ms')).outcome,
          'in_progress', 'an await that runs out answers in_progress');
SELECT is(pg_temp.grown('awaits'), 1::bigint, 'awaits counts a begin that waited');
SELECT is(pg_temp.grown('await_timeouts'), 1::bigint, 'await_timeouts counts its running out');

-- an await that ends before its interval: the lease lapses 500 ms into it
-- (the ledger's clock is moved to 500 ms before the lease's end).  In a
-- savepoint, rolled back at once: the takeover locks the row, which the
-- dblink session deletes at the end.
SAVEPOINT takeover;
SELECT set_config('idempotency.clock_offset',
                  (lease_until - clock_timestamp() - interval '500 ms')::text, true)
  FROM idem_ledger WHERE scope = 'stats-await' AND key = 'lapsing';
SELECT is((idem_begin('lapsing', scope => 'stats-await', await => '1 minute')).outcome,
          'started', 'an await that ends with a takeover answers started');
SELECT is(pg_temp.grown('awaits'), 2::bigint, 'awaits counts it');
SELECT is(pg_temp.grown('await_timeouts'), 1::bigint, 'await_timeouts does not');
ROLLBACK TO SAVEPOINT takeover;

-- a settled key, or no await, does not wait and counts nothing
SELECT * FROM dblink('await_owner', $$
    SELECT (idem_finish('held', scope => 'stats-await')).outcome
$$) AS t(outcome text);
SELECT is((idem_begin('held', scope => 'stats-await', await => '1 minute')).outcome,
          'replayed', 'a completed key replays without waiting');
SELECT is(pg_temp.grown('awaits'), 2::bigint, 'and is not counted as an await');

SELECT * FROM finish();

SELECT dblink_exec('await_owner',
                   $$DELETE FROM idem_ledger WHERE scope OPERATOR(pg_catalog.=) 'stats-await'$$);
SELECT dblink_disconnect('await_owner');
ROLLBACK;
