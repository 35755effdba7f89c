# test/t/032_citus_storm.pl: a retry storm on a Citus cluster, through a worker
# crash and a rebalance onto a new worker
#
# A coordinator and two workers, the payments service of
# test/driver/citus_schema.sql: the ledger and the payments distributed by
# key and co-located, pay() a distributed function co-located with them.
# Clients pay with keys drawn from a sliding window (duplicates and
# concurrent duplicates never stop): most through the distributed function
# (run on the key's worker), some in transaction blocks (run on the
# coordinator), some rolling back half-way, some in lease mode vanishing or
# failing after their first commit.  Meanwhile backends are killed at random
# on the coordinator and on the workers, worker1 is stopped with an
# immediate shutdown and started again, and a third worker is added and the
# shards rebalanced onto it (logical replication: wal_level = logical)
# while the storm goes on.  Afterwards every key is retried to completion
# with the clock past the lease, and the books must balance: every key paid
# exactly once, every completed key's response names its payment, no
# payment without its completed key, and every key replays its response
# through the distributed function and through the coordinator.
#
# Skipped when Citus is not installed for the server under test
# (scripts/citus.sh builds it); failed instead with IDEM_REQUIRE_CITUS=1, as
# in CI.

use strict;
use warnings;

use lib 'test/perl';
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemCitus;
use IdemStorm;

IdemCitus::skip_unless_installed();

my $clients = 5;         # pgbench processes, one client each
my $crash_at = 6;        # seconds into the storm: worker1 crashes
my $rebalance_at = 10;   # seconds into the storm: worker3 joins, shards move
my $min_secs = 20;       # the storm blows at least this long
my $max_secs = 150;      # and stops by then, rebalanced or not
my $driver = "$ENV{TESTDIR}/test/driver";
$driver = 'test/driver' unless -d $driver;

# the lease alone holds attempts here (no owner is recorded on Citus anyway)
my ($coord, @workers) = IdemCitus::cluster(2);
$coord->safe_psql('postgres', slurp_file("$driver/citus_schema.sql"));
my $worker3 = IdemCitus::node('worker3');

# The ledger's shards per worker port
sub placements
{
	return $coord->safe_psql('postgres', q{
		SELECT string_agg(nodeport || ':' || n, ' ' ORDER BY nodeport) FROM (
		  SELECT nodeport, count(*) AS n FROM pg_dist_shard_placement
		   JOIN pg_dist_shard USING (shardid)
		  WHERE logicalrelid = 'idem_ledger'::regclass GROUP BY nodeport) AS p});
}
note 'shards before: ' . placements();

# --------------------------------------------------------------- the storm

my $storm = IdemStorm->new($coord,
	"$driver/citus_pay.pgbench\@4", "$driver/citus_burst.pgbench\@2",
	"$driver/citus_coord.pgbench\@2", "$driver/give_up.pgbench\@1",
	"$driver/lease.pgbench\@2");
my ($crashed, $rebalanced) = (0, 0);

my $t0 = time;
$coord->safe_psql('postgres',
	"UPDATE storm_clock SET t0 = extract(epoch FROM clock_timestamp())");

while (1)
{
	my $now = time - $t0;
	last if $now >= $max_secs;
	if ($rebalanced == 1)
	{
		my $state = $coord->safe_psql('postgres',
			'SELECT state FROM citus_rebalance_status() ORDER BY job_id DESC LIMIT 1');
		$rebalanced = 2 if $state =~ /finished|failed|cancelled/;
		note "rebalance: $state after " . int($now) . 's' if $rebalanced == 2;
	}
	last if $now >= $min_secs && $rebalanced == 2;

	$storm->top_up($clients, 2);

	if (!$crashed && $now >= $crash_at)
	{
		$workers[0]->stop('immediate');
		$workers[0]->start;
		$crashed = 1;
		next;
	}
	if (!$rebalanced && $now >= $rebalance_at)
	{
		IdemCitus::add_worker($coord, $worker3);
		$coord->safe_psql('postgres', 'SELECT citus_rebalance_start()');
		$rebalanced = 1;
		next;
	}

	if (rand() < 0.5)
	{
		$storm->kill_one($coord, "application_name = 'storm_client'");
	}
	else
	{
		$storm->kill_one($workers[ int(rand(2)) ], "query LIKE '%pay(%'");
	}
	sleep(0.2 + rand(0.3));
}
# let the clients run out (each runs for at most 2 seconds)
$storm->wait_all;

my $nkeys = $coord->safe_psql('postgres', 'SELECT storm_top()');
my $transactions = $storm->transactions;
note "storm: " . int(time - $t0) . "s, $storm->{launches} pgbench launches, "
  . "$storm->{kills} backends killed, $transactions transactions, keys k1..k$nkeys";
note 'shards after: ' . placements();

is($crashed, 1, 'worker1 was crashed and restarted mid-storm');
cmp_ok($storm->{kills}, '>', 5, 'backends were terminated at random');
cmp_ok($transactions, '>', $nkeys, 'duplicates outnumbered the keys');
# A payment's id comes from the sequence of the node that ran the handler:
# Citus gives each worker its own range, above 2^48
is($coord->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE id >= 2^48) > 0, count(*) FILTER (WHERE id < 2^48) > 0
		  FROM payments}),
	't|t', 'payments were made by handlers run on the workers and on the coordinator');
is($coord->safe_psql('postgres',
		'SELECT state FROM citus_rebalance_status() ORDER BY job_id DESC LIMIT 1'),
	'finished', 'the rebalance finished while the storm went on');
cmp_ok($coord->safe_psql('postgres', q{
		SELECT count(*) FROM pg_dist_shard_placement JOIN pg_dist_shard USING (shardid)
		 WHERE logicalrelid = 'idem_ledger'::regclass AND nodeport = } . $worker3->port),
	'>=', 2, 'the new worker holds its share of the ledger\'s shards');
is($coord->safe_psql('postgres', q{
		SELECT count(DISTINCT p.nodeport) FROM pg_dist_shard_placement p
		  JOIN pg_dist_shard l ON l.shardid = p.shardid AND l.logicalrelid = 'idem_ledger'::regclass
		  JOIN pg_dist_shard y ON y.shardid <> l.shardid AND y.logicalrelid = 'payments'::regclass
		   AND y.shardminvalue = l.shardminvalue
		  JOIN pg_dist_shard_placement q ON q.shardid = y.shardid AND q.nodeport <> p.nodeport}),
	'0', 'every payments shard is still beside its ledger shard');

# ------------------------------------------------------------- the books

sub check_books
{
	my ($when) = @_;
	is($coord->safe_psql('postgres', q{
			SELECT count(*) FROM (
			    SELECT key FROM payments GROUP BY key HAVING count(*) > 1) AS d}),
		'0', "$when: no key paid twice");
	is($coord->safe_psql('postgres', q{
			SELECT count(*) FROM payments p
			 WHERE NOT EXISTS (
			       SELECT FROM idem_ledger l
			        WHERE l.scope = 'storm' AND l.key = p.key
			          AND l.state = 'completed' AND l.attempt = p.attempt
			          AND (l.response->>'payment_id')::bigint = p.id)}),
		'0', "$when: no payment without its completed key");
	is($coord->safe_psql('postgres', q{
			SELECT count(*) FROM idem_ledger l
			 WHERE l.state = 'completed'
			   AND (l.status IS DISTINCT FROM 201
			        OR l.response->>'key' IS DISTINCT FROM l.key
			        OR NOT EXISTS (
			           SELECT FROM payments p
			            WHERE p.key = l.key
			              AND p.id = (l.response->>'payment_id')::bigint
			              AND p.amount = substr(l.key, 2)::int))}),
		'0', "$when: every completed key's response names its payment");
	return;
}

check_books('after the storm');
my $held = $coord->safe_psql('postgres',
	q{SELECT count(*) FROM idem_ledger WHERE state = 'in_progress' AND lease_until IS NOT NULL});
note "attempts left in progress under live leases (vanished lease-mode workers): $held";

# ----------------------------------------------------- retry to completion

my $calls = $coord->safe_psql('postgres', qq{
	SET idempotency.clock_offset = '2 hours';
	CALL retry_all($nkeys)});
note "retry phase: $calls calls for $nkeys keys";

# (Citus plans no correlated subquery over generate_series: count instead)
is($coord->safe_psql('postgres', qq{
		SELECT count(DISTINCT key) FROM idem_ledger
		 WHERE scope = 'storm' AND state = 'completed'
		   AND substr(key, 2)::int BETWEEN 1 AND $nkeys}),
	$nkeys, 'every key retried to completion');
is($coord->safe_psql('postgres', qq{
		SELECT count(DISTINCT key) FROM payments WHERE substr(key, 2)::int BETWEEN 1 AND $nkeys}),
	$nkeys, 'every key paid');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM payments'),
	$nkeys, 'one payment per key, none for a key outside the window');
check_books('after the retries');

# Every key replays its stored response: through the distributed function
# (one statement per key, each run on the key's worker) and the coordinator
my $stored = $coord->safe_psql('postgres', qq{
	SELECT string_agg(response::text, E'\\n' ORDER BY substr(key, 2)::int)
	  FROM idem_ledger WHERE scope = 'storm'});
my $script = join('', map { "SELECT pay('k$_', $_);\n" } 1 .. $nkeys);
my $replayed = $coord->safe_psql('postgres', $script);
is($replayed, $stored, 'every key replays its response through the distributed function');
is($coord->safe_psql('postgres', qq{
		SELECT count(*) FROM generate_series(1, $nkeys) AS k,
		       LATERAL idem_begin('k' || k, jsonb_build_object('amount', k), 'storm') AS r
		 WHERE r.outcome = 'replayed' AND r.status = 201}),
	$nkeys, 'and through the coordinator');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM payments'),
	$nkeys, 'the replays paid nothing');

for my $n ($coord, @workers, $worker3)
{
	is($n->safe_psql('postgres',
			q{SELECT pg_relation_size('idem_ledger') + pg_relation_size('payments')}),
		'0', $n->name . ': the shell tables have no rows of their own');
}
for my $n ($coord, @workers, $worker3)
{
	unlike(slurp_file($n->logfile), qr/terminated by signal|PANIC|TRAP:/,
		$n->name . ': no backend crashed on its own');
}

done_testing();
