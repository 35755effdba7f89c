# test/t/033_citus_logged.pl: idem_set_logged on a ledger that Citus distributes
#
# A coordinator and two workers, the ledger distributed by key.
# idem_set_logged(false) makes every shard UNLOGGED, on every worker, and
# the coordinator's table with them; the keys stay and the API goes on
# working; idem_set_logged(true) makes them logged again, keys kept.
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

my ($coord, @workers) = IdemCitus::cluster(2);
$coord->safe_psql('postgres', q{
	CREATE EXTENSION idempotency;
	SELECT idem_distribute('key');
	SELECT idem_once('m-' || i) FROM generate_series(1, 20) i;
	SELECT idem_begin('p-1', '{"amount": 5}');
	SELECT idem_finish('p-1', '{"payment_id": 1}', 201);
});

# relpersistence of every shard placement, as "nodeport:persistence" lines
sub shards
{
	return $coord->safe_psql('postgres', q{
		SELECT string_agg(DISTINCT p.nodeport || ':' || r.result, ',' ORDER BY p.nodeport || ':' || r.result)
		  FROM run_command_on_shards('idem_ledger',
		         $$SELECT relpersistence FROM pg_class WHERE oid = '%s'::regclass$$) r
		  JOIN pg_dist_shard_placement p USING (shardid)});
}

my @ports = sort map { $_->port } @workers;
is(shards(), join(',', map { "$_:p" } @ports), 'every shard on both workers starts logged');

$coord->safe_psql('postgres', 'SELECT idem_set_logged(false)');
is(shards(), join(',', map { "$_:u" } @ports), 'idem_set_logged(false): every shard is UNLOGGED');
is($coord->safe_psql('postgres',
		q{SELECT relpersistence FROM pg_class WHERE oid = 'idem_ledger'::regclass}),
	'u', 'and so is the coordinator\'s table');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM idem_ledger}), '21', 'every key is kept');
is($coord->safe_psql('postgres',
		q{SELECT outcome, status, response FROM idem_begin('p-1', '{"amount": 5}')}),
	'replayed|201|{"payment_id": 1}', 'a completed key replays');
is($coord->safe_psql('postgres', q{SELECT idem_once('m-1'), idem_once('m-new')}),
	'f|t', 'once: a seen message stays seen, a new one is new');

$coord->safe_psql('postgres', 'SELECT idem_set_logged(true)');
is(shards(), join(',', map { "$_:p" } @ports), 'idem_set_logged(true): every shard is logged again');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM idem_ledger}), '22', 'every key is kept');
is($coord->safe_psql('postgres',
		q{SELECT outcome, response FROM idem_begin('p-1', '{"amount": 5}')}),
	'replayed|{"payment_id": 1}', 'the completed key still replays');

done_testing();
