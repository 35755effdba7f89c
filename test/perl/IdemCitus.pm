# test/perl/IdemCitus.pm: a Citus cluster on this machine, for the test/t/03x_citus*.pl files
#
#   use lib 'test/perl';    (the TAP files are run from the tree's root)
#   use IdemCitus;
#   IdemCitus::skip_unless_installed();     (fails instead with IDEM_REQUIRE_CITUS=1)
#   my ($coord, @workers) = IdemCitus::cluster(2, $extra_conf);
#   my $w3 = IdemCitus::node('worker3', $extra_conf);   # then citus_add_node
#   my $s = IdemCitus::session($node);    # one connection held open
#   IdemCitus::query($s, $sql);           # run sql there, return its output
#   IdemCitus::start_query($s, $sql); ...; IdemCitus::collect($s);   # the same, split
#   IdemCitus::close_session($s);
#
# Every node preloads Citus and runs with wal_level = logical, which shard
# moves (the rebalancer) need.  The ledger and the extension are left to
# the test.

package IdemCitus;

use strict;
use warnings;

use IPC::Run qw(start finish pump timer);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Skip the whole file when Citus is not installed for the server under test;
# with IDEM_REQUIRE_CITUS=1 (as CI sets it, having built Citus), fail instead
sub skip_unless_installed
{
	my $pkglibdir = `pg_config --pkglibdir`;
	chomp $pkglibdir;
	my $sharedir = `pg_config --sharedir`;
	chomp $sharedir;
	return if -f "$pkglibdir/citus.so" && -f "$sharedir/extension/citus.control";
	my $why = "Citus is not installed for this server ($pkglibdir): run scripts/citus.sh";
	if (($ENV{IDEM_REQUIRE_CITUS} // '') eq '1')
	{
		plan tests => 1;
		fail("$why; IDEM_REQUIRE_CITUS=1 requires it");
		exit;
	}
	plan skip_all => $why;
	return;
}

# One node with Citus preloaded and created, started
sub node
{
	my ($name, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'citus'
max_prepared_transactions = 20
max_connections = 60
max_worker_processes = 20
citus.node_conninfo = 'sslmode=prefer'
citus.shard_count = 8
log_min_messages = warning
# Citus connects to its own node (the rebalancer's background jobs) here:
# the nodes listen on a Unix socket only
citus.local_hostname = '} . $node->host . qq{'
} . ($extra // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION citus');
	return $node;
}

# Add a worker to the coordinator's cluster
sub add_worker
{
	my ($coord, $worker) = @_;
	$coord->safe_psql('postgres',
		"SELECT citus_add_node('" . $worker->host . "', " . $worker->port . ")");
	return;
}

# A coordinator and n workers, the workers added
sub cluster
{
	my ($n, $extra) = @_;
	my $coord = node('coordinator', $extra);
	$coord->safe_psql('postgres',
		"SELECT citus_set_coordinator_host('" . $coord->host . "', " . $coord->port . ")");
	my @workers = map { node("worker$_", $extra) } 1 .. $n;
	add_worker($coord, $_) for @workers;
	return ($coord, @workers);
}

# A psql session held open on node, fed statement by statement (unaligned,
# tuples only, errors in the output)
sub session
{
	my ($node) = @_;
	my %s = (in => '', out => '', timer => timer($PostgreSQL::Test::Utils::timeout_default));
	$s{h} = start([ 'psql', '-X', '-A', '-t', '-q', '-d', $node->connstr('postgres') ],
		'<', \$s{in}, '>', \$s{out}, '2>', \$s{out}, $s{timer});
	return \%s;
}

# Send sql to a session without waiting for it to end
sub start_query
{
	my ($s, $sql) = @_;
	$s->{marker} = 'done-' . int(rand(1e9));
	$s->{out} = '';
	$s->{in} .= "$sql;\nSELECT '$s->{marker}';\n";
	$s->{h}->pump_nb while length $s->{in};
	return;
}

# Wait for what start_query sent to end, and return what it printed
sub collect
{
	my ($s) = @_;
	my $marker = $s->{marker};
	pump($s->{h}) until $s->{out} =~ /$marker/;
	$s->{out} =~ s/\n?$marker\n?//;
	return $s->{out};
}

# Run sql in a session and return what it printed
sub query
{
	my ($s, $sql) = @_;
	start_query($s, $sql);
	return collect($s);
}

sub close_session
{
	my ($s) = @_;
	$s->{in} .= "\\q\n";
	finish($s->{h});
	return;
}

1;
