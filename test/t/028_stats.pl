# test/t/028_stats.pl: where idem_stats counts
#
# With the library preloaded the counters are the server's, one set per
# database: every session's calls add up, another database counts apart,
# idem_stats_reset() zeroes the current database's only, and the sweeper's
# deletions count too.  Without preloading each session sees its own calls.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('stats');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql($_, 'CREATE EXTENSION idempotency') for qw(postgres other);

# three sessions, one begin each; a fourth reads the counts
$node->safe_psql('postgres', "SELECT idem_begin('k$_')") for 1 .. 3;
is( $node->safe_psql('postgres', 'SELECT started, shared FROM idem_stats'),
	'3|t', "preloaded: every session's begins count, in shared memory");
is($node->safe_psql('other', 'SELECT started FROM idem_stats'),
	'0', 'another database counts apart');

$node->safe_psql('other', "SELECT idem_once('m1'), idem_once('m1')");
$node->safe_psql('other', 'SELECT idem_stats_reset()');
is( $node->safe_psql('postgres', 'SELECT started FROM idem_stats'),
	'3', 'a reset in another database leaves these counts');
is( $node->safe_psql('other',
		'SELECT once_true + once_false, stats_reset > now() - interval \'1 minute\' FROM idem_stats'),
	'0|t', 'idem_stats_reset zeroes the counts of its database and stamps the time');

# the sweeper's deletions count in its database
$node->safe_psql('postgres',
	"SELECT idem_once('s' || g, ttl => '1 hour') FROM generate_series(1, 5) g");
$node->safe_psql('postgres',
	"ALTER SYSTEM SET idempotency.clock_offset = '2 hours'");
$node->reload;
$node->poll_query_until('postgres', 'SELECT keys_swept >= 5 FROM idem_stats')
  or die 'the sweeper did not count its deletions';
pass("the sweeper's deletions count as keys swept");

# without preloading: each session's own
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''\n");
$node->restart;
is( $node->safe_psql('postgres',
		"SELECT idem_begin('n1'); SELECT started, shared FROM idem_stats"),
	"(started,,,1)\n1|f",
	'not preloaded: a session sees its own calls');
is($node->safe_psql('postgres', 'SELECT started FROM idem_stats'),
	'0', 'and a new session starts from zero');

$node->stop;
done_testing();
