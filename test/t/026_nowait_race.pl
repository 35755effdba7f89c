# test/t/026_nowait_race.pl: begin with wait => false never waits
#
# Six sessions call idem_begin(k, wait => false) on one fresh key at the same
# moment, each in a transaction it keeps open.  Exactly one gets 'started'
# and holds the key; every other one must answer 'in_progress' while the
# winner still holds it.  A loser that queued behind the winner's insertion
# would answer only once the winner ended, and the winner ends only after
# all six answered: such a round runs into the time limit and fails.  The
# rounds repeat so that the losers' look at the key and the winner's
# insertion interleave in every order.

use strict;
use warnings;

use IPC::Run qw(start finish);
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sessions = 6;
my $rounds = 40;

my $node = PostgreSQL::Test::Cluster->new('nowait');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION idempotency');

my $all_answered = 0;
my $one_winner = 0;
for my $round (1 .. $rounds)
{
	my (@in, @out, @h);
	my $deadline = time() + 10;
	for my $i (0 .. $sessions - 1)
	{
		$in[$i] = "BEGIN;\nSELECT 'R:' || outcome FROM idem_begin('race-$round', wait => false);\n";
		$out[$i] = '';
		$h[$i] = start(
			[ 'psql', '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
			'<', \$in[$i], '>', \$out[$i], '2>', \$out[$i]);
	}

	# Poll the sessions' output until every one has answered or the time
	# limit has passed.
	my $answered = 0;
	while (time() < $deadline)
	{
		$_->pump_nb for @h;
		$answered = grep { $out[$_] =~ /R:\w+/ } 0 .. $sessions - 1;
		last if $answered == $sessions;
		sleep(0.005);
	}
	$answered = grep { $out[$_] =~ /R:\w+/ } 0 .. $sessions - 1;
	my @outcomes = map { $out[$_] =~ /R:(\w+)/ ? $1 : 'none' } 0 .. $sessions - 1;
	$all_answered++ if $answered == $sessions;
	$one_winner++
	  if (grep { $_ eq 'started' } @outcomes) == 1
	  && (grep { $_ eq 'in_progress' } @outcomes) == $sessions - 1;
	diag("round $round: " . join(' ', @outcomes)) if $answered != $sessions;

	# The winner lets go; the losers end too.
	for my $i (0 .. $sessions - 1)
	{
		$in[$i] .= "ROLLBACK;\n\\q\n";
	}
	for my $i (0 .. $sessions - 1)
	{
		eval { finish($h[$i]); };
		$h[$i]->kill_kill if $@;
	}
}

is($all_answered, $rounds,
	'every session answered while the winner still held the key, in every round');
is($one_winner, $rounds,
	'in every round exactly one session started and the others were told in_progress');
is($node->safe_psql('postgres', 'SELECT count(*) FROM idem_ledger'),
	'0', 'the winners rolled back: no key is left');

$node->stop;
done_testing();
