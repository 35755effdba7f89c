# test/t/027_owner_liveness.pl: a dead owner's key is taken over at once
#
# A session begins a key under a long lease and commits.  While it lives,
# however idle, the key is in progress.  Once it is gone the next begin
# takes over at once, attempt one higher, and the old attempt's late finish
# meets IK003: when its backend is terminated, when a backend crash makes
# the server restart every backend, when the server is stopped (immediate)
# and started again, and when a standby is promoted after the owner began
# on the old primary (the standby itself cannot tell, and answers
# in_progress).  A live backend that has the owner's pid but another start
# time (pid reuse) is not the owner.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "restart_after_crash = on\n");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION idempotency');

# A session that stays connected: begins a key, commits, then idles.
# Returns the harness, its stdin and stdout buffers and its backend's pid.
sub owner_session
{
	my ($node, $key) = @_;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', '-' ],
		'<', \$in, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$in .= "SELECT outcome || '|' || attempt || '|' || pg_backend_pid()"
	  . " FROM idem_begin('$key', lease => '1 hour');\n";
	$h->pump until $out =~ /^started\|1\|(\d+)$/m;
	return { h => $h, in => \$in, out => \$out, pid => $1 };
}

sub begin_of
{
	my ($node, $key) = @_;
	return $node->safe_psql('postgres',
		"SELECT outcome || '|' || attempt FROM idem_begin('$key')");
}

sub sqlstate_of
{
	my ($node, $sql) = @_;
	my ($rc, $out, $err) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return 'ok' if $rc == 0;
	return $1 if $err =~ /ERROR:  ([0-9A-Z]{5}):/;
	return "rc=$rc: $err";
}

# ---------------------------------------------------------- a live owner
my $o = owner_session($primary, 'job-1');
is(begin_of($primary, 'job-1'), 'in_progress|1',
	'a live owner holds its key');
$primary->poll_query_until('postgres',
	"SELECT state = 'idle' FROM pg_stat_activity WHERE pid = $o->{pid}")
  or die 'the owner never went idle';
is(begin_of($primary, 'job-1'), 'in_progress|1',
	'an idle owner keeps its key');

# pid reuse: the live backend with the owner's pid started at another time
$primary->safe_psql('postgres', qq{
	CREATE FUNCTION owner_of(pid int, started timestamptz, server timestamptz)
	RETURNS bytea LANGUAGE sql
	AS \$\$ SELECT int4send(pid) || timestamptz_send(started) || timestamptz_send(server) \$\$;
	SELECT idem_begin('reused', lease => '1 hour');
	UPDATE idem_ledger
	   SET owner = owner_of($o->{pid}, a.backend_start - interval '1 second',
	                        pg_postmaster_start_time())
	  FROM pg_stat_activity a WHERE a.pid = $o->{pid} AND key = 'reused';});
is(begin_of($primary, 'reused'), 'started|2',
	'a live backend with the same pid but another start time is not the owner');

# ------------------------------------------------------ a terminated owner
$primary->safe_psql('postgres',
	"SELECT pg_terminate_backend($o->{pid}, 60000)");
$o->{h}->finish;
my $t0 = time;
is(begin_of($primary, 'job-1'), 'started|2',
	'once the owner is terminated the next begin takes over');
my $took = time - $t0;
cmp_ok($took, '<', 1, sprintf('at once (%.3f s)', $took));
is(sqlstate_of($primary, "SELECT idem_finish('job-1', attempt => 1)"),
	'IK003', "the dead owner's late finish meets IK003");
is(sqlstate_of($primary, "SELECT idem_finish('job-1', '{}', attempt => 2)"),
	'ok', 'the new owner finishes');

# ---------------------------------------------------------- a crash restart
# A backend killed with SIGKILL makes the postmaster end every backend and
# start afresh in the same server: the owner is gone, a new backend may be
# given its pid.
$o = owner_session($primary, 'job-crash');
my $victim = owner_session($primary, 'job-victim');
my $log_offset = -s $primary->logfile;
kill 'KILL', $victim->{pid};
# Waited for in the log: until recovery ends, psql may exit before it reads
# its query, and a poll fails with a broken pipe instead of polling again
$primary->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
$primary->wait_for_log(qr/database system is ready to accept connections/, $log_offset);
$o->{h}->finish;
$victim->{h}->finish;
is(begin_of($primary, 'job-crash'), 'started|2',
	'after a crash restart the next begin takes over');

# ---------------------------------------------- an immediate stop and start
$o = owner_session($primary, 'job-stop');
$primary->stop('immediate');
$o->{h}->finish;
$primary->start;
is(begin_of($primary, 'job-stop'), 'started|2',
	'after an immediate stop and a start the next begin takes over');

# ---------------------------------------------------- a promoted standby
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$o = owner_session($primary, 'job-failover');
$primary->wait_for_catchup($standby);
is(begin_of($standby, 'job-failover'), 'in_progress|1',
	'a standby cannot tell whether the owner lives: the key is in progress there');
# the owner is alive on the old primary when the standby is promoted
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
is(begin_of($standby, 'job-failover'), 'started|2',
	'on the promoted standby the next begin takes over at once');
is(sqlstate_of($standby, "SELECT idem_finish('job-failover', attempt => 1)"),
	'IK003', "the old primary's owner meets IK003 on the new primary");

$primary->stop('immediate');
$o->{h}->finish;
$standby->stop;
done_testing();
