# Without preloading: idem_sweeper_start() and idem_sweeper_stop() run a
# sweeper for the current database, refusing clearly where that cannot work;
# the sweeper sweeps on after a cancel between passes and after the
# extension's schema is renamed, and leaves on its own for DROP EXTENSION and
# DROP DATABASE.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('dynamic');
$node->init;
$node->append_conf('postgresql.conf', q{idempotency.sweep_interval = '1s'});
$node->start;

my $clock = 0;

sub fill
{
    my ($db, $n, $prefix) = @_;
    $node->safe_psql($db,
        "SELECT count(*) FROM generate_series(1, $n) g "
          . "WHERE idem_once('$prefix' || g, ttl => '1 hour')");
}

sub expire_all
{
    $clock += 2;
    $node->safe_psql('postgres',
        "LOAD 'idempotency'; ALTER SYSTEM SET idempotency.clock_offset = '$clock hours'");
    $node->reload;
}

sub sweepers_in
{
    my ($db) = @_;
    return $node->safe_psql('postgres',
        "SELECT count(*) FROM pg_stat_activity "
          . "WHERE backend_type = 'idempotency sweeper' AND datname = '$db'");
}

for my $db (qw(app other doomed forced))
{
    $node->safe_psql('postgres', "CREATE DATABASE $db");
    $node->safe_psql($db, 'CREATE EXTENSION idempotency');
}

# No launcher, no sweeper until asked
is($node->safe_psql('postgres',
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type ~ '^idempotency'"),
    '0', 'without preloading nothing runs by itself');
is($node->safe_psql('app', 'SELECT state FROM idem_sweeper_status()'),
    'stopped', 'the status says no sweeper runs');

# Start: a sweeper for this database, named in pg_stat_activity
my $pid = $node->safe_psql('app', 'SELECT idem_sweeper_start()');
like($pid, qr/^\d+$/, 'idem_sweeper_start returns the sweeper process id');
is( $node->safe_psql(
        'postgres',
        "SELECT backend_type, application_name, datname FROM pg_stat_activity WHERE pid = $pid"
    ),
    'idempotency sweeper|idempotency sweeper|app',
    'the sweeper shows in pg_stat_activity with its backend type and name');

my ($ret, $stdout, $stderr) =
  $node->psql('app', 'SELECT idem_sweeper_start()');
is($stdout, $pid, 'a second start returns the running sweeper');
like($stderr, qr/a sweeper already runs for database "app"/, 'and says so');

fill('app', 2000, 'a');
fill('other', 50, 'o');
expire_all();
$node->poll_query_until('app', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'not swept';
pass('the sweeper removes expired keys');
is( $node->safe_psql(
        'app',
        "SELECT pid, state IN ('idle', 'sweeping'), removed_total, expired_waiting "
          . "FROM idem_sweeper_status()"),
    "$pid|t|2000|0",
    'the status shows the sweeper, what it removed and what waits');
$node->poll_query_until('app',
    "SELECT vacuum_count = 1 FROM pg_stat_user_tables WHERE relname = 'idem_ledger'")
  or die 'the ledger was not vacuumed';
pass('after a pass that left many dead rows the sweeper vacuums the ledger');
is($node->safe_psql('other', 'SELECT count(*) FROM idem_ledger'),
    '50', 'another database is not swept by it');

# Between passes the same process stays, and waits
my $finished = $node->safe_psql('app',
    'SELECT last_pass_finished FROM idem_sweeper_status()');
$node->poll_query_until('app',
    "SELECT last_pass_finished > '$finished' FROM idem_sweeper_status()")
  or die 'no second pass';
is($node->safe_psql('app', 'SELECT pid FROM idem_sweeper_status()'),
    $pid, 'the sweeper runs a pass every interval, in the same process');

# pg_cancel_backend while it waits between passes: there is no pass to
# cancel, so it stays, in the same process, and sweeps on.  (A cancel during
# a pass ends that pass only.)  Three times, each after a pass.
my $log_offset = -s $node->logfile;
for my $round (1 .. 3)
{
    $node->poll_query_until('app',
        "SELECT state = 'idle' FROM idem_sweeper_status()")
      or die 'the sweeper is not idle';
    $finished = $node->safe_psql('app',
        'SELECT last_pass_finished FROM idem_sweeper_status()');
    $node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
    $node->poll_query_until('app',
        "SELECT last_pass_finished > '$finished' OR state = 'stopped' "
          . 'FROM idem_sweeper_status()')
      or die "no pass after cancel $round";
    last if $node->safe_psql('app', 'SELECT state FROM idem_sweeper_status()') eq 'stopped';
}
is( $node->safe_psql(
        'app', "SELECT pid, state <> 'stopped', last_error IS NULL FROM idem_sweeper_status()"),
    "$pid|t|t",
    'a cancel between passes leaves the sweeper running, in the same process');
fill('app', 100, 'c');
expire_all();
$node->poll_query_until('app',
    "SELECT count(*) = 0 OR (SELECT state = 'stopped' FROM idem_sweeper_status()) "
      . 'FROM idem_ledger')
  or die 'not swept after the cancels';
is( $node->safe_psql(
        'app', 'SELECT pid, (SELECT count(*) FROM idem_ledger) FROM idem_sweeper_status()'),
    "$pid|0", 'and it still sweeps');
ok(!$node->log_contains(qr/exited with exit code 1/, $log_offset),
    'no sweeper exited with an error');

# ALTER SCHEMA ... RENAME of the extension's schema: the sweeper prepared
# its statements under the old name, and sweeps on under the new one
$node->safe_psql('postgres', 'CREATE DATABASE moved');
$node->safe_psql('moved',
    'CREATE SCHEMA idem; CREATE EXTENSION idempotency SCHEMA idem');
my $moved_pid = $node->safe_psql('moved', 'SELECT idem.idem_sweeper_start()');
$node->safe_psql('moved',
    "SELECT count(*) FROM generate_series(1, 100) g WHERE idem.idem_once('m' || g, ttl => '1 hour')");
expire_all();
$node->poll_query_until('moved', 'SELECT count(*) = 0 FROM idem.idem_ledger')
  or die 'not swept before the rename';
$node->safe_psql('moved', 'ALTER SCHEMA idem RENAME TO idem_renamed');
$node->safe_psql('moved',
    "SELECT count(*) FROM generate_series(1, 100) g WHERE idem_renamed.idem_once('r' || g, ttl => '1 hour')");
expire_all();
$node->poll_query_until('moved',
    'SELECT count(*) = 0 OR (SELECT last_error IS NOT NULL FROM idem_renamed.idem_sweeper_status() '
      . 'WHERE datname = current_database()) FROM idem_renamed.idem_ledger')
  or die 'not swept after the rename';
is( $node->safe_psql(
        'moved',
        'SELECT pid, last_error, (SELECT count(*) FROM idem_renamed.idem_ledger) '
          . 'FROM idem_renamed.idem_sweeper_status() WHERE datname = current_database()'),
    "$moved_pid||0",
    'a sweeper goes on sweeping after its schema is renamed');
is($node->safe_psql('moved', 'SELECT idem_renamed.idem_sweeper_stop()'),
    't', 'and stops as usual');
$node->safe_psql('postgres', 'DROP DATABASE moved');

# Stop: it is gone when the function returns; a second stop finds nothing
is($node->safe_psql('app', 'SELECT idem_sweeper_stop()'),
    't', 'idem_sweeper_stop stops it');
is(sweepers_in('app'), '0', 'and waits until it is gone');
is($node->safe_psql('app', 'SELECT state FROM idem_sweeper_status()'),
    'stopped', 'the status says stopped');
is($node->safe_psql('app', 'SELECT idem_sweeper_stop()'),
    'f', 'a second stop has nothing to stop');

# SIGTERM stops it promptly too, and nothing restarts it
$pid = $node->safe_psql('app', 'SELECT idem_sweeper_start()');
my $t0 = time();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$node->poll_query_until('postgres',
    "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid")
  or die 'the sweeper did not stop on SIGTERM';
cmp_ok(time() - $t0, '<', 2, 'a sweeper stops promptly on SIGTERM');

# Refusals
$node->safe_psql('postgres', 'CREATE ROLE app_user LOGIN IN ROLE idempotency_user');
for my $f (qw(idem_sweeper_start() idem_sweeper_stop() idem_sweeper_status()))
{
    ($ret, $stdout, $stderr) =
      $node->psql('app', "SELECT $f", extra_params => [ '-U', 'app_user' ]);
    like($stderr, qr/permission denied for function/,
        "$f is not open to the application role");
}

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
($ret, $stdout, $stderr) = $node->psql('fresh',
    'BEGIN; CREATE EXTENSION idempotency; SELECT idem_sweeper_start(); COMMIT');
like($stderr,
    qr/cannot start a sweeper in the transaction that creates the extension/,
    'idem_sweeper_start refuses in the transaction that creates the extension');

$node->safe_psql('postgres',
    "LOAD 'idempotency'; ALTER SYSTEM SET idempotency.sweep_interval = 0");
$node->reload;
$node->poll_query_until('app',
    "SELECT current_setting('idempotency.sweep_interval') = '0'");
($ret, $stdout, $stderr) = $node->psql('app', 'SELECT idem_sweeper_start()');
like($stderr, qr/sweeping is turned off/,
    'idem_sweeper_start refuses while sweeping is turned off');
$node->safe_psql('postgres',
    "LOAD 'idempotency'; ALTER SYSTEM SET idempotency.sweep_interval = '1s'");
$node->reload;
$node->poll_query_until('app',
    "SELECT current_setting('idempotency.sweep_interval') = '1s'");

# DROP EXTENSION: the sweeper notices at its next pass and exits quietly
$log_offset = -s $node->logfile;
$pid = $node->safe_psql('app', 'SELECT idem_sweeper_start()');
$node->safe_psql('app', 'DROP EXTENSION idempotency');
$node->poll_query_until('postgres',
    "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid")
  or die 'the sweeper stayed after DROP EXTENSION';
pass('the sweeper exits when its database drops the extension');
ok( $node->log_contains(
        qr/idempotency sweeper of database "app" exits: the extension was dropped/,
        $log_offset),
    'and says why in the log');

# DROP DATABASE: the idle sweeper lets go of the database at once
$pid = $node->safe_psql('doomed', 'SELECT idem_sweeper_start()');
$t0 = time();
($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE doomed');
is($ret, 0, 'DROP DATABASE succeeds while a sweeper is connected')
  or diag($stderr);
cmp_ok(time() - $t0, '<', 4, 'without waiting out the five seconds');

$pid = $node->safe_psql('forced', 'SELECT idem_sweeper_start()');
($ret, $stdout, $stderr) =
  $node->psql('postgres', 'DROP DATABASE forced WITH (FORCE)');
is($ret, 0, 'DROP DATABASE WITH (FORCE) succeeds too') or diag($stderr);

# Nothing comes back for the dropped databases
$node->safe_psql('postgres', 'SELECT pg_sleep(1.5)');
is($node->safe_psql('postgres',
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type ~ '^idempotency'"),
    '0', 'no sweeper is left');
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/does not exist/, 'none tried to connect to a dropped database');

$node->stop;
done_testing();
