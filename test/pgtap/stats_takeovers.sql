-- stats_takeovers.sql: the takeover counters of idem_stats.  A takeover
-- needs an attempt another session committed, so this file does NOT run in
-- one transaction that rolls back: a dblink session begins two keys and
-- commits them, and ends; the file takes both over (one after its lease,
-- one because its session is gone) and deletes their rows at the end.
SET client_min_messages = warning;
DELETE FROM idem_ledger WHERE scope = 'stats-takeovers';
SELECT NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'dblink') AS created_dblink
\gset
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;

SELECT plan(4);
CREATE TEMP TABLE stats_before AS SELECT * FROM idem_stats;

-- The other session: one key under a one-minute lease and no owner, one
-- under a long lease with its owner recorded
SELECT dblink_connect('stats_owner',
                      format('dbname=%s port=%s host=%s', current_database(),
                             current_setting('port'),
                             split_part(current_setting('unix_socket_directories'), ',', 1)));
SELECT dblink_exec('stats_owner', 'SET idempotency.owner_liveness = off');
SELECT * FROM dblink('stats_owner', $$
    SELECT (idem_begin('lease', scope => 'stats-takeovers', lease => '1 minute')).outcome
$$) AS t(outcome text);
SELECT dblink_exec('stats_owner', 'RESET idempotency.owner_liveness');
SELECT * FROM dblink('stats_owner', $$
    SELECT (idem_begin('owner', scope => 'stats-takeovers', lease => '1 hour')).outcome
$$) AS t(outcome text);
SELECT * FROM dblink('stats_owner', 'SELECT pg_backend_pid()') AS t(pid int) \gset owner_
SELECT dblink_disconnect('stats_owner');
-- wait until its backend has exited
SET stats.owner_pid = :owner_pid;
DO $$
BEGIN
    FOR i IN 1 .. 3000 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity
                              WHERE pid = current_setting('stats.owner_pid')::int);
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$$;

-- the gone owner's key is taken over at once
SELECT is((idem_begin('owner', scope => 'stats-takeovers')).outcome, 'started',
          'the key of the gone session is taken over');
SELECT is((SELECT s.takeovers_owner_gone - b.takeovers_owner_gone
             FROM idem_stats s, stats_before b),
          1::bigint, 'takeovers_owner_gone counts it');
-- the key with no owner, once its lease lapsed
SET idempotency.clock_offset = '2 minutes';
SELECT is((idem_begin('lease', scope => 'stats-takeovers')).outcome, 'started',
          'the key whose lease lapsed is taken over');
RESET idempotency.clock_offset;
SELECT is((SELECT s.takeovers_lease - b.takeovers_lease
             FROM idem_stats s, stats_before b),
          1::bigint, 'takeovers_lease counts it');

SELECT * FROM finish();

DELETE FROM idem_ledger WHERE scope = 'stats-takeovers';
SET client_min_messages = warning;
SELECT CASE WHEN :'created_dblink' THEN 'DROP EXTENSION dblink' END \gexec
