# test/t/035_citus_sweepers.pl: sweepers on every node of a Citus cluster
#
# A coordinator and two workers, every one of them preloading idempotency
# as well as Citus, the ledger distributed by key.  On a worker, the
# ledger's statements go through Citus to every shard, as on the
# coordinator: so the coordinator's sweeper alone sweeps a distributed
# ledger, and a worker's sweeper leaves it, saying so in
# idem_sweeper_status() (state by_coordinator).  Keys that expire on every
# shard are removed, once, by the coordinator.  A database of a worker whose
# ledger Citus does not distribute is swept by that worker as anywhere.
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

my ($coord, @workers) = IdemCitus::cluster(2, q{
shared_preload_libraries = 'citus,idempotency'
idempotency.sweep_interval = '1s'
});
$coord->safe_psql('postgres', q{
	CREATE EXTENSION idempotency;
	SELECT idem_distribute('key');
	SELECT idem_once('sw-' || i, ttl => '1 second') FROM generate_series(1, 200) i;
	SELECT idem_once('kept-' || i) FROM generate_series(1, 10) i;
});

# Shards on both workers hold expiring keys
is($coord->safe_psql('postgres', q{
		SELECT count(DISTINCT p.nodeport)
		  FROM run_command_on_shards('idem_ledger',
		         $$SELECT count(*) FROM %s WHERE key LIKE 'sw-%%'$$) r
		  JOIN pg_dist_shard_placement p USING (shardid)
		 WHERE r.result::int > 0}),
	'2', 'keys that expire are on shards of both workers');

# A database of worker1 with the extension and no Citus table
$workers[0]->safe_psql('postgres', 'CREATE DATABASE plain');
$workers[0]->safe_psql('plain', q{
	CREATE EXTENSION idempotency;
	SELECT idem_once('local-' || i, ttl => '1 second') FROM generate_series(1, 30) i;
});

ok($coord->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM idem_ledger WHERE key LIKE 'sw-%'}),
	'every shard\'s expired keys are removed');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM idem_ledger'), '10',
	'and the keys that live are kept');

ok($coord->poll_query_until('postgres', q{
		SELECT state = 'idle' AND removed_total = 200 AND expired_waiting = 0
		  FROM idem_sweeper_status() WHERE datname = 'postgres'}),
	'the coordinator\'s sweeper removed them, all 200, and says so');

for my $w (@workers)
{
	ok($w->poll_query_until('postgres', q{
			SELECT state = 'by_coordinator' AND removed_total = 0
			  FROM idem_sweeper_status() WHERE datname = 'postgres'}),
		$w->name . '\'s sweeper leaves the distributed ledger to the coordinator')
	  or diag($w->safe_psql('postgres', 'SELECT * FROM idem_sweeper_status()'));
}

ok($workers[0]->poll_query_until('plain', q{
		SELECT count(*) = 0 FROM idem_ledger}),
	'worker1 sweeps its own database, whose ledger Citus does not distribute');
is($workers[0]->safe_psql('plain', q{
		SELECT state || ':' || removed_total FROM idem_sweeper_status() WHERE datname = 'plain'}),
	'idle:30', 'and its status there is a sweeper\'s like any other');

done_testing();
