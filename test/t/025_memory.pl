# test/t/025_memory.pl: a long-lived backend does not grow
#
# One session runs a loop of begins, each pass committed: a new key begun
# and finished, its duplicate replayed, a different request caught as IK001,
# a finish of a completed key caught as IK002, a wait => false begin released
# with idem_fail, an idem_once, an idem_key.  The backend's memory (the sum
# of its memory contexts, and its private resident memory RssAnon from
# /proc) is measured after a warm-up and at the end: it must not grow beyond
# a small tolerance.  Then a loop of begins inside one transaction (replays
# and new keys) must not grow it either.
#
# CI runs 200,000 committed begins and 100,000 in one transaction;
# IDEM_SOAK=1 runs a million of each.  The valgrind check of invalid reads
# and writes is scripts/valgrind.sh (not run here).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $soak = $ENV{IDEM_SOAK} // 0;
my $begins = $soak ? 1_000_000 : 200_000;
my $per_iteration = 4;    # begins in one pass of the loop below
my $iterations = int($begins / $per_iteration);
my $in_one_xact = $soak ? 1_000_000 : 100_000;

# Tolerances: what may legitimately move between two measurements
my $max_context_growth = 256 * 1024;     # bytes, sum of memory contexts
my $max_rss_growth = 2 * 1024 * 1024;    # bytes, RssAnon

my $node = PostgreSQL::Test::Cluster->new('memory');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
log_statement = none
synchronous_commit = off
autovacuum = off
});
$node->start;

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION idempotency;

-- SQLSTATE of a statement, or 'ok'
CREATE FUNCTION sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;

-- n passes of four begins each, one transaction per pass
CREATE PROCEDURE churn(n int, tag text) LANGUAGE plpgsql AS $$
DECLARE
    k text;
    r idem_result;
BEGIN
    FOR i IN 1..n LOOP
        k := tag || i;
        -- a new key, begun and finished
        r := idem_begin(k, jsonb_build_object('amount', i, 'tag', tag), scope => 'mem');
        IF r.outcome <> 'started' THEN
            RAISE EXCEPTION 'begin of % gave %', k, r.outcome;
        END IF;
        r := idem_finish(k, jsonb_build_object('payment', i, 'pad', repeat('p', 100)),
                         201, scope => 'mem');
        -- its duplicate replays
        r := idem_begin(k, jsonb_build_object('tag', tag, 'amount', i), scope => 'mem');
        IF r.outcome <> 'replayed' THEN
            RAISE EXCEPTION 'duplicate of % gave %', k, r.outcome;
        END IF;
        -- a different request, and a second finish, are errors
        IF sqlstate_of(format('SELECT idem_begin(%L, %L, %L)', k, '{"amount": -1}', 'mem'))
           <> 'IK001' THEN
            RAISE EXCEPTION 'no IK001 for %', k;
        END IF;
        IF sqlstate_of(format('SELECT idem_finish(%L, NULL, 200, %L)', k, 'mem')) <> 'IK002' THEN
            RAISE EXCEPTION 'no IK002 for %', k;
        END IF;
        -- wait => false, released
        r := idem_begin(k || '-nowait', NULL, scope => 'mem', wait => false);
        PERFORM idem_fail(k || '-nowait', scope => 'mem');
        -- consumer de-duplication and a derived key
        PERFORM idem_once(idem_key('mem', tag, jsonb_build_object('i', i)), scope => 'mem-once');
        COMMIT;
    END LOOP;
END
$$;

-- n begins in the caller's transaction, half of them replays of one key,
-- half new keys; returns how much the memory contexts grew meanwhile
CREATE FUNCTION begins_in_one_xact(n int, tag text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    r idem_result;
    q text := 'SELECT sum(total_bytes) FROM pg_backend_memory_contexts';
    m0 bigint;
    m1 bigint;
BEGIN
    r := idem_begin(tag, '{"same": true}', scope => 'one xact');
    EXECUTE q INTO m0;
    EXECUTE q INTO m0;
    FOR i IN 1..n / 2 LOOP
        r := idem_begin(tag, '{"same": true}', scope => 'one xact');
        r := idem_begin(tag || i, '{"new": true}', scope => 'one xact');
    END LOOP;
    EXECUTE q INTO m1;
    RETURN m1 - m0;
END
$$;
});

my $session = $node->background_psql('postgres');
my $pid = $session->query_safe('SELECT pg_backend_pid()');
chomp $pid;

# Memory of the session's backend: (sum of its memory contexts, RssAnon)
sub measure
{
	my $contexts = $session->query_safe(
		'SELECT sum(total_bytes) FROM pg_backend_memory_contexts');
	chomp $contexts;
	my ($rss) = slurp_file("/proc/$pid/status") =~ /^RssAnon:\s+(\d+) kB/m;
	return ($contexts, defined $rss ? $rss * 1024 : undef);
}

# Warm up: caches, kept plans, the PL/pgSQL function cache
$session->query_safe("CALL churn(2000, 'warm-')");
my ($ctx0, $rss0) = measure();

my $t0 = time;
$session->query_safe("CALL churn($iterations, 'run-')");
my $secs = time - $t0;
my ($ctx1, $rss1) = measure();

is($node->safe_psql('postgres', q{SELECT count(*) FROM idem_ledger WHERE key LIKE 'run-%' AND state = 'completed'}),
	$iterations, "the loop ran: $iterations passes, " . $iterations * $per_iteration . " begins in ${secs}s");

note sprintf('memory contexts: %d -> %d bytes (%+d)', $ctx0, $ctx1, $ctx1 - $ctx0);
cmp_ok($ctx1 - $ctx0, '<=', $max_context_growth,
	'the backend\'s memory contexts did not grow');
SKIP:
{
	skip 'no RssAnon in /proc', 1 unless defined $rss0 && defined $rss1;
	note sprintf('RssAnon: %d -> %d kB (%+d kB)', $rss0 / 1024, $rss1 / 1024, ($rss1 - $rss0) / 1024);
	cmp_ok($rss1 - $rss0, '<=', $max_rss_growth,
		'the backend\'s private resident memory did not grow');
}

# Begins in one transaction: replays of a key the transaction began, and new
# keys.  A first, short run compiles everything the measured run uses.
$session->query_safe("SELECT begins_in_one_xact(1000, 'warm')");
my $grown = $session->query_safe("SELECT begins_in_one_xact($in_one_xact, 'one')");
chomp $grown;
note "memory contexts grew by $grown bytes during $in_one_xact begins in one transaction";
cmp_ok($grown, '<=', $max_context_growth,
	"$in_one_xact begins in one transaction do not grow the backend's memory");

# When it did grow, the server log says where
if ($ctx1 - $ctx0 > $max_context_growth)
{
	$session->query_safe('SELECT pg_log_backend_memory_contexts(pg_backend_pid())');
}

$session->quit;
$node->stop;
done_testing();
