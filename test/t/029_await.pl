# test/t/029_await.pl: await, with the library preloaded
#
# idem_begin(..., await => ...) sleeps on a condition variable in shared
# memory (src/await.c) until the key settles.  With the library preloaded:
# fifty sessions await one committed attempt, use no CPU while they wait,
# and all replay the same response as soon as the owner finishes; a release
# wakes a waiter who takes over; so does the owner's termination (as owner
# liveness does); a waiter cancelled with pg_cancel_backend fails with 57014
# and changes nothing.  Each wake must come well before the waiters' own
# periodic look (every 5 s), which shows that the wake, not the look, ended
# the wait.  (Without preloading waiters look every 100 ms: sql/await.sql
# and test/specs/await.spec run either way.)
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $WAITERS = 50;

my $node = PostgreSQL::Test::Cluster->new('await');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'idempotency'\nmax_connections = 80\n"
	  . "idempotency.sweep_interval = 0\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION idempotency');

# A psql session that stays connected; returns its harness, buffers and pid
sub session
{
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', '-' ],
		'<', \$in, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$in .= "SELECT 'pid=' || pg_backend_pid();\n";
	$h->pump until $out =~ /^pid=(\d+)$/m;
	my $s = { h => $h, in => \$in, out => \$out, err => \$err, pid => $1 };
	${ $s->{out} } = '';
	return $s;
}

# Send one statement to a session without waiting for its result; what the
# session printed before is forgotten
sub send_sql
{
	my ($s, $sql) = @_;
	${ $s->{out} } = '';
	${ $s->{err} } = '';
	${ $s->{in} } .= "$sql\n";
	$s->{h}->pump_nb;
}

# Wait until a session has printed a line matching re; returns the match
sub wait_output
{
	my ($s, $re) = @_;
	$s->{h}->pump until ${ $s->{out} } =~ $re || ${ $s->{err} } =~ $re;
	return $1;
}

# Wait until n backends sleep in await on a key, feeding the given sessions
# their input meanwhile
sub wait_sleeping
{
	my ($key, $n, @sessions) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		$_->{h}->pump_nb for @sessions;
		return
		  if $node->safe_psql('postgres', qq{
			SELECT count(*) = $n FROM pg_stat_activity
			 WHERE wait_event_type = 'Extension' AND query LIKE '%$key%await%'})
		  eq 't';
		Time::HiRes::sleep(0.05);
	}
	die "$n waiters never slept on $key";
}

my $await_sql = sub {
	my ($key) = @_;
	return "SELECT 'result=' || outcome || '|' || coalesce(response::text, '') || '|' || attempt"
	  . " FROM idem_begin('$key', await => '5 minutes');";
};

# CPU time (user + system, in clock ticks) of the given processes
sub cpu_ticks
{
	my $total = 0;
	for my $pid (@_)
	{
		open my $fh, '<', "/proc/$pid/stat" or return undef;
		my $stat = <$fh>;
		close $fh;
		$stat =~ s/^.*\) //;
		my @f = split / /, $stat;
		$total += $f[11] + $f[12];
	}
	return $total;
}

# ------------------------------------------------ fifty waiters, one finish
my $owner = session();
send_sql($owner,
	"SELECT 'begun=' || outcome FROM idem_begin('pay-1', lease => '1 hour');");
wait_output($owner, qr/^begun=(\w+)$/m);

my @waiters = map { session() } 1 .. $WAITERS;
send_sql($_, $await_sql->('pay-1')) for @waiters;
wait_sleeping('pay-1', $WAITERS, @waiters);
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_shmem_allocations WHERE name = 'idempotency await'"),
	'1',
	'they sleep on condition variables in shared memory');

SKIP:
{
	my $before = cpu_ticks(map { $_->{pid} } @waiters);
	skip 'no /proc to read CPU time from', 1 unless defined $before;
	sleep 2;	# a measurement over time: nothing to poll for
	my $used = cpu_ticks(map { $_->{pid} } @waiters) - $before;
	cmp_ok($used, '<=', 2,
		"$WAITERS waiters used no CPU while they waited ($used ticks in 2 s)");
}

my $t0 = time;
send_sql($owner,
	"SELECT 'done=' || outcome FROM idem_finish('pay-1', '{\"paid\": 1}', 201);");
wait_output($owner, qr/^done=(\w+)$/m);
my %answers;
for my $w (@waiters)
{
	$answers{ wait_output($w, qr/^result=(.*)$/m) }++;
}
my $took = time - $t0;
is_deeply(
	\%answers,
	{ 'replayed|{"paid": 1}|1' => $WAITERS },
	"all $WAITERS waiters replay the stored response");
cmp_ok($took, '<', 4,
	sprintf('woken by the finish, not by their periodic look (%.3f s)', $took));

# ----------------------------------------------- a release: the waiter takes over
my $waiter = $waiters[0];
send_sql($owner,
	"SELECT 'begun=' || outcome FROM idem_begin('pay-2', lease => '1 hour');");
wait_output($owner, qr/^begun=(\w+)$/m);
send_sql($waiter, $await_sql->('pay-2'));
wait_sleeping('pay-2', 1, $waiter);
$t0 = time;
send_sql($owner, "SELECT 'failed=' || idem_fail('pay-2')::text;");
is(wait_output($waiter, qr/^result=(.*)$/m), 'started||2',
	'a release wakes the waiter, who takes over with attempt 2');
$took = time - $t0;
cmp_ok($took, '<', 4, sprintf('at once (%.3f s)', $took));

# ------------------------------------ the owner terminated: the waiter takes over
my $doomed = session();
send_sql($doomed,
	"SELECT 'begun=' || outcome FROM idem_begin('pay-3', lease => '1 hour');");
wait_output($doomed, qr/^begun=(\w+)$/m);
send_sql($waiter, $await_sql->('pay-3'));
wait_sleeping('pay-3', 1, $waiter);
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($doomed->{pid})");
is(wait_output($waiter, qr/^result=(.*)$/m), 'started||2',
	"the owner's termination wakes the waiter, who takes over with attempt 2");
$took = time - $t0;
cmp_ok($took, '<', 4, sprintf('at once (%.3f s)', $took));
$doomed->{h}->finish;
is( $node->safe_psql('postgres',
		"SELECT takeovers_owner_gone FROM idem_stats"),
	'1', 'counted as a takeover from a gone owner');

# --------------------------------------------------- a cancelled waiter
send_sql($owner,
	"SELECT 'begun=' || outcome FROM idem_begin('pay-4', lease => '1 hour');");
wait_output($owner, qr/^begun=(\w+)$/m);
send_sql($waiter, $await_sql->('pay-4'));
wait_sleeping('pay-4', 1, $waiter);
$node->safe_psql('postgres', "SELECT pg_cancel_backend($waiter->{pid})");
like(wait_output($waiter, qr/(ERROR: .*)$/m),
	qr/canceling statement due to user request/,
	'pg_cancel_backend interrupts the wait');
is( $node->safe_psql('postgres',
		"SELECT state || '|' || attempt FROM idem_ledger WHERE key = 'pay-4'"),
	'in_progress|1', 'and nothing changed');
send_sql($waiter, "SELECT 'alive=' || 1;");
is(wait_output($waiter, qr/^alive=(\d)$/m), '1', 'the session goes on');

is( $node->safe_psql('postgres',
		"SELECT awaits || '|' || await_timeouts FROM idem_stats"),
	($WAITERS + 3) . '|0', 'every wait counted in awaits, none timed out');

$_->{h}->finish for ($owner, @waiters);
$node->stop;
done_testing();
