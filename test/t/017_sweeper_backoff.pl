# A sweeper whose passes fail backs off, by one policy for both kinds of
# sweeper (those the launcher starts, and the one idem_sweeper_start starts):
# it never tries again sooner than idempotency.sweep_interval after its last
# try, and doubles the wait after each failure in a row; an interval longer
# than the back-off's cap is never cut short, also when a reload brings it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::Local qw(timegm);

# Each try of a pass runs into this trigger: it counts the try in a sequence
# (which a rollback does not undo), logs it with the time, and fails the pass
my $refuse_deletes = q{
CREATE SEQUENCE public.sweep_attempts;
CREATE FUNCTION public.refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE LOG 'sweep attempt %', nextval('public.sweep_attempts');
    RAISE EXCEPTION 'the ledger refuses deletes';
END
$$;
CREATE TRIGGER refuse_delete BEFORE DELETE ON idem_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_delete();
};

# Two servers, one per kind of sweeper, each sweeping every second
my %node;
$node{launcher} = PostgreSQL::Test::Cluster->new('backoff_launcher');
$node{launcher}->init;
$node{launcher}->append_conf(
    'postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
});
$node{started} = PostgreSQL::Test::Cluster->new('backoff_started');
$node{started}->init;
$node{started}->append_conf('postgresql.conf',
    q{idempotency.sweep_interval = '1s'});
$_->start for values %node;
my %log_offset = map { $_ => -s $node{$_}->logfile } keys %node;

# The launcher hears of the extension when the transaction that creates it
# commits, and sweeps at once: the trigger is there from the first pass
$node{launcher}->safe_psql('postgres', 'CREATE DATABASE app');
$node{launcher}->safe_psql('app',
    "BEGIN; CREATE EXTENSION idempotency; $refuse_deletes COMMIT;");
$node{started}->safe_psql('postgres', 'CREATE DATABASE app');
$node{started}->safe_psql('app',
    "CREATE EXTENSION idempotency; $refuse_deletes");
$node{started}->safe_psql('app', 'SELECT idem_sweeper_start()');

sub attempts
{
    my ($kind) = @_;
    return $node{$kind}->safe_psql('app',
        'SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM sweep_attempts');
}

# The times of the tries, in seconds, from the server log
sub attempt_times
{
    my ($kind) = @_;
    my $log = slurp_file($node{$kind}->logfile, $log_offset{$kind});
    my @times;
    while ($log =~
        /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(\.\d+) \S+ \[\d+\] .*?LOG:  sweep attempt (\d+)$/mg)
    {
        $times[ $8 - 1 ] = timegm($6, $5, $4, $3, $2 - 1, $1) + $7;
    }
    return @times;
}

# Five tries in a row fail: after waits of at least 1, 2, 4 and 8 seconds
my $tries = 5;
for my $kind (sort keys %node)
{
    $node{$kind}->poll_query_until('app',
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END >= $tries FROM sweep_attempts")
      or die "$kind: the sweeper did not try $tries times";
}
for my $kind (sort keys %node)
{
    my @times = attempt_times($kind);
    my @gaps = map { sprintf('%.3f', $times[$_] - $times[ $_ - 1 ]) } 1 .. $tries - 1;
    my @short = grep { $gaps[$_] < 1 - 0.002 } 0 .. $#gaps;
    is(scalar(@short), 0,
        "$kind: a failing sweeper never tries again within sweep_interval (waits: @gaps)");
    my @undoubled = grep { $gaps[$_] < 2**$_ - 0.002 } 0 .. $#gaps;
    is(scalar(@undoubled), 0,
        "$kind: and doubles its wait after each failure in a row (waits: @gaps)");
    is( $node{$kind}->safe_psql(
            'app',
            "SELECT state, last_error FROM idem_sweeper_status() "
              . 'WHERE datname = current_database()'),
        'failing|the ledger refuses deletes',
        "$kind: the status says failing, with the error");
    my $logged = () =
      slurp_file($node{$kind}->logfile, $log_offset{$kind}) =~
      /ERROR:  the ledger refuses deletes/g;
    is($logged, 1, "$kind: the error is logged once");
}

# A reload to an interval longer than the back-off's cap (ten minutes): the
# next try, pending after a few seconds of back-off, moves to an hour after
# the last one, and nothing tries before
my $next_pass_after_hour =
    'SELECT next_pass >= last_pass_started + interval \'1 hour\' '
  . 'FROM idem_sweeper_status() WHERE datname = current_database()';
for my $kind (sort keys %node)
{
    $node{$kind}->safe_psql('app',
        "LOAD 'idempotency'; ALTER SYSTEM SET idempotency.sweep_interval = '1h'");
    $node{$kind}->reload;
}
my %count;
for my $kind (sort keys %node)
{
    ok($node{$kind}->poll_query_until('app', $next_pass_after_hour),
        "$kind: after a reload to a one-hour interval the next try is an hour after the last");
    $count{$kind} = attempts($kind);
}

# A sweeper that fails its first pass with the hour's interval: asked to
# sweep now, it tries once, and the next try is an hour away, not capped at
# ten minutes
$node{launcher}->safe_psql('app', 'SELECT idem_sweeper_start()');
$node{started}->safe_psql('app',
    'SELECT idem_sweeper_stop(); SELECT idem_sweeper_start()');
for my $kind (sort keys %node)
{
    $node{$kind}->poll_query_until('app',
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END > $count{$kind} "
          . 'FROM sweep_attempts')
      or die "$kind: no try after idem_sweeper_start";
    ok($node{$kind}->poll_query_until('app', $next_pass_after_hour),
        "$kind: a first failure with a one-hour interval waits an hour");
    is(attempts($kind), $count{$kind} + 1,
        "$kind: one try when asked, none in the meantime");
}

$_->stop for values %node;
done_testing();
