# Settings applied on reload: idempotency.sweep_interval (0 turns sweeping
# off, even in the middle of a pass) and idempotency.sweep_batch_size.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('reload');
$node->init;
$node->append_conf(
    'postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = 0
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION idempotency');

sub fill
{
    my ($n, $prefix) = @_;
    $node->safe_psql('app',
        "SELECT count(*) FROM generate_series(1, $n) g "
          . "WHERE idem_once('$prefix' || g, ttl => '1 hour')");
}

sub set_conf
{
    my ($name, $value) = @_;
    $node->safe_psql('postgres', "ALTER SYSTEM SET $name = '$value'");
    $node->reload;
    # Each poll is a new backend, forked from the postmaster: once it sees the
    # value, so does every worker started after it
    $node->poll_query_until('postgres',
        "SELECT current_setting('$name') = '$value'")
      or die "$name = '$value' was not loaded";
}

my $clock = 0;

# Move the ledger's clock past every ttl given so far
sub expire_all
{
    $clock += 2;
    set_conf('idempotency.clock_offset', "$clock hours");
}

sub ledger_count
{
    return $node->safe_psql('app', 'SELECT count(*) FROM idem_ledger');
}

my $sweeper_at_work =
    "SELECT count(*) = 1 FROM pg_stat_activity "
  . "WHERE backend_type = 'idempotency sweeper' AND datname = 'app' "
  . "AND (regexp_match(query, '([0-9]+) removed'))[1]::int > 0";
my $no_sweeper =
    "SELECT count(*) = 0 FROM pg_stat_activity "
  . "WHERE backend_type = 'idempotency sweeper'";

# Sweeping off: expired keys stay.  Nothing can be polled for here; a short
# wait shows that no sweeper comes.
fill(100, 'a');
expire_all();
is($node->safe_psql('app', 'SELECT state, expired_waiting FROM idem_sweeper_status()'),
    'off|100', 'with sweep_interval = 0 the status says off');
$node->safe_psql('app', 'SELECT pg_sleep(1.5)');
is(ledger_count(), '100', 'with sweep_interval = 0 expired keys stay');

# Turned on by a reload
set_conf('idempotency.sweep_interval', '1s');
$node->poll_query_until('app', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'not swept after sweep_interval was turned on';
pass('sweep_interval set by a reload turns sweeping on');

# The batch size, by a reload: the sweeper's progress moves in steps of 7
set_conf('idempotency.sweep_batch_size', '7');
fill(7 * 6000, 'b');
expire_all();
my %seen;
my $deadline = time() + 60;
while (time() < $deadline)
{
    my ($left, $n) = split /\|/,
      $node->safe_psql('app',
        "SELECT (SELECT count(*) FROM idem_ledger), "
          . "(SELECT (regexp_match(query, '([0-9]+) removed'))[1] FROM pg_stat_activity "
          . " WHERE backend_type = 'idempotency sweeper' AND datname = 'app')");
    $seen{$n} = 1 if defined $n && $n ne '' && $n > 0;
    last if $left == 0;
}
my @steps = sort { $a <=> $b } keys %seen;
cmp_ok(scalar(@steps), '>', 0,
    'the sweeper shows its progress in pg_stat_activity ('
      . scalar(@steps) . ' readings)');
is(scalar(grep { $_ % 7 != 0 } @steps),
    0, 'every reading is a multiple of the batch size set by the reload');

# sweep_interval = 0 in the middle of a pass: the sweeper stops within a batch
set_conf('idempotency.sweep_batch_size', '2');
fill(60000, 'c');
expire_all();
$node->poll_query_until('app', $sweeper_at_work)
  or die 'no sweeper at work';
my $t0 = time();
set_conf('idempotency.sweep_interval', '0');
$node->poll_query_until('app', $no_sweeper)
  or die 'the sweeper went on after sweeping was turned off';
my $stopped_after = time() - $t0;
cmp_ok($stopped_after, '<', 5,
    sprintf('turning sweeping off stops a pass under way (%.2fs)', $stopped_after));
my $left = ledger_count();
cmp_ok($left, '>', 0, "the pass stopped before the end ($left keys left)");
$node->safe_psql('app', 'SELECT pg_sleep(1.5)');
is(ledger_count(), $left, 'and no pass follows');

# On again, with the default batch size
$node->safe_psql('postgres',
    'ALTER SYSTEM RESET idempotency.sweep_batch_size');
set_conf('idempotency.sweep_interval', '1s');
$node->poll_query_until('app', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'not swept after sweeping was turned on again';
pass('turned on again, the sweeper finishes the job');
is( $node->safe_psql(
        'app', 'SELECT removed_total FROM idem_sweeper_status()'),
    100 + 7 * 6000 + 60000,
    'removed_total counts every key removed');

$node->stop;
done_testing();
