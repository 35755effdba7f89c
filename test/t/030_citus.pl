# test/t/030_citus.pl: the ledger distributed by Citus, called through the coordinator
#
# A coordinator and two workers on this machine.  The ledger is distributed
# by key, then taken back and distributed by scope; each time, through the
# coordinator: begin, finish and replay; IK001; a lapsed lease taken over
# (IK003 for the late owner); fail; wait => false on a held key; once; a
# sweep that empties every shard of its expired keys; and concurrent
# duplicates of one key, of which exactly one starts.  The coordinator's own
# heap of the ledger (a Citus shell) must stay empty throughout: the direct
# path never writes there.
#
# Skipped when Citus is not installed for the server under test
# (scripts/citus.sh builds it); failed instead with IDEM_REQUIRE_CITUS=1, as
# in CI.

use strict;
use warnings;

use lib 'test/perl';
use IPC::Run qw(start finish pump timer);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemCitus;

IdemCitus::skip_unless_installed();

# One node of the cluster, with Citus preloaded
sub citus_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'citus'
max_prepared_transactions = 20
citus.node_conninfo = 'sslmode=prefer'
# This file tests routing and arbitration through Citus, with sessions that
# begin an attempt and end at once: the lease alone is to hold an attempt
# here (027_owner_liveness.pl tests the takeover from an ended session)
idempotency.owner_liveness = off
});
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION citus');
	return $node;
}

my $coord = citus_node('coordinator');
my @workers = (citus_node('worker1'), citus_node('worker2'));

$coord->safe_psql('postgres',
	"SELECT citus_set_coordinator_host('" . $coord->host . "', " . $coord->port . ")");
for my $w (@workers)
{
	$coord->safe_psql('postgres',
		"SELECT citus_add_node('" . $w->host . "', " . $w->port . ")");
}
is($coord->safe_psql('postgres', 'SELECT count(*) FROM citus_get_active_worker_nodes()'),
	'2', 'two workers are active');

$coord->safe_psql('postgres', 'CREATE EXTENSION idempotency');
for my $w (@workers)
{
	is($w->safe_psql('postgres',
			"SELECT count(*) FROM pg_extension WHERE extname = 'idempotency'"),
		'1', 'CREATE EXTENSION idempotency reached ' . $w->name);
}

# Rows of the ledger in all shards together, and the shell's own heap size
my $shard_rows = q{SELECT coalesce(sum(result::bigint), 0)
  FROM run_command_on_shards('idem_ledger', $$SELECT count(*) FROM %s$$)};
my $shell_size = q{SELECT pg_relation_size('idem_ledger'::regclass)};

# Run sql on the coordinator and return (stdout, stderr)
sub coord_psql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	$coord->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$out, stderr => \$err);
	return ($out, $err);
}

# Sessions that begin one key at once, each in a transaction held open
# for a moment; exactly one may start
sub race
{
	my ($key, $sessions) = @_;
	my (@out, @h);
	for my $i (0 .. $sessions - 1)
	{
		$out[$i] = '';
		my $in = "BEGIN;\nSELECT 'R:' || outcome FROM idem_begin('$key');\n"
		  . "SELECT pg_sleep(0.3);\nCOMMIT;\n";
		$h[$i] = start(
			[ 'psql', '-X', '-A', '-t', '-q', '-d', $coord->connstr('postgres') ],
			'<', \$in, '>', \$out[$i], '2>', \$out[$i]);
	}
	finish($_) for @h;
	my @outcomes = map { /R:(\w+)/ ? $1 : "error: $_" } @out;
	return @outcomes;
}

for my $by ('key', 'scope')
{
	# Before: the session's calls use the local ledger (a finish that finds
	# nothing writes nothing)
	my $long = IdemCitus::session($coord);
	like(IdemCitus::query($long, "SELECT idem_finish('$by-nothing')"), qr/IK002|no attempt/,
		"by $by: a session looks at the local ledger first");

	if ($by eq 'scope')
	{
		# by scope, co-located with a business table distributed by tenant
		$coord->safe_psql('postgres', q{
			CREATE TABLE orders (tenant text, id int, amount int, PRIMARY KEY (tenant, id));
			SELECT create_distributed_table('orders', 'tenant');
			SELECT idem_distribute('scope', colocate_with => 'orders');
		});
		is($coord->safe_psql('postgres',
				"SELECT count(DISTINCT colocationid) FROM pg_dist_partition"
				  . " WHERE logicalrelid IN ('orders'::regclass, 'idem_ledger'::regclass)"),
			'1', 'by scope: the ledger is co-located with the orders');
	}
	else
	{
		$coord->safe_psql('postgres', "SELECT idem_distribute(\"by\" => '$by')");
	}
	is($coord->safe_psql('postgres',
			"SELECT column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition "
			  . "WHERE logicalrelid = 'idem_ledger'::regclass"),
		$by, "the ledger is distributed by $by");
	is($coord->safe_psql('postgres',
			"SELECT count(DISTINCT p.nodeport) FROM pg_dist_shard s"
			  . " JOIN pg_dist_shard_placement p USING (shardid)"
			  . " WHERE s.logicalrelid = 'idem_ledger'::regclass"),
		'2', "by $by: the ledger's shards are on both workers");

	# begin, finish, replay
	is($coord->safe_psql('postgres',
			"SELECT outcome, attempt FROM idem_begin('$by-1', '{\"a\": 1}', scope => 't1')"),
		'started|1', "by $by: a first begin starts");
	is($coord->safe_psql('postgres',
			"SELECT outcome FROM idem_finish('$by-1', '{\"id\": 7}', 201, scope => 't1')"),
		'completed', "by $by: finish completes the attempt");
	is($coord->safe_psql('postgres',
			"SELECT outcome, status, response FROM idem_begin('$by-1', '{\"a\": 1}', scope => 't1')"),
		'replayed|201|{"id": 7}', "by $by: a retry replays what was stored");
	is($coord->safe_psql('postgres',
			"SELECT outcome FROM idem_begin('$by-1', '{\"a\": 1}', scope => 't2')"),
		'started', "by $by: the same key in another scope is another key");
	is($coord->safe_psql('postgres', $shard_rows), '2', "by $by: the shards hold both rows");

	# begin and finish in one transaction, as a handler does
	is($coord->safe_psql('postgres',
			"BEGIN; SELECT outcome FROM idem_begin('$by-tx');"
			  . " SELECT outcome FROM idem_finish('$by-tx', '\"ok\"'); COMMIT;"),
		"started\ncompleted", "by $by: begin and finish in one transaction");
	is($coord->safe_psql('postgres', "SELECT outcome, response FROM idem_begin('$by-tx')"),
		'replayed|"ok"', "by $by: and it replays");

	if ($by eq 'scope')
	{
		# a handler: the key and the order of one tenant, in one transaction
		is($coord->safe_psql('postgres', q{
				BEGIN;
				SELECT outcome FROM idem_begin('pay-1', scope => 'tenant-7');
				INSERT INTO orders VALUES ('tenant-7', 1, 500);
				SELECT outcome FROM idem_finish('pay-1', '{"order": 1}', scope => 'tenant-7');
				COMMIT;
				SELECT outcome, response FROM idem_begin('pay-1', scope => 'tenant-7');}),
			"started\ncompleted\nreplayed|{\"order\": 1}",
			'by scope: a handler writes its key and its order together, and replays');
		is($coord->safe_psql('postgres', q{
				BEGIN;
				SELECT outcome FROM idem_begin('pay-2', scope => 'tenant-7');
				INSERT INTO orders VALUES ('tenant-7', 2, 900);
				ROLLBACK;
				SELECT count(*) FROM orders WHERE id = 2;
				SELECT outcome FROM idem_begin('pay-2', scope => 'tenant-7');}),
			"started\n0\nstarted",
			'by scope: a handler that rolls back leaves neither its key nor its order');
		$coord->safe_psql('postgres', "SELECT idem_fail('pay-2', scope => 'tenant-7')");
	}

	# the session opened before the distribution now reaches the shards
	is(IdemCitus::query($long,
			"BEGIN; SELECT outcome FROM idem_begin('$by-long');"
			  . " SELECT outcome FROM idem_finish('$by-long', '1'); COMMIT;"
			  . " SELECT outcome FROM idem_begin('$by-long');"),
		"started\ncompleted\nreplayed",
		"by $by: a session older than the distribution begins, finishes and replays");
	is($coord->safe_psql('postgres',
			"SELECT sum(result::int) FROM run_command_on_shards('idem_ledger',"
			  . " \$\$SELECT count(*) FROM %s WHERE key = '$by-long'\$\$)"),
		'1', "by $by: its key is in a shard");
	is($coord->safe_psql('postgres', $shell_size), '0',
		"by $by: and not in the coordinator's shell");
	IdemCitus::close_session($long);

	# IK001
	my ($out, $err) = coord_psql(
		"SELECT idem_begin('$by-1', '{\"a\": 2}', scope => 't1')");
	like($err, qr/IK001/, "by $by: another request under a used key is IK001");

	# a lapsed lease is taken over; the late owner meets IK003
	# (begun with no owner recorded: this session ends at once, and the lease
	# alone is to hold the attempt here; 027_owner_liveness.pl tests owners)
	is($coord->safe_psql('postgres',
			"SET idempotency.owner_liveness = off;"
			  . " SELECT outcome, attempt FROM idem_begin('$by-2', lease => '1 minute')"),
		'started|1', "by $by: an attempt with a one-minute lease");
	is($coord->safe_psql('postgres', "SELECT outcome FROM idem_begin('$by-2')"),
		'in_progress', "by $by: a retry within the lease is told in_progress");
	is($coord->safe_psql('postgres',
			"SET idempotency.clock_offset = '2 minutes';"
			  . " SELECT outcome, attempt FROM idem_begin('$by-2')"),
		'started|2', "by $by: after the lease a retry takes over as attempt 2");
	($out, $err) = coord_psql(
		"SET idempotency.clock_offset = '2 minutes';"
		  . " SELECT idem_finish('$by-2', '1', attempt => 1)");
	like($err, qr/IK003/, "by $by: the late owner's finish is IK003");
	is($coord->safe_psql('postgres',
			"SET idempotency.clock_offset = '2 minutes';"
			  . " SELECT outcome, attempt FROM idem_finish('$by-2', '2', attempt => 2)"),
		'completed|2', "by $by: the new owner finishes");

	# fail releases the key
	$coord->safe_psql('postgres', "SELECT idem_begin('$by-3')");
	$coord->safe_psql('postgres', "SELECT idem_fail('$by-3')");
	is($coord->safe_psql('postgres', "SELECT outcome, attempt FROM idem_begin('$by-3')"),
		'started|2', "by $by: after idem_fail the next begin starts attempt 2");
	($out, $err) = coord_psql("SELECT idem_finish('$by-never')");
	like($err, qr/IK002/, "by $by: finishing a key never begun is IK002");

	# wait => false on a held key
	is($coord->safe_psql('postgres',
			"SELECT outcome FROM idem_begin('$by-3', wait => false)"),
		'in_progress', "by $by: wait => false on a held key is in_progress");
	is($coord->safe_psql('postgres',
			"SELECT outcome FROM idem_begin('$by-4', wait => false)"),
		'started', "by $by: wait => false on a new key starts");

	# once
	is($coord->safe_psql('postgres',
			"SELECT idem_once('$by-once'), idem_once('$by-once')"),
		't|f', "by $by: once is true the first time only");

	# the sweep removes expired keys from every shard
	$coord->safe_psql('postgres',
		"SELECT idem_once('$by-sweep-' || i, scope => 's' || i, ttl => '1 minute')"
		  . " FROM generate_series(1, 40) i");
	is($coord->safe_psql('postgres',
			"SELECT count(*) FROM idem_ledger WHERE key LIKE '$by-sweep-%'"),
		'40', "by $by: 40 short-lived keys are recorded");
	is($coord->safe_psql('postgres',
			"SELECT count(DISTINCT s.nodeport) FROM pg_dist_shard_placement s,"
			  . " run_command_on_shards('idem_ledger',"
			  . "   \$\$SELECT count(*) FROM %s WHERE key LIKE '$by-sweep-%%'\$\$) r"
			  . " WHERE s.shardid = r.shardid AND r.result::int > 0"),
		'2', "by $by: they are spread over both workers");
	# the coordinator's status counts the expired keys of every shard
	cmp_ok($coord->safe_psql('postgres',
			"SET idempotency.clock_offset = '2 minutes';"
			  . " SELECT expired_waiting FROM idem_sweeper_status()"
			  . " WHERE datname = current_database()"),
		'>=', 40, "by $by: idem_sweeper_status on the coordinator counts every shard's expired keys");
	my $swept = $coord->safe_psql('postgres',
		"SET idempotency.clock_offset = '2 minutes'; SELECT idem_sweep()");
	cmp_ok($swept, '>=', 40, "by $by: idem_sweep on the coordinator deletes them ($swept)");
	is($coord->safe_psql('postgres',
			"SELECT coalesce(sum(result::bigint), 0) FROM run_command_on_shards('idem_ledger',"
			  . " \$\$SELECT count(*) FROM %s WHERE key LIKE '$by-sweep-%%'\$\$)"),
		'0', "by $by: no shard keeps an expired key");
	is($coord->safe_psql('postgres', "SELECT outcome FROM idem_begin('$by-1', '{\"a\": 1}', scope => 't1')"),
		'replayed', "by $by: a live key survives the sweep");

	# The sweeper on the coordinator does the same, on its own clock
	$coord->safe_psql('postgres',
		"SELECT idem_once('$by-swept-' || i, scope => 's' || i, ttl => '1 minute')"
		  . " FROM generate_series(1, 20) i");
	$coord->safe_psql('postgres',
		"LOAD 'idempotency'; ALTER SYSTEM SET idempotency.clock_offset = '2 minutes'; SELECT pg_reload_conf();");
	$coord->safe_psql('postgres', 'SELECT idem_sweeper_start()');
	ok($coord->poll_query_until('postgres',
			"SELECT coalesce(sum(result::bigint), 0) FROM run_command_on_shards('idem_ledger',"
			  . " \$\$SELECT count(*) FROM %s WHERE key LIKE '$by-swept-%%'\$\$)",
			'0'),
		"by $by: the sweeper started on the coordinator empties every shard of expired keys");
	$coord->safe_psql('postgres', 'SELECT idem_sweeper_stop()');
	$coord->safe_psql('postgres',
		"LOAD 'idempotency'; ALTER SYSTEM RESET idempotency.clock_offset; SELECT pg_reload_conf();");

	# concurrent duplicates: the shard's primary key arbitrates
	my $one_started = 0;
	for my $round (1 .. 5)
	{
		my @outcomes = race("$by-race-$round", 4);
		my $started = grep { $_ eq 'started' } @outcomes;
		my $held = grep { $_ eq 'in_progress' } @outcomes;
		$one_started++ if $started == 1 && $held == 3;
		diag("by $by, round $round: @outcomes") unless $started == 1 && $held == 3;
	}
	is($one_started, 5,
		"by $by: of four concurrent begins of one key exactly one started, in every round");
	is($coord->safe_psql('postgres',
			"SELECT count(*), max(attempt) FROM idem_ledger WHERE key LIKE '$by-race-%'"),
		'5|1', "by $by: one row per raced key, attempt 1");

	# the coordinator's shell never received a row
	is($coord->safe_psql('postgres', $shell_size), '0',
		"by $by: the coordinator's shell table has no rows of its own");

	# The ledger belongs to the extension, so undistribute_table refuses
	# it: start afresh for the next distribution
	my ($o, $e) = coord_psql("SELECT undistribute_table('idem_ledger')");
	like($e, qr/extension depends on it/,
		"by $by: undistribute_table refuses the extension's ledger");
	$coord->safe_psql('postgres', 'DROP EXTENSION idempotency');
	is($coord->safe_psql('postgres',
			"SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE '%idem_ledger%'"),
		'0', "by $by: DROP EXTENSION drops the distributed ledger");
	$coord->safe_psql('postgres', 'CREATE EXTENSION idempotency');
}

# Back on one server, in the same sessions' server: the local ledger is
# served by the direct path again, and its rows are the coordinator's own
is($coord->safe_psql('postgres',
		"BEGIN; SELECT outcome FROM idem_begin('local-1');"
		  . " SELECT outcome FROM idem_finish('local-1'); COMMIT;"),
	"started\ncompleted", 'begin and finish work on the local ledger');

done_testing();
