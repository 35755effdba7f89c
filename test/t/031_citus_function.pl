# test/t/031_citus_function.pl: the API inside Citus distributed functions
#
# A coordinator and two workers; the ledger distributed by key, and handlers
# made distributed functions co-located with it
# (create_distributed_function(..., distribution_arg_name => ..., colocate_with
# => 'idem_ledger')), so that Citus runs each call on the worker that holds
# the key's shard.  Through them: begin, finish and replay; IK001; a lapsed
# lease taken over and IK003 for the late owner; fail; wait => false on a
# key an open transaction holds; once; concurrent duplicates, of which
# exactly one starts; a payment handler whose payment and key commit
# together on the shard.  An attempt begun on one node and retried on
# another is held, not taken over: owners are not judged across nodes.  No
# node's shell table receives a row.  Last, the pgTAP kit (idempotency_tap)
# proves the distributed payment handler idempotent.
#
# Skipped when Citus is not installed for the server under test
# (scripts/citus.sh builds it); failed instead with IDEM_REQUIRE_CITUS=1, as
# in CI.

use strict;
use warnings;

use lib 'test/perl';
use IPC::Run qw(start finish pump timer);
use Time::HiRes;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemCitus;

IdemCitus::skip_unless_installed();

my ($coord, @workers) = IdemCitus::cluster(2);
my %by_port = map { ($_->port => $_) } @workers;

$coord->safe_psql('postgres', q{
	CREATE EXTENSION idempotency;
	SELECT idem_distribute('key');

	-- handlers: one API call each, run where the key's shard is (PL/pgSQL,
	-- which the planner cannot inline into the caller's statement)
	CREATE FUNCTION h_begin(k text, req jsonb DEFAULT NULL, lease interval DEFAULT NULL,
	                        w boolean DEFAULT true)
	RETURNS idem_result LANGUAGE plpgsql
	AS $$ BEGIN RETURN idem_begin(k, req, lease => lease, wait => w); END $$;
	CREATE FUNCTION h_finish(k text, resp jsonb DEFAULT NULL, att int DEFAULT NULL)
	RETURNS idem_result LANGUAGE plpgsql
	AS $$ BEGIN RETURN idem_finish(k, resp, 201, attempt => att); END $$;
	CREATE FUNCTION h_fail(k text) RETURNS void LANGUAGE plpgsql
	AS $$ BEGIN PERFORM idem_fail(k); END $$;
	CREATE FUNCTION h_once(k text) RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN RETURN idem_once(k); END $$;
	-- a begin that holds its transaction open for a moment
	CREATE FUNCTION h_begin_hold(k text) RETURNS text LANGUAGE plpgsql
	AS $$ DECLARE r idem_result; BEGIN
	        r := idem_begin(k); PERFORM pg_sleep(0.3); RETURN r.outcome; END $$;
	-- the port of the node that ran the call
	CREATE FUNCTION h_where(k text) RETURNS text LANGUAGE plpgsql
	AS $$ BEGIN RETURN current_setting('port'); END $$;

	-- a payment handler, its payments co-located with its keys
	CREATE TABLE payments (key text NOT NULL, id bigserial, amount int NOT NULL,
	                       node text NOT NULL, PRIMARY KEY (key, id));
	SELECT create_distributed_table('payments', 'key', colocate_with => 'idem_ledger');
	CREATE FUNCTION pay(p_key text, p_amount int) RETURNS jsonb LANGUAGE plpgsql AS $$
	DECLARE
	    r   idem_result;
	    pid bigint;
	BEGIN
	    r := idem_begin(p_key, jsonb_build_object('amount', p_amount));
	    IF r.outcome <> 'started' THEN
	        RETURN r.response;
	    END IF;
	    INSERT INTO payments (key, amount, node)
	    VALUES (p_key, p_amount, current_setting('port')) RETURNING id INTO pid;
	    r := idem_finish(p_key, jsonb_build_object('payment_id', pid), 201);
	    RETURN r.response;
	END $$;
});
for my $f ('h_begin(text,jsonb,interval,boolean)', 'h_finish(text,jsonb,int)', 'h_fail(text)',
	'h_once(text)', 'h_begin_hold(text)', 'h_where(text)', 'pay(text,int)')
{
	$coord->safe_psql('postgres',
		"SELECT create_distributed_function('$f', distribution_arg_name => '\$1',"
		  . " colocate_with => 'idem_ledger')");
}
for my $w (@workers)
{
	is($w->safe_psql('postgres',
			"SELECT count(*) FROM pg_proc WHERE proname IN ('pay', 'idem_begin')"),
		'2', 'the extension and the handlers reached ' . $w->name);
}

# The port of the worker that holds key's shard
sub shard_port
{
	my ($key) = @_;
	return $coord->safe_psql('postgres',
		"SELECT nodeport FROM pg_dist_shard_placement"
		  . " WHERE shardid = get_shard_id_for_distribution_column('idem_ledger', '$key')");
}

# Run sql on the coordinator and return (stdout, stderr)
sub coord_psql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	$coord->psql('postgres', "\\set VERBOSITY verbose\n$sql", stdout => \$out, stderr => \$err);
	return ($out, $err);
}

# --------------------------------------------------- the calls run on the shard

my %ran_on;
for my $i (1 .. 8)
{
	my $port = $coord->safe_psql('postgres', "SELECT h_where('where-$i')");
	$ran_on{$port}++ if $port eq shard_port("where-$i");
}
is(scalar(keys %ran_on), 2,
	'each call ran on the worker holding its key\'s shard, and both workers ran some');

# ------------------------------------------------------------- the API, delegated

is($coord->safe_psql('postgres', q{SELECT outcome, attempt FROM h_begin('f-1', '{"a": 1}')}),
	'started|1', 'a first begin in a distributed function starts');
is($coord->safe_psql('postgres', q{SELECT outcome FROM h_finish('f-1', '{"id": 7}')}),
	'completed', 'finish completes it');
is($coord->safe_psql('postgres',
		q{SELECT outcome, status, response FROM h_begin('f-1', '{"a": 1}')}),
	'replayed|201|{"id": 7}', 'a retry replays what was stored');
is($coord->safe_psql('postgres', q{SELECT outcome, status FROM idem_begin('f-1', '{"a": 1}')}),
	'replayed|201', 'and so does a retry through the coordinator');
my $port = shard_port('f-1');
is($by_port{$port}->safe_psql('postgres',
		"SELECT outcome FROM h_begin('f-1', '{\"a\": 1}')"),
	'replayed', 'and a call on the worker itself');

my ($out, $err) = coord_psql(q{SELECT h_begin('f-1', '{"a": 2}')});
like($err, qr/IK001/, 'another request under a used key is IK001');
($out, $err) = coord_psql(q{SELECT h_finish('f-never')});
like($err, qr/IK002/, 'finishing a key never begun is IK002');

# a lapsed lease: the next begin takes over, the late owner meets IK003
is($coord->safe_psql('postgres',
		q{SET idempotency.owner_liveness = off;
		  SELECT outcome, attempt FROM h_begin('f-2', lease => '3 seconds')}),
	'started|1', 'an attempt with a three-second lease');
is($coord->safe_psql('postgres', q{SELECT outcome FROM h_begin('f-2')}),
	'in_progress', 'a retry within the lease is in_progress');
sleep(4);
is($coord->safe_psql('postgres', q{SELECT outcome, attempt FROM h_begin('f-2')}),
	'started|2', 'after the lease a retry takes over as attempt 2');
($out, $err) = coord_psql(q{SELECT h_finish('f-2', '1', 1)});
like($err, qr/IK003/, 'the late owner\'s finish is IK003');
is($coord->safe_psql('postgres', q{SELECT outcome, attempt FROM h_finish('f-2', '2', 2)}),
	'completed|2', 'the new owner finishes');

# fail releases the key
$coord->safe_psql('postgres', q{SELECT h_begin('f-3')});
$coord->safe_psql('postgres', q{SELECT h_fail('f-3')});
is($coord->safe_psql('postgres', q{SELECT outcome, attempt FROM h_begin('f-3')}),
	'started|2', 'after fail the next begin starts attempt 2');

# wait => false on a key whose row an open transaction holds
$coord->safe_psql('postgres', q{SELECT h_begin('f-4'); SELECT h_fail('f-4')});
my $holder = IdemCitus::session($coord);
is(IdemCitus::query($holder, "BEGIN; SELECT outcome, attempt FROM idem_begin('f-4')"),
	'started|2', 'an open transaction takes a released key over');
is($coord->safe_psql('postgres', q{SELECT outcome FROM h_begin('f-4', w => false)}),
	'in_progress', 'wait => false in a distributed function answers at once: in_progress');
is($coord->safe_psql('postgres', q{SELECT outcome FROM idem_begin('f-4', wait => false)}),
	'in_progress', 'and so does wait => false through the coordinator');
IdemCitus::query($holder, 'ROLLBACK');
IdemCitus::close_session($holder);
is($coord->safe_psql('postgres', q{SELECT outcome, attempt FROM h_begin('f-4', w => false)}),
	'started|2', 'and starts once the holder rolled back');

# once
is($coord->safe_psql('postgres', q{SELECT h_once('f-once')}), 't', 'once is true the first time');
is($coord->safe_psql('postgres', q{SELECT h_once('f-once')}), 'f', 'and false after');

# ------------------------------------------ owners are not judged across nodes

# An attempt begun on one node and retried on another: the other node
# cannot see the first one's sessions, so it must not take the attempt over
# while the lease runs (owner liveness is on by default here)
my $owner = IdemCitus::session($coord);
is(IdemCitus::query($owner, q{SELECT outcome FROM idem_begin('own-1', lease => '1 hour')}),
	'started', 'a session on the coordinator begins an attempt and stays');
is($coord->safe_psql('postgres', q{SELECT outcome, attempt FROM h_begin('own-1')}),
	'in_progress|1', 'a retry on the shard\'s worker is held, not taken over');
is($coord->safe_psql('postgres', q{SELECT outcome, attempt FROM h_begin('own-2', lease => '1 hour')}),
	'started|1', 'an attempt begun in a distributed function');
is(IdemCitus::query($owner, q{SELECT outcome, attempt FROM idem_begin('own-2')}),
	'in_progress|1', 'a retry on the coordinator is held, not taken over');
IdemCitus::close_session($owner);
is($coord->safe_psql('postgres',
		q{SELECT count(*) FROM idem_ledger WHERE key LIKE 'own-%' AND owner IS NOT NULL}),
	'0', 'no owner is recorded on a distributed ledger');

# ------------------------------------------------- concurrent duplicates

my $one_started = 0;
for my $round (1 .. 4)
{
	my (@o, @h);
	for my $i (0 .. 3)
	{
		$o[$i] = '';
		$h[$i] = start(
			[ 'psql', '-X', '-A', '-t', '-q', '-d', $coord->connstr('postgres'),
				'-c', "SELECT 'R:' || h_begin_hold('race-$round')" ],
			'>', \$o[$i], '2>', \$o[$i]);
	}
	finish($_) for @h;
	my @outcomes = map { /R:(\w+)/ ? $1 : "error: $_" } @o;
	my $started = grep { $_ eq 'started' } @outcomes;
	$one_started++ if $started == 1 && (grep { $_ eq 'in_progress' } @outcomes) == 3;
	diag("round $round: @outcomes") unless $started == 1;
}
is($one_started, 4, 'of four concurrent begins through a distributed function one started, every round');

# ------------------------------------------------------- a payment handler

my %resp;
for my $i (1 .. 10)
{
	$resp{$i} = $coord->safe_psql('postgres', "SELECT pay('p-$i', $i)");
	my $again = $coord->safe_psql('postgres', "SELECT pay('p-$i', $i)");
	$resp{$i} = 'differs' if $again ne $resp{$i};
}
is(scalar(grep { $_ =~ /payment_id/ } values %resp), 10, 'ten payments, each replayed alike');
is($coord->safe_psql('postgres',
		q{SELECT count(*), count(DISTINCT key) FROM payments WHERE key LIKE 'p-%'}),
	'10|10', 'one payment per key');
is($coord->safe_psql('postgres', q{
		SELECT count(*) FROM payments p JOIN idem_ledger l USING (key)
		 WHERE (l.response->>'payment_id')::bigint = p.id AND l.state = 'completed'
		   AND p.node::int = (SELECT nodeport FROM pg_dist_shard_placement
		                       WHERE shardid = get_shard_id_for_distribution_column('idem_ledger', p.key))}),
	'10', 'each payment was made on its key\'s worker, and its key names it');

# ------------------------------------------------------- no shell has rows

for my $n ($coord, @workers)
{
	is($n->safe_psql('postgres',
			q{SELECT pg_relation_size('idem_ledger') + pg_relation_size('payments')}),
		'0', $n->name . ': the shell tables have no rows of their own');
}

# ---------------------------------------------------- the pgTAP kit on it

$coord->safe_psql('postgres', 'CREATE EXTENSION idempotency_tap CASCADE');
my $tap = $coord->safe_psql('postgres', q{
	SET client_min_messages = warning;
	SELECT plan(4);
	SELECT replays($$SELECT pay('t-1', 5)$$, 'the distributed payment replays');
	SELECT is_idempotent($$SELECT pay('t-2', 5)$$, ARRAY['payments']::regclass[],
	                     'a retried distributed payment writes nothing');
	SELECT rejects_changed_request($$SELECT pay('t-3', 5)$$, $$SELECT pay('t-3', 6)$$,
	                               'a changed amount is refused');
	SELECT is_idempotent_concurrently($$SELECT pay('t-4', 5)$$, 4,
	                                  ARRAY['payments']::regclass[],
	                                  'four concurrent distributed payments pay once');
	SELECT * FROM finish();
});
note $tap;
like($tap, qr/^1\.\.4$/m, 'pgTAP: the plan');
for my $n (1 .. 4)
{
	like($tap, qr/^ok $n - /m, "pgTAP: assertion $n passes on the distributed handler");
}
unlike($tap, qr/^not ok/m, 'pgTAP: no assertion fails');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM payments WHERE key LIKE 't-%'}),
	'1', 'the kit left the one committed payment of its concurrent run');

# ------------------------------------------------ await across nodes

# With the library preloaded on the coordinator, a waiter there sleeps on a
# condition variable that only this server's changes wake.  An attempt
# begun in a distributed function and finished on the worker that holds
# its key settles there: the waiter must look again on its own, well before
# a single server's 5 s re-check (it answers in less than 4 s).
$coord->append_conf('postgresql.conf',
	"shared_preload_libraries = 'citus, idempotency'\nidempotency.sweep_interval = '1h'\n");
$coord->restart;
is($coord->safe_psql('postgres', q{SELECT outcome FROM h_begin('aw-1', lease => '1 hour')}),
	'started', 'an attempt begun in a distributed function, on a worker');
my %aw = (in => q{SELECT 'result=' || outcome || '|' || (clock_timestamp() - statement_timestamp() < '4s')
                    FROM idem_begin('aw-1', await => '1 hour');} . "\n",
	out => '');
$aw{h} = start([ 'psql', '-X', '-A', '-t', '-q', '-d', $coord->connstr('postgres') ],
	'<', \$aw{in}, '>', \$aw{out}, '2>', \$aw{out},
	timer($PostgreSQL::Test::Utils::timeout_default));
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
until ($coord->safe_psql('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	 WHERE wait_event_type = 'Extension' AND query LIKE '%aw-1%await%'}) eq 't')
{
	die 'the waiter never slept' if time > $deadline;
	$aw{h}->pump_nb;    # hand psql its input
	Time::HiRes::sleep(0.05);
}
is($by_port{ shard_port('aw-1') }->safe_psql('postgres',
		q{SELECT outcome FROM idem_finish('aw-1', '{"paid": 1}')}),
	'completed', 'the attempt finished on the worker that holds the key');
pump($aw{h}) until $aw{out} =~ /result=\w+\|\w+/;
$aw{in} .= "\\q\n";
finish($aw{h});
like($aw{out}, qr/result=replayed\|true/,
	'the coordinator\'s waiter replays what the worker finished, sooner than a re-check');

done_testing();
