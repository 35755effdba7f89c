# idempotency.sweep_rate_limit holds a sweep to so many keys a second: a pass
# of M keys at a limit of N lasts at least M / N seconds, by the sweeper's own
# status.  0 means no limit, and a reload reaches a sweeper asleep in the
# throttle at once, as SIGTERM does.  Bad values are refused with the
# server's message.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('throttle');
$node->init;
$node->append_conf(
    'postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1h'
idempotency.sweep_batch_size = 100
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION idempotency');

is($node->safe_psql('app', 'SHOW idempotency.sweep_rate_limit'),
    '25000', 'the default limit is 25000 keys a second');

sub set_conf
{
    my ($name, $value) = @_;
    $node->safe_psql('postgres', "ALTER SYSTEM SET $name = '$value'");
    $node->reload;
}

my $clock = 0;

# Keys with a one-hour ttl, then the server's clock past it.  A restart
# brings one pass at once, and the next only in an hour: what the status says
# of the last pass stays the pass that removed them.
sub fill_expired
{
    my ($prefix, $keys) = @_;
    $node->safe_psql('app',
        "SELECT count(*) FROM generate_series(1, $keys) g "
          . "WHERE idem_once('$prefix-' || g, ttl => '1 hour')");
    $clock += 2;
    $node->safe_psql('postgres',
        "ALTER SYSTEM SET idempotency.clock_offset = '$clock hours'");
    $node->restart;
}

my $status =
  'FROM idem_sweeper_status() WHERE datname = current_database()';

# 2000 keys at 1000 keys a second, in batches of 100: the pass that removes
# them lasts two seconds at least
set_conf('idempotency.sweep_rate_limit', '1000');
fill_expired('a', 2000);
ok( $node->poll_query_until('app',
        "SELECT removed_last_pass = 2000 AND state <> 'sweeping' $status"),
    'the throttled sweeper removes the 2000 expired keys in one pass');
is( $node->safe_psql('app',
        "SELECT last_pass_finished - last_pass_started >= interval '2 seconds' $status"),
    't',
    'a pass of 2000 keys at 1000 keys a second lasts at least 2 seconds');
is($node->safe_psql('app', 'SELECT count(*) FROM idem_ledger'),
    '0', 'and leaves no key behind');

# At one key a second, the first batch of 100 keys puts the sweeper to sleep
# for 100 seconds, in the middle of its pass
set_conf('idempotency.sweep_rate_limit', '1');
fill_expired('b', 300);
ok( $node->poll_query_until(
        'app', qq{
SELECT s.removed_total = 100 AND s.state = 'sweeping'
       AND a.wait_event_type = 'Extension'
  FROM idem_sweeper_status() s, pg_stat_activity a
 WHERE s.datname = current_database() AND a.pid = s.pid}),
    'at one key a second, the sweeper sleeps after its first batch');

# 0 lifts the limit: the sleeping sweeper wakes on the reload and finishes the
# pass, which would otherwise have lasted 300 seconds
set_conf('idempotency.sweep_rate_limit', '0');
ok( $node->poll_query_until('app',
        "SELECT removed_last_pass = 300 AND state <> 'sweeping' $status"),
    'a reload to 0 wakes the sleeping sweeper, which finishes its pass');
is( $node->safe_psql('app',
        "SELECT last_pass_finished - last_pass_started < interval '300 seconds' $status"),
    't', 'well before one key a second would have let it');

# A sweeper asleep in the throttle leaves at once on SIGTERM
set_conf('idempotency.sweep_rate_limit', '1');
fill_expired('c', 300);
ok( $node->poll_query_until(
        'app', qq{
SELECT s.removed_total = 100 AND a.wait_event_type = 'Extension'
  FROM idem_sweeper_status() s, pg_stat_activity a
 WHERE s.datname = current_database() AND a.pid = s.pid}),
    'the sweeper sleeps in the throttle again');
my $pid = $node->safe_psql('app', "SELECT pid $status");
$node->safe_psql('app', "SELECT pg_terminate_backend($pid)");
ok( $node->poll_query_until('app',
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid"),
    'SIGTERM ends a sweeper asleep in the throttle');
is($node->safe_psql('app', 'SELECT count(*) FROM idem_ledger'),
    '200', 'having committed its first batch only');

# Bad values are refused, and the setting changes only on reload
my ($ret, $stdout, $stderr) = $node->psql('postgres',
    'ALTER SYSTEM SET idempotency.sweep_rate_limit = -1');
like(
    $stderr,
    qr/-1 is outside the valid range for parameter "idempotency\.sweep_rate_limit" \(0 \.\. 2147483647\)/,
    'a negative limit is refused');
($ret, $stdout, $stderr) = $node->psql('postgres',
    q{ALTER SYSTEM SET idempotency.sweep_rate_limit = 'fast'});
like(
    $stderr,
    qr/invalid value for parameter "idempotency\.sweep_rate_limit": "fast"/,
    'a limit that is not a number is refused');
($ret, $stdout, $stderr) = $node->psql('app',
    'SET idempotency.sweep_rate_limit = 10');
like(
    $stderr,
    qr/parameter "idempotency\.sweep_rate_limit" cannot be changed now/,
    'a session cannot change the limit');

$node->stop;
done_testing();
