# test/perl/IdemStorm.pm: the clients of a retry storm, for test/t/020_retry_storm.pl
# and test/t/032_citus_storm.pl
#
#   use lib 'test/perl';    (the TAP files are run from the tree's root)
#   use IdemStorm;
#   my $storm = IdemStorm->new($node, "$driver/pay.pgbench\@4", ...);
#   $storm->top_up($n, $secs);      # reap, then start clients until $n run
#   $storm->kill_one($node, $where);  # terminate one client backend at random
#   $storm->wait_all;               # wait for every client to end
#   $storm->{launches}, $storm->{kills}, $storm->transactions
#
# Each client is a pgbench process of its own with one connection, named
# 'storm_client', running the weighted scripts for at most $secs seconds
# against $node's postgres database; one whose backend is killed ends, and
# top_up starts another in its place.  Their output goes to pgbench.log in
# the node's base directory.

package IdemStorm;

use strict;
use warnings;

use POSIX qw(WNOHANG);
use PostgreSQL::Test::Utils;

sub new
{
	my ($class, $node, @scripts) = @_;
	return bless {
		node => $node,
		scripts => [@scripts],
		log => $node->basedir . '/pgbench.log',
		pids => {},
		launches => 0,
		kills => 0,
	}, $class;
}

# Start one client for at most $secs seconds
sub launch
{
	my ($self, $secs) = @_;
	my $node = $self->{node};
	my @cmd = (
		'pgbench', '-n', '-c', '1', '-T', $secs,
		'-h', $node->host, '-p', $node->port,
		(map { ('-f', $_) } @{ $self->{scripts} }),
		'postgres');
	my $pid = fork;
	die "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		$ENV{PGAPPNAME} = 'storm_client';
		open(STDOUT, '>>', $self->{log}) or POSIX::_exit(127);
		open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
		exec(@cmd) or POSIX::_exit(127);
	}
	$self->{pids}{$pid} = 1;
	$self->{launches}++;
	return;
}

# Reap the clients that have ended; with $block, wait for all of them
sub reap
{
	my ($self, $block) = @_;
	for my $pid (keys %{ $self->{pids} })
	{
		delete $self->{pids}{$pid} if waitpid($pid, $block ? 0 : WNOHANG) > 0;
	}
	return;
}

# Keep $n clients running: those that ended come back, for at most $secs
sub top_up
{
	my ($self, $n, $secs) = @_;
	$self->reap(0);
	$self->launch($secs) while keys %{ $self->{pids} } < $n;
	return;
}

sub wait_all
{
	my ($self) = @_;
	$self->reap(1);
	return;
}

# Terminate one client backend on $node that matches the SQL condition
# $where (over pg_stat_activity), chosen at random; counted in {kills}
sub kill_one
{
	my ($self, $node, $where) = @_;
	my ($rc, $out) = $node->psql('postgres', qq{
		SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		  FROM (SELECT pid FROM pg_stat_activity
		         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
		           AND $where
		         ORDER BY random() LIMIT 1) AS victim});
	$self->{kills} += $out if $rc == 0 && $out =~ /^\d+$/;
	return;
}

# The transactions the clients reported, summed over their runs
sub transactions
{
	my ($self) = @_;
	return 0 unless -f $self->{log};
	my $out = slurp_file($self->{log});
	my $n = 0;
	$n += $1 while $out =~ /number of transactions actually processed: (\d+)/g;
	return $n;
}

1;
