# test/t/034_citus_nowait.pl: wait => false on a ledger that Citus distributes
#
# A coordinator and two workers, the ledger distributed by key.  A first
# begin of a key sits in a transaction that has not committed: no look can
# see its row from another node, and an insertion of the same key queues
# behind it on the shard.  A begin with wait => false must answer
# in_progress at once all the same: through the coordinator, in a single
# statement and in a transaction block, and inside a distributed function
# that runs on the shard's worker.  What the caller's transaction does next
# keeps its own lock_timeout, on the coordinator and on the shard: a begin
# with wait => true in the same transaction waits for the key as always.
#
# Skipped when Citus is not installed for the server under test
# (scripts/citus.sh builds it); failed instead with IDEM_REQUIRE_CITUS=1, as
# in CI.

use strict;
use warnings;

use lib 'test/perl';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemCitus;

IdemCitus::skip_unless_installed();

# Sessions here begin an attempt and end: the lease alone holds it
my ($coord, @workers) = IdemCitus::cluster(2, "idempotency.owner_liveness = off\n");
$coord->safe_psql('postgres', q{
	CREATE EXTENSION idempotency;
	SELECT idem_distribute('key');
	CREATE FUNCTION h_begin(k text, w boolean) RETURNS text LANGUAGE plpgsql
	AS $$ BEGIN RETURN (idem_begin(k, wait => w)).outcome; END $$;
	SELECT create_distributed_function('h_begin(text,boolean)',
	       distribution_arg_name => '$1', colocate_with => 'idem_ledger');
});

# The worker that holds key's shard
sub shard_node
{
	my ($key) = @_;
	my $port = $coord->safe_psql('postgres',
		"SELECT nodeport FROM pg_dist_shard_placement"
		  . " WHERE shardid = get_shard_id_for_distribution_column('idem_ledger', '$key')");
	my ($w) = grep { $_->port == $port } @workers;
	return $w;
}

# The first begin of each key, left uncommitted in its own session
my $owner = IdemCitus::session($coord);
is(IdemCitus::query($owner, "BEGIN; SELECT outcome FROM idem_begin('nw-1')"),
	'started', 'the owner begins nw-1 and keeps its transaction open');

# The caller gives up with an error rather than hang if it queues
my $caller = IdemCitus::session($coord);
IdemCitus::query($caller, "SET statement_timeout = '60s'");

is(IdemCitus::query($caller,
		"SELECT outcome, attempt IS NULL FROM idem_begin('nw-1', wait => false)"),
	'in_progress|t', 'a single statement: in_progress at once, no attempt');
is(IdemCitus::query($caller, "SELECT h_begin('nw-1', false)"),
	'in_progress', 'inside a distributed function on the shard\'s worker: in_progress');
is(IdemCitus::query($caller, "SELECT outcome FROM idem_begin('nw-new', wait => false)"),
	'started', 'a key nobody writes is begun');
is($coord->safe_psql('postgres', "SELECT state FROM idem_ledger WHERE key = 'nw-new'"),
	'in_progress', 'and its row committed');

# In a transaction block: in_progress at once, then the transaction's own
# statements are as they were
is(IdemCitus::query($caller,
		"BEGIN; SELECT outcome FROM idem_begin('nw-1', wait => false)"),
	'in_progress', 'in a transaction block: in_progress at once');
is(IdemCitus::query($caller, 'SHOW lock_timeout'), '0',
	'the transaction\'s lock_timeout is its own again on the coordinator');
IdemCitus::start_query($caller, "SELECT outcome FROM idem_begin('nw-1')");
my $worker = shard_node('nw-1');
ok( $worker->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"),
	'and on the shard: a begin with wait => true in the same transaction waits for the owner');
IdemCitus::query($owner, "SELECT idem_finish('nw-1', '{\"id\": 1}'); COMMIT");
is(IdemCitus::collect($caller), 'replayed', 'which commits, and the waiter replays');
IdemCitus::query($caller, 'COMMIT');

# A first begin that rolls back leaves the key free
IdemCitus::query($owner, "BEGIN; SELECT idem_begin('nw-2')");
is(IdemCitus::query($caller, "SELECT outcome FROM idem_begin('nw-2', wait => false)"),
	'in_progress', 'nw-2 is in_progress while its first begin is open');
IdemCitus::query($owner, 'ROLLBACK');
is(IdemCitus::query($caller, "SELECT outcome FROM idem_begin('nw-2', wait => false)"),
	'started', 'and started once that begin rolled back');

# A caller's own SET LOCAL lock_timeout, which Citus sends to the shard
# when asked to, is the one in force after a begin that would not wait
IdemCitus::query($owner, "BEGIN; SELECT idem_begin('nw-3')");
is(IdemCitus::query($caller, q{
	BEGIN;
	SET LOCAL citus.propagate_set_commands = 'local';
	SET LOCAL lock_timeout = '100ms';
	SELECT outcome FROM idem_begin('nw-3', wait => false)}),
	'in_progress', 'with a lock_timeout of the caller\'s own: in_progress');
like(IdemCitus::query($caller, "SELECT outcome FROM idem_begin('nw-3'); ROLLBACK"),
	qr/lock timeout/,
	'and a waiting begin after it keeps the caller\'s 100ms on the shard');
IdemCitus::query($owner, 'ROLLBACK');

is($coord->safe_psql('postgres',
		"SELECT string_agg(key || ':' || state, ',' ORDER BY key) FROM idem_ledger"),
	'nw-1:completed,nw-2:in_progress,nw-new:in_progress',
	'the ledger holds what committed, once each');

IdemCitus::close_session($_) for $owner, $caller;
done_testing();
