# test/t/020_retry_storm.pl: a retry storm with killed backends and a crash
#
# Retry storm: many clients pay with keys drawn from a sliding window (so
# duplicates and concurrent duplicates never stop), some handlers roll back
# before finishing, some lease-mode workers vanish after committing their
# attempt or release it, backends are killed with pg_terminate_backend at
# random, and the server is crashed (immediate shutdown) and restarted in
# the middle of the run.  Afterwards every key is retried to completion with
# the clock moved past the lease, and the books must balance: every key paid
# exactly once, every completed key's response names its payment, no payment
# without its completed key, every lapsed attempt taken over, and amcheck
# finds the ledger sound.
#
# The driver is test/driver/: schema.sql (the payments service, and the
# sliding window of keys) and four pgbench scripts, each client a pgbench
# process of its own that comes back when its backend is killed.
# IDEM_SOAK=1 makes the storm last 5 minutes with a crash every minute
# instead of 20 seconds with one crash.

use strict;
use warnings;

use lib 'test/perl';
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemStorm;

my $soak = $ENV{IDEM_SOAK} // 0;
my $storm_secs = $soak ? 300 : 20;    # how long the storm blows
my $crashes = $soak ? 5 : 1;          # immediate shutdowns, evenly spread
my $clients = 6;                      # pgbench processes, one client each
my $window = 100;                     # keys in the window at any moment
my $slide = 40;                       # the window moves this many keys a second
my $driver = "$ENV{TESTDIR}/test/driver";
$driver = 'test/driver' unless -d $driver;

my $node = PostgreSQL::Test::Cluster->new('storm');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
log_statement = none
max_connections = 50
# a begin that queues behind a concurrent duplicate is logged after 1ms:
# the evidence that concurrent duplicates happened
log_lock_waits = on
deadlock_timeout = 1ms
});
$node->start;
$node->safe_psql('postgres', slurp_file("$driver/schema.sql"));

# --------------------------------------------------------------- the storm

my $storm = IdemStorm->new($node,
	"$driver/pay.pgbench\@4", "$driver/burst.pgbench\@2",
	"$driver/give_up.pgbench\@1", "$driver/lease.pgbench\@3");
my $crashed = 0;

# The window starts sliding now
my $t0 = time;
$node->safe_psql('postgres',
	"UPDATE storm_clock SET t0 = extract(epoch FROM clock_timestamp()), "
	  . "slide = $slide, width = $window");

my @crash_at = map { $t0 + $storm_secs * $_ / ($crashes + 1) } 1 .. $crashes;

while (time < $t0 + $storm_secs)
{
	my $left = int($t0 + $storm_secs - time);
	# a client whose backend was killed, or that ran its course, comes back
	$storm->top_up($clients, $left < 2 ? 1 : 2);

	if (@crash_at && time >= $crash_at[0])
	{
		shift @crash_at;
		$node->stop('immediate');
		$node->start;
		$crashed++;
		next;
	}

	# terminate one client backend at random
	$storm->kill_one($node, "application_name = 'storm_client'");
	sleep(0.1 + rand(0.3));
}
$storm->wait_all;

my $nkeys = $node->safe_psql('postgres', 'SELECT storm_top()');
note "storm: ${storm_secs}s, $storm->{launches} pgbench launches, $storm->{kills} backends killed, "
  . "$crashed crashes, keys k1..k$nkeys";

is($crashed, $crashes, 'the server was crashed and restarted mid-run');
cmp_ok($storm->{kills}, '>', 10, 'client backends were terminated at random');

my ($started, $replayed, $in_progress, $gave_up) = split /\|/,
  $node->safe_psql(
	'postgres', q{
	SELECT last_value, (SELECT last_value FROM storm_replayed),
	       (SELECT last_value FROM storm_in_progress),
	       (SELECT last_value FROM storm_gave_up)
	  FROM storm_started});
note "attempts started $started, replayed $replayed, in progress $in_progress, gave up $gave_up";
cmp_ok($replayed, '>', $started, 'duplicates outnumbered first attempts');
cmp_ok($in_progress, '>', 0, 'duplicates met attempts in progress');
cmp_ok($gave_up, '>', 0, 'handlers rolled back, vanished or released');
my $lock_waits = () = slurp_file($node->logfile) =~ /still waiting for ShareLock on transaction/g;
cmp_ok($lock_waits, '>', 0,
	"concurrent duplicates queued behind each other ($lock_waits waits logged)");

# ------------------------------------------------- the books, right after it

# Invariants that hold at every moment, crash or not
sub check_books
{
	my ($when) = @_;
	is( $node->safe_psql(
			'postgres', q{
			SELECT count(*) FROM (
			    SELECT key FROM payments GROUP BY key HAVING count(*) > 1) AS d}),
		'0',
		"$when: no key paid twice");
	is( $node->safe_psql(
			'postgres', q{
			SELECT count(*) FROM payments p
			 WHERE NOT EXISTS (
			       SELECT FROM idem_ledger l
			        WHERE l.scope = 'storm' AND l.key = p.key
			          AND l.state = 'completed' AND l.attempt = p.attempt
			          AND (l.response->>'payment_id')::bigint = p.id)}),
		'0',
		"$when: no payment without its completed key");
	is( $node->safe_psql(
			'postgres', q{
			SELECT count(*) FROM idem_ledger l
			 WHERE l.state = 'completed'
			   AND (l.status IS DISTINCT FROM 201
			        OR l.response->>'key' IS DISTINCT FROM l.key
			        OR NOT EXISTS (
			           SELECT FROM payments p
			            WHERE p.id = (l.response->>'payment_id')::bigint
			              AND p.key = l.key
			              AND p.amount = substr(l.key, 2)::int))}),
		'0',
		"$when: every completed key's response names its payment");
	return;
}

check_books('after the storm');

# Attempts left in progress by vanished or killed lease-mode workers
my %detached = map { split /\|/ } split /\n/,
  $node->safe_psql(
	'postgres', q{
	SELECT key, attempt FROM idem_ledger
	 WHERE scope = 'storm' AND state = 'in_progress' AND lease_until IS NOT NULL});
cmp_ok(scalar(keys %detached), '>', 0,
	'the storm left attempts in progress under live leases ('
	  . scalar(keys %detached) . ')');

# ------------------------------------------------------ retry to completion

# A client that never gives up retries every key until it completes.  The
# clock is moved past the 1-hour lease, so the detached attempts have lapsed
# and the retries take them over.
my $calls = $node->safe_psql(
	'postgres', qq{
	SET idempotency.clock_offset = '2 hours';
	CALL retry_all($nkeys)});
note "retry phase: $calls calls for $nkeys keys";

is( $node->safe_psql(
		'postgres', qq{
		SELECT count(*) FROM generate_series(1, $nkeys) AS k
		 WHERE NOT EXISTS (
		       SELECT FROM idem_ledger l
		        WHERE l.scope = 'storm' AND l.key = 'k' || k
		          AND l.state = 'completed')}),
	'0',
	'every key retried to completion');
is( $node->safe_psql(
		'postgres', qq{
		SELECT count(*) FROM generate_series(1, $nkeys) AS k
		 WHERE (SELECT count(*) FROM payments p WHERE p.key = 'k' || k) <> 1}),
	'0',
	'every key paid exactly once');
is($node->safe_psql('postgres', 'SELECT count(*) FROM payments'),
	$nkeys, 'no payment for a key outside the window');
check_books('after the retries');

my $detached_list = join(',', map { "('$_', $detached{$_})" } sort keys %detached);
is( $node->safe_psql(
		'postgres', qq{
		SELECT count(*) FROM (VALUES $detached_list) AS d(key, attempt)
		  JOIN idem_ledger l ON l.scope = 'storm' AND l.key = d.key
		 WHERE l.state = 'completed' AND l.attempt = d.attempt + 1}),
	scalar(keys %detached),
	'every lapsed attempt was taken over once, with the attempt number one higher');

# Every key now replays its stored response, whatever the clock says
is( $node->safe_psql(
		'postgres', qq{
		SET idempotency.clock_offset = '3 hours';
		SELECT count(*) FROM generate_series(1, $nkeys) AS k,
		       LATERAL idem_begin('k' || k, jsonb_build_object('amount', k), 'storm') AS r,
		       idem_ledger l
		 WHERE l.scope = 'storm' AND l.key = 'k' || k
		   AND r.outcome = 'replayed' AND r.status = 201
		   AND r.response = l.response AND r.attempt = l.attempt}),
	$nkeys,
	'every key replays its stored response');

# ------------------------------------------------------------ physical checks

$node->safe_psql('postgres', 'CREATE EXTENSION amcheck');
for my $index (qw(idem_ledger_pkey payments_pkey payments_key_idx))
{
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT bt_index_parent_check('$index', heapallindexed => true, rootdescend => true)"
	);
	is($rc, 0, "amcheck: $index is sound") or diag($err);
}
for my $table (qw(idem_ledger payments))
{
	is($node->safe_psql('postgres', "SELECT count(*) FROM verify_heapam('$table')"),
		'0', "amcheck: the heap of $table is sound");
}

my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|PANIC|TRAP:/,
	'no backend crashed on its own');

$node->stop;
done_testing();
