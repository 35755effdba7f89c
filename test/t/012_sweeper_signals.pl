# The launcher and its sweepers stop promptly on SIGTERM and come back; a
# cancel ends a sweeper's pass and leaves the launcher alone; after a crash
# the server restarts them; DROP DATABASE and CREATE DATABASE ...
# TEMPLATE succeed while a sweeper is at work in the database.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('signals');
$node->init;
$node->append_conf(
    'postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
restart_after_crash = on
});
$node->start;

my $clock = 0;

sub fill
{
    my ($db, $n) = @_;
    $node->safe_psql($db,
        "SELECT count(*) FROM generate_series(1, $n) g "
          . "WHERE idem_once('k' || g, ttl => '1 hour')");
}

sub expire_all
{
    $clock += 2;
    $node->safe_psql('postgres',
        "ALTER SYSTEM SET idempotency.clock_offset = '$clock hours'");
    $node->reload;
}

sub set_batch_size
{
    my ($size) = @_;
    $node->safe_psql('postgres',
        "ALTER SYSTEM SET idempotency.sweep_batch_size = $size");
    $node->reload;
}

sub launcher_pid
{
    return $node->safe_psql('postgres',
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'"
    );
}

# Fill a database and wait until its sweeper is at work on a long pass (tiny
# batches); returns the sweeper's pid
sub slow_pass
{
    my ($db) = @_;
    set_batch_size(2);
    fill($db, 20000);
    expire_all();
    $node->poll_query_until('postgres',
        "SELECT count(*) = 1 FROM pg_stat_activity "
          . "WHERE backend_type = 'idempotency sweeper' AND datname = '$db' "
          . "AND (regexp_match(query, '([0-9]+) removed'))[1]::int > 0")
      or die "no sweeper at work in $db";
    return $node->safe_psql('postgres',
        "SELECT pid FROM pg_stat_activity "
          . "WHERE backend_type = 'idempotency sweeper' AND datname = '$db'");
}

sub sweeper_gone
{
    my ($pid) = @_;
    return $node->poll_query_until('postgres',
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid");
}

for my $db (qw(app doomed forced source))
{
    $node->safe_psql('postgres', "CREATE DATABASE $db");
    $node->safe_psql($db, 'CREATE EXTENSION idempotency');
}
$node->poll_query_until('postgres', "SELECT '' <> (" . 'SELECT pid::text FROM pg_stat_activity '
      . "WHERE backend_type = 'idempotency launcher')")
  or die 'no launcher';

# SIGTERM to the launcher: it stops, and the postmaster starts it again
my $old_launcher = launcher_pid();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_launcher)");
$node->poll_query_until('postgres',
    "SELECT count(*) = 1 FROM pg_stat_activity "
      . "WHERE backend_type = 'idempotency launcher' AND pid <> $old_launcher")
  or die 'the launcher did not come back';
pass('the launcher comes back after SIGTERM');
fill('app', 100);
expire_all();
$node->poll_query_until('app', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'not swept after the launcher came back';
pass('and sweeps again');

# SIGTERM to a sweeper in the middle of a pass: it stops at once, and the
# launcher starts another that finishes the job
my $pid = slow_pass('app');
my $t0 = time();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
sweeper_gone($pid) or die 'the sweeper did not stop';
my $took = time() - $t0;
cmp_ok($took, '<', 2, sprintf('a sweeper stops promptly on SIGTERM (%.2fs)', $took));
cmp_ok($node->safe_psql('app', 'SELECT count(*) FROM idem_ledger'),
    '>', 0, 'in the middle of its pass');
$node->poll_query_until('postgres',
    "SELECT count(*) = 1 FROM pg_stat_activity "
      . "WHERE backend_type = 'idempotency sweeper' AND datname = 'app' AND pid <> $pid")
  or die 'no new sweeper';
pass('the launcher starts a new sweeper');
set_batch_size(10000);
$node->poll_query_until('app', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'not swept after SIGTERM';
pass('which finishes the job');

# pg_cancel_backend to the launcher: it runs no statement to cancel, so it
# stays (its exit would stop the sweepers and lose the schedule)
my $cancel_offset = -s $node->logfile;
my $launcher = launcher_pid();
$node->safe_psql('postgres', "SELECT pg_cancel_backend($launcher)");

# pg_cancel_backend to a sweeper at work, again and again: each cancel ends
# that sweeper's pass, wherever it lands, in a batch or between two, and the
# launcher runs another that goes on
$pid = slow_pass('app');
my @canceled;
for my $round (1 .. 8)
{
    push @canceled, $pid;
    $node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
    sweeper_gone($pid) or die "the sweeper went on after cancel $round";
    last if $round == 8;
    my $others = 'pid NOT IN (' . join(', ', @canceled) . ')';
    $node->poll_query_until('postgres',
        "SELECT count(*) = 1 FROM pg_stat_activity "
          . "WHERE backend_type = 'idempotency sweeper' AND datname = 'app' AND $others "
          . "AND (regexp_match(query, '([0-9]+) removed'))[1]::int > 0")
      or die "no sweeper at work after cancel $round";
    $pid = $node->safe_psql('postgres',
        "SELECT pid FROM pg_stat_activity "
          . "WHERE backend_type = 'idempotency sweeper' AND datname = 'app' AND $others");
    # Its pass may have reached the end of the ledger meanwhile
    last if $pid eq '';
}
set_batch_size(10000);
$node->poll_query_until('app', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'not swept after the cancels';
pass('after cancels the launcher runs new sweepers that finish the job');
is(launcher_pid(), $launcher, 'a cancel leaves the launcher running, in the same process');
ok(!$node->log_contains(qr/exited with exit code 1/, $cancel_offset),
    'no launcher or sweeper exited with an error on a cancel');

# A crash: the postmaster restarts everything, the launcher sweeps again
$pid = slow_pass('app');
my $log_offset = -s $node->logfile;
kill 'KILL', $pid;
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
# Until recovery ends, psql may exit before it reads its query, and the
# framework's write to it fails with a broken pipe instead of polling again
$node->wait_for_log(qr/database system is ready to accept connections/, $log_offset);
$node->poll_query_until('postgres',
    "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'")
  or die 'no launcher after the crash';
pass('after a crash the launcher is back');
set_batch_size(10000);
$node->poll_query_until('app', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'not swept after the crash';
pass('and the keys are swept');

# DROP DATABASE while its sweeper is at work: the sweeper steps aside and the
# drop goes through (it would fail after five seconds if the sweeper stayed)
$log_offset = -s $node->logfile;
$pid = slow_pass('doomed');
$t0 = time();
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE doomed');
$took = time() - $t0;
is($ret, 0, 'DROP DATABASE succeeds while its sweeper is at work')
  or diag($stderr);
cmp_ok($took, '<', 3, sprintf('without waiting for the sweeper (%.2fs)', $took));
sweeper_gone($pid);

# The same with FORCE, and CREATE DATABASE ... TEMPLATE of a database at work
$pid = slow_pass('forced');
($ret, $stdout, $stderr) =
  $node->psql('postgres', 'DROP DATABASE forced WITH (FORCE)');
is($ret, 0, 'DROP DATABASE WITH (FORCE) succeeds while its sweeper is at work')
  or diag($stderr);
$pid = slow_pass('source');
($ret, $stdout, $stderr) =
  $node->psql('postgres', 'CREATE DATABASE copy TEMPLATE source');
is($ret, 0, 'CREATE DATABASE ... TEMPLATE succeeds while a sweeper is at work in the template')
  or diag($stderr);
set_batch_size(10000);
$node->poll_query_until('copy', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'the copy was not swept';
pass('and the copy gets its own sweeper');

# No sweeper was left behind in a dropped database, none tried to come back
$node->poll_query_until('app', "SELECT count(*) = 0 FROM idem_sweeper_status() "
      . "WHERE datname IN ('doomed', 'forced')")
  or die 'status rows of dropped databases stay';
$node->safe_psql('app', 'SELECT pg_sleep(1.5)');
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/being accessed by other users/, 'no DROP or CREATE DATABASE had to wait for a sweeper');
unlike($log, qr/FATAL:  database .* does not exist/, 'no sweeper tried to connect to a dropped database');

$node->stop;
done_testing();
