# The launcher: with the library preloaded and no other setting, expired keys
# disappear on their own in every database that has the extension; databases
# gain and lose the extension at run time; databases without it, templates
# and databases that refuse connections are left alone.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('launcher');
$node->init;
$node->append_conf(
    'postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
log_min_messages = debug1
});
$node->start;

# Keys with a one-hour ttl, that expire when the clock moves two hours on
sub fill
{
    my ($db, $n, $prefix) = @_;
    $node->safe_psql($db,
        "SELECT count(*) FROM generate_series(1, $n) g "
          . "WHERE idem_once('$prefix' || g, ttl => '1 hour')");
}

sub ledger_count
{
    my ($db) = @_;
    return $node->safe_psql($db, 'SELECT count(*) FROM idem_ledger');
}

sub set_clock
{
    my ($offset) = @_;
    $node->safe_psql('postgres',
        "ALTER SYSTEM SET idempotency.clock_offset = '$offset'");
    $node->reload;
}

# The launcher names itself
$node->poll_query_until('postgres',
    "SELECT count(*) = 1 FROM pg_stat_activity "
      . "WHERE backend_type = 'idempotency launcher' "
      . "AND application_name = 'idempotency launcher' AND datname IS NULL")
  or die 'no launcher in pg_stat_activity';
pass('the launcher shows in pg_stat_activity with its backend type and name');

for my $db (qw(db1 db2 plain))
{
    $node->safe_psql('postgres', "CREATE DATABASE $db");
}
$node->safe_psql($_, 'CREATE EXTENSION idempotency') for qw(db1 db2);

# A database that refuses connections and a template, both with the ledger;
# the log from here on must show no sweeper there
$node->safe_psql('postgres', 'CREATE DATABASE closed');
$node->safe_psql('closed', 'CREATE EXTENSION idempotency');
fill('closed', 50, 'c');
$node->safe_psql('postgres', 'CREATE DATABASE tmpl');
$node->safe_psql('tmpl', 'CREATE EXTENSION idempotency');
fill('tmpl', 50, 't');
$node->safe_psql('postgres',
    'ALTER DATABASE closed ALLOW_CONNECTIONS false; ALTER DATABASE tmpl IS_TEMPLATE true'
);
# A pass that started before may still be under way: wait until it is over
$node->poll_query_until('postgres',
    "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname IN ('closed', 'tmpl')")
  or die 'a sweeper stays in a closed database';
my $closed_offset = -s $node->logfile;
my $deleted_in_closed_sql =
  "SELECT coalesce(tup_deleted, 0) FROM pg_stat_database WHERE datname = 'closed'";
my $deleted_in_closed = $node->safe_psql('postgres', $deleted_in_closed_sql);

fill('db1', 300, 'a');
fill('db2', 200, 'b');
is(ledger_count('db1'), '300', 'db1 holds its keys before they expire');

set_clock('2 hours');
$node->poll_query_until('db1', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'db1 was not swept';
$node->poll_query_until('db2', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'db2 was not swept';
pass('expired keys disappear on their own in two databases');

my $status = $node->safe_psql('db1',
    "SELECT datname, removed_total, expired_waiting, state, "
      . "last_pass_finished IS NOT NULL, next_pass IS NOT NULL "
      . "FROM idem_sweeper_status() WHERE datname IN ('db1', 'db2') ORDER BY datname");
is( $status,
    "db1|300|0|idle|t|t\ndb2|200||idle|t|t",
    'idem_sweeper_status shows each database: keys removed, keys waiting, next pass'
);

# The sweeper names itself and says what it does while it sweeps: a slow pass
# (tiny batches) so that it can be seen at work
$node->safe_psql('postgres',
    'ALTER SYSTEM SET idempotency.sweep_batch_size = 2');
set_clock('0');
$node->reload;
fill('db2', 20000, 's');
set_clock('2 hours');
$node->poll_query_until('db2',
    "SELECT count(*) = 1 FROM pg_stat_activity "
      . "WHERE backend_type = 'idempotency sweeper' "
      . "AND application_name = 'idempotency sweeper' AND datname = 'db2' "
      . "AND query ~ '^sweeping expired keys: [0-9]+ removed\$'")
  or die 'no sweeper at work in pg_stat_activity';
pass('a sweeper shows in pg_stat_activity with its backend type, name and progress');
is($node->safe_psql('db2',
        "SELECT state FROM idem_sweeper_status() WHERE datname = 'db2'"),
    'sweeping', 'idem_sweeper_status says the database is being swept');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET idempotency.sweep_batch_size');
$node->reload;
$node->poll_query_until('db2', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'db2 was not swept';

# CREATE EXTENSION at run time: the launcher hears of it at commit.  With an
# interval of one hour the launcher would not probe the database again for an
# hour: only the wake-up can bring a sweeper there now.
$node->safe_psql('postgres',
    "ALTER SYSTEM SET idempotency.sweep_interval = '1h'");
$node->reload;
$node->poll_query_until('db2',
    "SELECT next_pass > now() + interval '50 minutes' FROM idem_sweeper_status() "
      . "WHERE datname = 'db2'")
  or die 'the launcher did not take the new interval';
pass('a new sweep_interval moves the next pass at once');
$node->safe_psql('plain',
    "CREATE EXTENSION idempotency; "
      . "SELECT idem_once('p' || g, ttl => '1 minute') FROM generate_series(1, 20) g"
);
$node->poll_query_until('plain',
    "SELECT last_pass_finished IS NOT NULL FROM idem_sweeper_status() "
      . "WHERE datname = 'plain'")
  or die 'the new ledger got no sweeper';
pass('a database that creates the extension gets a sweeper at once');
$node->safe_psql('postgres',
    "ALTER SYSTEM SET idempotency.sweep_interval = '1s'");
$node->reload;
set_clock('3 hours');
$node->poll_query_until('plain', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'the new ledger was not swept';
pass('and its keys expire');

# DROP EXTENSION at run time: its sweeper quietly lets go; the others go on
my $log_offset = -s $node->logfile;
$node->safe_psql('db1', 'DROP EXTENSION idempotency');
$node->poll_query_until('db2',
    "SELECT count(*) = 0 FROM idem_sweeper_status() WHERE datname = 'db1'")
  or die 'db1 still has a status row';
pass('a database that drops the extension leaves the status');
fill('db2', 10, 'd');
set_clock('5 hours');
$node->poll_query_until('db2', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'db2 was not swept after db1 dropped the extension';
pass('the other databases are still swept');

# ... and comes back with CREATE EXTENSION
$node->safe_psql('db1',
    "CREATE EXTENSION idempotency; "
      . "SELECT idem_once('e' || g, ttl => '1 second') FROM generate_series(1, 10) g"
);
$node->poll_query_until('db1', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'db1 was not swept after CREATE EXTENSION';
pass('a database that creates the extension again is swept again');

my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/(ERROR|FATAL|WARNING):/,
    'DROP and CREATE EXTENSION leave no error in the log');

# A template and a database that refuses connections are never visited: no
# sweeper started there, their expired keys stay
$log = slurp_file($node->logfile, $closed_offset);
unlike(
    $log,
    qr/starting background worker process "idempotency sweeper for database "(closed|tmpl)""/,
    'no sweeper for a template or a database that refuses connections');
unlike($log, qr/FATAL:.*(closed|tmpl)/, 'and no failed connection either');
# Counted from outside while it is still closed: once connections are allowed
# again, the launcher may sweep it at any moment
is($node->safe_psql('postgres', $deleted_in_closed_sql),
    $deleted_in_closed, 'nothing was deleted in the closed database');
$node->safe_psql('postgres',
    'ALTER DATABASE closed ALLOW_CONNECTIONS true');

# A database created from a template with the extension is found by itself
$node->safe_psql('postgres', 'CREATE DATABASE copied TEMPLATE tmpl');
$node->poll_query_until('copied', 'SELECT count(*) = 0 FROM idem_ledger')
  or die 'the database copied from the template was not swept';
pass('a database copied from a template with the extension is swept');

# Databases without the extension are probed ever less often; the log tells
# how many sweepers the launcher started in each database
$log = slurp_file($node->logfile);
my $probes = () =
  $log =~ /starting background worker process "idempotency sweeper for database "postgres""/g;
my $passes = () =
  $log =~ /starting background worker process "idempotency sweeper for database "db2""/g;
# A pass every interval in db2, against probes whose gap doubles each time:
# about log2(passes) + 1 of them (the count, not a ratio, as the run's length
# varies with the machine's load)
cmp_ok($probes, '<=', 2 + log($passes > 0 ? $passes : 1) / log(2),
    "a database without the extension was probed with back-off ($probes probes, $passes passes in db2)"
);
unlike($log, qr/idempotency sweeper of database "postgres".*(ERROR|FATAL)/,
    'probing a database without the extension logs nothing');

# In a preloaded server, the launcher owns the sweepers
my ($ret, $stdout, $stderr) =
  $node->psql('db2', 'SELECT idem_sweeper_stop()');
like($stderr, qr/cannot stop the sweeper of one database while the idempotency launcher runs them/,
    'idem_sweeper_stop refuses when the launcher runs the sweepers');
($ret, $stdout, $stderr) = $node->psql('db2', 'SELECT idem_sweeper_start()');
is($ret, 0, 'idem_sweeper_start only asks the launcher for a pass');
like($stderr, qr/the idempotency launcher runs the sweeper of database "db2"/,
    'and says so');

$node->stop;
done_testing();
