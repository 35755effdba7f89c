# test/t/021_unlogged_crash.pl: what an UNLOGGED ledger loses, and what it keeps
#
# idem_set_logged(false) trades crash safety for speed, as the README says.
# This test shows the trade: a clean restart keeps the keys, but a crash
# (immediate shutdown) empties the ledger, so a retry of a completed request
# runs again and pays twice; a streaming standby cannot read the ledger at
# all, and after a failover every key is forgotten.  Switching back with
# idem_set_logged(true) makes the keys survive the same crash.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $driver = "$ENV{TESTDIR}/test/driver";
$driver = 'test/driver' unless -d $driver;

my $node = PostgreSQL::Test::Cluster->new('unlogged');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', "log_statement = none\n");
$node->start;
$node->safe_psql('postgres', slurp_file("$driver/schema.sql"));

$node->safe_psql('postgres', 'SELECT idem_set_logged(false)');
is( $node->safe_psql(
		'postgres', "SELECT relpersistence FROM pg_class WHERE oid = 'idem_ledger'::regclass"),
	'u',
	'idem_set_logged(false) makes the ledger UNLOGGED');

# A streaming standby, from a backup taken before any key exists
$node->backup('before_keys');
my $standby = PostgreSQL::Test::Cluster->new('unlogged_standby');
$standby->init_from_backup($node, 'before_keys', has_streaming => 1);
$standby->start;

# Pay 50 keys; each pays once and replays afterwards
$node->safe_psql('postgres', 'CALL retry_all(50)');
$node->safe_psql('postgres', 'CALL retry_all(50)');
is( $node->safe_psql(
		'postgres', q{
		SELECT count(*), count(DISTINCT key),
		       (SELECT count(*) FROM idem_ledger WHERE state = 'completed')
		  FROM payments}),
	'50|50|50',
	'50 keys paid once each, and their duplicates replayed');

# ------------------------------------------------------------- clean restart

$node->restart;
is($node->safe_psql('postgres', 'SELECT count(*) FROM idem_ledger'),
	'50', 'a clean shutdown and restart keeps an UNLOGGED ledger');

# --------------------------------------------------------------- the standby

$node->wait_for_catchup($standby, 'replay', $node->lsn('insert'));
is($standby->safe_psql('postgres', 'SELECT count(*) FROM payments'),
	'50', 'the standby has the payments (a logged table)');
my ($rc, $out, $err) =
  $standby->psql('postgres', 'SELECT count(*) FROM idem_ledger');
isnt($rc, 0, 'the standby cannot read an UNLOGGED ledger');
like($err, qr/cannot access temporary or unlogged relations during recovery/,
	'... because unlogged relations are not replicated');
# nor can the API there: each call fails cleanly, and the standby stays up
for my $call (
	q{idem_begin('k1', '{"amount": 1}', 'storm')},
	q{idem_begin('new', '{"amount": 1}', 'storm', wait => false)},
	q{idem_once('new once')},
	q{idem_finish('k1', scope => 'storm')},
	q{idem_fail('k1', 'storm')})
{
	($rc, $out, $err) = $standby->psql('postgres', "\\set VERBOSITY verbose\nSELECT $call");
	like($err, qr/ERROR:  (0A000|25006):/, "on the standby, $call fails cleanly");
}
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is still up');

# ----------------------------------------------------------------- the crash

$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', 'SELECT count(*) FROM idem_ledger'),
	'0', 'a crash empties an UNLOGGED ledger (crash recovery resets it)');
is( $node->safe_psql(
		'postgres', "SELECT relpersistence FROM pg_class WHERE oid = 'idem_ledger'::regclass"),
	'u',
	'the ledger stays UNLOGGED');

# So a duplicate of a request completed before the crash is not caught
is( $node->safe_psql(
		'postgres', q{
		BEGIN;
		SELECT outcome, attempt FROM idem_begin('k1', '{"amount": 1}', 'storm');
		ROLLBACK;}),
	'started|1',
	'after the crash a completed key starts afresh');
$node->safe_psql('postgres', "SELECT pay('k2', 2)");
is($node->safe_psql('postgres', "SELECT count(*) FROM payments WHERE key = 'k2'"),
	'2', 'and a retry of a completed payment pays a second time');

# ---------------------------------------------------------------- failover

$standby->promote;
is($standby->safe_psql('postgres', 'SELECT count(*) FROM idem_ledger'),
	'0', 'a promoted standby starts with an empty ledger');
$standby->safe_psql('postgres', "SELECT pay('k3', 3)");
is($standby->safe_psql('postgres', "SELECT count(*) FROM payments WHERE key = 'k3'"),
	'2', 'after a failover a retry of a completed payment pays again');
$standby->stop;

# ------------------------------------------------- back to a logged ledger

$node->safe_psql('postgres', 'SELECT idem_set_logged(true)');
$node->safe_psql('postgres', 'CALL retry_all(50)');
my $before = $node->safe_psql('postgres',
	'SELECT count(*), md5(string_agg(key || response::text, \',\' ORDER BY key)) FROM idem_ledger');
$node->stop('immediate');
$node->start;
is( $node->safe_psql(
		'postgres', "SELECT relpersistence FROM pg_class WHERE oid = 'idem_ledger'::regclass"),
	'p',
	'idem_set_logged(true) makes the ledger logged again');
is( $node->safe_psql(
		'postgres',
		'SELECT count(*), md5(string_agg(key || response::text, \',\' ORDER BY key)) FROM idem_ledger'),
	$before,
	'a logged ledger keeps every key through the same crash');
is( $node->safe_psql(
		'postgres', q{
		SELECT outcome FROM idem_begin('k5', '{"amount": 5}', 'storm')}),
	'replayed',
	'and duplicates replay after it');

$node->stop;
done_testing();
