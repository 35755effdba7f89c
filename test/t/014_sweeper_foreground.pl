# A sweep of 200k expired keys never blocks a foreground idem_begin for longer
# than one batch.  The foreground session aims at the keys the sweeper is
# deleting right now (its progress in pg_stat_activity tells where it is),
# so that it does run into the sweeper's row locks.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $keys = 200000;
my $batch = 500;

my $node = PostgreSQL::Test::Cluster->new('foreground');
$node->init;
$node->append_conf(
    'postgresql.conf', qq{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
idempotency.sweep_batch_size = $batch
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION idempotency');
$node->safe_psql('app',
    "SELECT count(*) FROM generate_series(1, $keys) g "
      . "WHERE idem_once('k' || g, ttl => '1 hour')");
$node->safe_psql('app',
    'CREATE TABLE fg_result (calls int, calls_while_sweeping int, '
      . 'waited int, max_wait interval)');

# The foreground: one idem_begin per transaction, on a key just ahead of the
# sweeper, timing each call, until the sweeper's pass is over.  Its own clock
# is two hours on, so every key it aims at has expired and must be taken over.
my $foreground = q{
DO $fg$
DECLARE
    t0       timestamptz;
    wait     interval;
    max_wait interval := '0';
    calls    int := 0;
    during   int := 0;
    waited   int := 0;
    pos      bigint;
    deadline timestamptz := clock_timestamp() + interval '150 seconds';
BEGIN
    LOOP
        SELECT (regexp_match(query, '([0-9]+) removed'))[1]::bigint INTO pos
          FROM pg_stat_activity
         WHERE backend_type = 'idempotency sweeper'
           AND datname = current_database();
        t0 := clock_timestamp();
        PERFORM idem_begin('k' || (coalesce(pos, 0) + 1 + calls % 500)::text);
        wait := clock_timestamp() - t0;
        COMMIT;
        max_wait := greatest(max_wait, wait);
        calls := calls + 1;
        IF pos > 0 THEN
            during := during + 1;
        END IF;
        IF wait > interval '2 milliseconds' THEN
            waited := waited + 1;
        END IF;
        -- the sweeper exits when its pass is over.  Only a pass that has
        -- removed keys counts: one that began before the clock moved finds
        -- nothing to remove and ends at once.
        EXIT WHEN (during > 0 AND pos IS NULL) OR clock_timestamp() > deadline;
    END LOOP;
    INSERT INTO fg_result VALUES (calls, during, waited, max_wait);
END
$fg$;
};

my ($out, $err) = ('', '');
my $h = IPC::Run::start(
    [
        'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
        '-d', $node->connstr('app'),
        '-c', "SET idempotency.clock_offset = '2 hours'",
        '-c', $foreground
    ],
    '>', \$out, '2>', \$err,
    IPC::Run::timeout(180));
$node->poll_query_until('app',
    "SELECT count(*) = 1 FROM pg_stat_activity "
      . "WHERE query ~ '^\\s*DO \\\$fg\\\$' AND pid <> pg_backend_pid()")
  or die 'the foreground session did not start';

# Now the keys expire for the sweeper too
$node->safe_psql('postgres',
    "ALTER SYSTEM SET idempotency.clock_offset = '2 hours'");
$node->reload;

$h->finish;
is($h->result(0), 0, 'the foreground session ran to the end') or diag($err);

my ($calls, $during, $waited, $max_wait_ms) = split /\|/,
  $node->safe_psql('app',
    'SELECT calls, calls_while_sweeping, waited, '
      . 'extract(epoch FROM max_wait) * 1000 FROM fg_result');
my ($removed, $pass_ms, $longest_ms, $left) = split /\|/,
  $node->safe_psql('app',
    "SELECT removed_last_pass, "
      . "extract(epoch FROM last_pass_finished - last_pass_started) * 1000, "
      . "extract(epoch FROM longest_batch) * 1000, expired_waiting "
      . "FROM idem_sweeper_status() WHERE datname = 'app'");

diag(sprintf(
        'pass: %d keys in %.0f ms, longest batch %.1f ms; foreground: %d calls, %d while sweeping, %d waited, longest wait %.1f ms',
        $removed, $pass_ms, $longest_ms, $calls, $during, $waited,
        $max_wait_ms));

cmp_ok($removed + 1000, '>=', $keys,
    'the sweeper removed the expired keys the foreground did not take over');
is($left, '0', 'no expired key is left');
cmp_ok($during, '>=', 20, 'the foreground ran while the sweeper swept');
cmp_ok($max_wait_ms, '<=', $longest_ms + 100,
    'no idem_begin waited longer than one batch (plus 100 ms of scheduling)');
cmp_ok($max_wait_ms * 3, '<', $pass_ms,
    'far less than the whole pass');

$node->stop;
done_testing();
