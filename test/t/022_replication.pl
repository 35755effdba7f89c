# test/t/022_replication.pl: a logged ledger survives a failover
#
# A primary with a logged ledger streams to a standby.  The standby sees the
# keys (read-only: it cannot begin, since a begin writes).  The primary dies
# (immediate shutdown) and the standby is promoted: every completed key
# replays its response there; an attempt that a vanished worker left in
# progress is taken over at once (its session is gone with the old primary),
# its old owner's late finish meeting IK003; a released attempt starts
# afresh; an attempt whose transaction had not committed at the failover
# never happened.  Last, what asynchronous replication cannot promise: a
# standby that had not received a commit loses that key, but always together
# with the business rows of its transaction, so a retry runs it once more on
# the new primary and pays once there.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $driver = "$ENV{TESTDIR}/test/driver";
$driver = 'test/driver' unless -d $driver;

# Run SQL on a node and return the SQLSTATE of its error, or 'ok'
sub sqlstate_of
{
	my ($node, $sql) = @_;
	my ($rc, $out, $err) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return 'ok' if $rc == 0;
	return $1 if $err =~ /ERROR:  ([0-9A-Z]{5}):/;
	return "rc=$rc: $err";
}

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "log_statement = none\n");
$primary->start;
$primary->safe_psql('postgres', slurp_file("$driver/schema.sql"));

# The standby starts from a backup with no keys: every key reaches it by
# streaming
$primary->backup('empty');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'empty', has_streaming => 1);
$standby->start;

# 100 keys completed, some after a released attempt
$primary->safe_psql('postgres', q{
	CALL pay_lease('k7', 7, 'fail');
	CALL pay_lease('k8', 8, 'fail');
	CALL retry_all(100);
	CALL retry_all(100);
});
# a lease-mode worker that committed its attempt and vanished
$primary->safe_psql('postgres', "CALL pay_lease('k101', 101, 'vanish')");
# a released attempt
$primary->safe_psql('postgres', "CALL pay_lease('k102', 102, 'fail')");
# an attempt whose transaction is still open when the primary dies
my $open = $primary->background_psql('postgres');
$open->query_safe(q{
	BEGIN;
	SELECT pay('k103', 103, false);
});

my $ledger_sql = q{
	SELECT count(*), md5(string_agg(concat_ws('|', scope, key, state, status,
	           response::text, attempt, created_at, expires_at, lease_until,
	           fingerprint), ',' ORDER BY scope, key))
	  FROM idem_ledger};
my $ledger = $primary->safe_psql('postgres', $ledger_sql);
my $payments = $primary->safe_psql('postgres',
	"SELECT count(*), md5(string_agg(id || key || attempt, ',' ORDER BY id)) FROM payments");
like($ledger, qr/^102\|/, 'the primary holds 102 keys');

$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($standby->safe_psql('postgres', $ledger_sql),
	$ledger, 'the standby has every key, row for row');
# A standby is read-only: a begin that would write fails with 25006, like
# any write there.  (Answering a completed key with its replay writes
# nothing, so a standby may do that; it must replay the right response.)
is(sqlstate_of($standby, q{SELECT * FROM idem_begin('new on standby', '{"amount": 1}', 'storm')}),
	'25006', 'a standby cannot begin a new key (read-only transaction)');
is(sqlstate_of($standby, q{SELECT idem_once('new once on standby')}),
	'25006', 'nor record one with idem_once');
my ($rc, $replay) = $standby->psql('postgres',
	q{SELECT response->>'key' FROM idem_begin('k1', '{"amount": 1}', 'storm')});
ok($rc != 0 || $replay eq 'k1',
	'a completed key on a standby is either refused or replayed with its response');

# ------------------------------------------------------------------ failover

$primary->stop('immediate');
$open->quit;    # its connection died with the primary
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby did not leave recovery';
my $new = $standby;

is($new->safe_psql('postgres', $ledger_sql),
	$ledger, 'the promoted standby has every committed key, row for row');
is( $new->safe_psql(
		'postgres',
		"SELECT count(*), md5(string_agg(id || key || attempt, ',' ORDER BY id)) FROM payments"),
	$payments,
	'and every payment');

# Every completed key replays its stored response on the new primary
is( $new->safe_psql(
		'postgres', q{
		SELECT count(*) FROM generate_series(1, 100) AS k,
		       LATERAL idem_begin('k' || k, jsonb_build_object('amount', k), 'storm') AS r,
		       payments p
		 WHERE p.key = 'k' || k
		   AND r.outcome = 'replayed' AND r.status = 201
		   AND r.response = jsonb_build_object('payment_id', p.id, 'key', p.key)
		   AND r.attempt = p.attempt}),
	'100',
	'every completed key replays its response on the new primary');
is( $new->safe_psql(
		'postgres', q{
		SELECT string_agg(key || ':' || attempt, ',' ORDER BY key)
		  FROM idem_ledger WHERE key IN ('k7', 'k8')}),
	'k7:2,k8:2',
	'keys completed after a released attempt keep their attempt number');

# The detached attempt: its session is gone (it ended on the old primary),
# so a retry takes it over at once, under a lease that has not lapsed
is( $new->safe_psql(
		'postgres', q{
		SELECT lease_until > now() FROM idem_ledger WHERE key = 'k101'}),
	't',
	"the detached attempt's lease still runs");
is($new->safe_psql('postgres', q{SELECT pay('k101', 101)->>'key'}),
	'k101',
	'a retry takes the attempt of the gone owner over at once and completes it');
is(sqlstate_of($new, q{SELECT idem_finish('k101', '{}', 200, 'storm', 1)}),
	'IK003', "the vanished owner's late finish meets IK003");
is( $new->safe_psql(
		'postgres', q{
		SELECT l.state, l.attempt, p.attempt, count(*) OVER ()
		  FROM idem_ledger l JOIN payments p USING (key)
		 WHERE key = 'k101'}),
	'completed|2|2|1',
	'k101 is paid once, by attempt 2');

# The released attempt starts afresh; the uncommitted one never happened
is( $new->safe_psql(
		'postgres', q{
		SELECT outcome, attempt FROM idem_begin('k102', '{"amount": 102}', 'storm')}),
	'started|2',
	'a released attempt starts afresh with attempt 2');
is( $new->safe_psql(
		'postgres', q{
		SELECT outcome, attempt FROM idem_begin('k103', '{"amount": 103}', 'storm')}),
	'started|1',
	'an attempt uncommitted at the failover is absent on the new primary');
is($new->safe_psql('postgres', "SELECT count(*) FROM payments WHERE key = 'k103'"),
	'0', '... and so is its payment');

# amcheck on the promoted node
$new->safe_psql('postgres', 'CREATE EXTENSION amcheck');
is( $new->safe_psql(
		'postgres', q{
		SELECT bt_index_parent_check('idem_ledger_pkey', heapallindexed => true);
		SELECT count(*) FROM verify_heapam('idem_ledger')}),
	"\n0",
	'amcheck finds the promoted ledger sound');

# ------------------------- a commit the standby never received (asynchronous)

$new->backup('before_late');
my $late_standby = PostgreSQL::Test::Cluster->new('late_standby');
$late_standby->init_from_backup($new, 'before_late', has_streaming => 1);
$late_standby->start;
$new->safe_psql('postgres', "SELECT pay('k200', 200)");
$new->wait_for_catchup($late_standby, 'replay', $new->lsn('insert'));
$late_standby->stop;    # the standby falls behind ...
$new->safe_psql('postgres', "SELECT pay('k201', 201)");
is($new->safe_psql('postgres', "SELECT state FROM idem_ledger WHERE key = 'k201'"),
	'completed', 'k201 completed on the primary');
$new->stop('immediate');    # ... and the primary dies before it catches up
$late_standby->start;
$late_standby->promote;
$late_standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the late standby did not leave recovery';
is( $late_standby->safe_psql(
		'postgres', q{
		SELECT (SELECT count(*) FROM idem_ledger WHERE key = 'k201'),
		       (SELECT count(*) FROM payments WHERE key = 'k201'),
		       (SELECT state FROM idem_ledger WHERE key = 'k200')}),
	'0|0|completed',
	'a commit the standby never received is lost, key and payment together');
$late_standby->safe_psql('postgres', "SELECT pay('k201', 201)");
is( $late_standby->safe_psql(
		'postgres', q{
		SELECT count(*), min(attempt) FROM payments WHERE key = 'k201'}),
	'1|1',
	'the retry runs it again on the new primary, and pays once there');
$late_standby->stop;
done_testing();
