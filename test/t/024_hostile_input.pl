# test/t/024_hostile_input.pl: hostile input works or fails cleanly
#
# Every function of the extension is called with hostile values in each of
# its arguments in turn: NULLs, empty keys, keys of 255 and 256 bytes in
# one-, two-, three- and four-byte characters, a 1 MB key, quotes,
# backslashes, control characters, non-positive and huge intervals, extreme
# integers, jsonb nested 1,000, 10,000 and 30,000 levels deep, 20 MB of
# jsonb (one long string that does not compress), an object of 250,000 keys,
# numbers beyond double precision.  Each call must work or fail with a
# documented SQLSTATE, the exact one where the README names it; keys and
# documents that were accepted must come back byte for byte; and the server
# must never crash.  Bad settings are refused, and the farthest clock offset,
# ttl and lease stay inside the timestamp range.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# SQLSTATEs the README documents for the API
my %documented = map { $_ => 1 } qw(IK001 IK002 IK003 22004 22023 40001);

my $node = PostgreSQL::Test::Cluster->new('hostile');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf('postgresql.conf', "log_statement = none\n");
$node->start;

# (a literal here-document: every backslash below reaches the server)
$node->safe_psql('postgres', <<'SQL');
CREATE EXTENSION idempotency;

-- Run setup (its errors ignored), then stmt; 'ok' or 'SQLSTATE: message'.
-- The call is logged first, so a crash names its culprit in the server log.
CREATE FUNCTION outcome_of(setup text, stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF setup IS NOT NULL THEN
        BEGIN
            EXECUTE setup;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END IF;
    RAISE LOG 'hostile call: %', left(stmt, 300);
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || left(SQLERRM, 200);
END
$$;

-- Hostile values, by type.  "expect" columns say what the contract demands
-- of a key, a scope or an interval with that value.
CREATE TABLE hv_text (n int PRIMARY KEY, label text, v text,
                      expect_key text, expect_scope text);
INSERT INTO hv_text VALUES
 (1, 'NULL', NULL, '22004', '22004'),
 (2, 'empty', '', '22023', 'ok'),
 (3, 'one byte', 'k', 'ok', 'ok'),
 (4, 'space', ' ', 'ok', 'ok'),
 (5, '255 ASCII bytes', repeat('a', 255), 'ok', 'ok'),
 (6, '256 ASCII bytes', repeat('a', 256), '22023', '22023'),
 (7, '255 bytes of 2-byte characters', repeat('é', 127) || 'x', 'ok', 'ok'),
 (8, '256 bytes of 2-byte characters', repeat('é', 128), '22023', '22023'),
 (9, '255 bytes of 3-byte characters', repeat('€', 85), 'ok', 'ok'),
 (10, '258 bytes of 3-byte characters', repeat('€', 86), '22023', '22023'),
 (11, '255 bytes with 4-byte characters', repeat('😀', 63) || 'xyz', 'ok', 'ok'),
 (12, '256 bytes of 4-byte characters', repeat('😀', 64), '22023', '22023'),
 (13, 'quotes and backslashes', E'it''s "q" \\ \\\\ \\x00 \\N \\. $$ '';--', 'ok', 'ok'),
 (14, 'control characters', E'\t\n\r\b\f\x01\x1b\x7f', 'ok', 'ok'),
 (15, 'format specifiers', '%s%d%n%x%% %.9999f', 'ok', 'ok'),
 (16, 'combining, bidi and zero-width', E'e\u0301 \u202Eabc\u202C \u200B\uFEFF', 'ok', 'ok'),
 (17, 'SQL injection', $i$'); DROP TABLE idem_ledger; --$i$, 'ok', 'ok'),
 (18, 'JSON text', '{"key": [1, 2], "q": "\""}', 'ok', 'ok'),
 (19, '1 MB', repeat('z', 1048576), '22023', '22023');

CREATE TABLE hv_interval (n int PRIMARY KEY, label text, v interval, expect text);
INSERT INTO hv_interval VALUES
 (1, 'NULL (the default)', NULL, 'ok'),
 (2, 'zero', '0', '22023'),
 (3, 'minus one microsecond', '-1 microsecond', '22023'),
 (4, 'minus one hour', '-1 hour', '22023'),
 (5, 'one microsecond', '1 microsecond', 'ok'),
 (6, 'one month minus 30 days', '1 month -30 days', '22023'),
 (7, 'one month minus 29 days', '1 month -29 days', '22023'),
 (8, 'one day minus 86400 seconds', '1 day -86400 seconds', '22023'),
 (9, '100 years', '100 years', 'ok'),
 (10, '100 years and a microsecond', '100 years 1 microsecond', '22023'),
 (11, '178 million years', '178000000 years', '22023'),
 (12, 'minus 178 million years', '-178000000 years', '22023'),
 (13, 'int32 max days', '2147483647 days', '22023'),
 (14, 'int32 min days', '-2147483648 days', '22023'),
 (15, 'most microseconds', '2562047788:00:54.775807', '22023'),
 (16, 'mixed signs', '-1 year 400 days', '22023');

CREATE TABLE hv_int (n int PRIMARY KEY, label text, v int);
INSERT INTO hv_int VALUES
 (1, 'NULL', NULL), (2, 'zero', 0), (3, 'one', 1), (4, 'minus one', -1),
 (5, '200', 200), (6, 'int32 max', 2147483647), (7, 'int32 min', -2147483648);

CREATE TABLE hv_bool (n int PRIMARY KEY, label text, v boolean);
INSERT INTO hv_bool VALUES (1, 'NULL', NULL), (2, 'true', true), (3, 'false', false);

CREATE TABLE hv_jsonb (n int PRIMARY KEY, label text, v jsonb, deep boolean DEFAULT false);
INSERT INTO hv_jsonb (n, label, v) VALUES
 (1, 'NULL', NULL),
 (2, 'JSON null', 'null'),
 (3, 'empty object', '{}'),
 (4, 'empty array', '[]'),
 (5, 'empty string', '""'),
 (6, 'minus zero', '-0'),
 (7, 'beyond double precision', '[1e400, -1e-400, 123456789012345678901234567890.123456789012345678901234567890]'),
 (8, 'escapes', '{"\"\\\/\b\f\n\r\t": "\u0001 \u00e9 \ud83d\ude00 \u2028"}'),
 (9, 'keys that need sorting', '{"b": 1, "a": 2, "": 3, "é": 4, "😀": 5, "aa": {"z": [], "y": {}}}'),
 (10, 'nested 1,000 objects', (repeat('{"a": ', 1000) || '1' || repeat('}', 1000))::jsonb),
 (11, 'nested 10,000 arrays', (repeat('[', 10000) || repeat(']', 10000))::jsonb);
INSERT INTO hv_jsonb (n, label, v)
SELECT 12, '20 MB string of hex digits',
       jsonb_build_object('blob', string_agg(md5(i::text), ''))
  FROM generate_series(1, 20 * 1024 * 1024 / 32) AS i;
INSERT INTO hv_jsonb (n, label, v)
SELECT 13, 'object of 250,000 keys',
       ('{' || string_agg(format('"key %s": %s.25', i, i), ', ') || '}')::jsonb
  FROM generate_series(1, 250000) AS i;
SQL

# A document nested deeper than the JSON parser accepts with the default
# stack: built with a larger max_stack_depth, then used with the default
my ($deep_rc) = $node->psql(
	'postgres', q{
	SET max_stack_depth = '7MB';
	INSERT INTO hv_jsonb (n, label, v, deep)
	VALUES (14, 'nested 30,000 objects',
	        (repeat('{"a": ', 30000) || '1' || repeat('}', 30000))::jsonb, true)});
note 'no 30,000-level document: the stack limit is too small to build one' if $deep_rc;

cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM hv_jsonb'),
	'>=', 13, 'the hostile documents are in place');

# ----------------------------------------------------------------- the matrix

# Baseline arguments; the hostile value replaces one of them at a time
my %baseline = (
	key => undef,    # a fresh key per call
	request => q{'{"b": 1}'::jsonb},
	scope => undef,    # a scope per function and argument
	ttl => 'NULL::interval',
	lease => 'NULL::interval',
	wait => 'true',
	response => q{'{"r": 1}'::jsonb},
	status => '201',
	attempt => 'NULL::int',
	entity => q{'order'},
	action => q{'create'},
	params => 'NULL::jsonb',
	doc => q{'{}'::jsonb},
	batch_size => 'NULL::int',
	logged => 'true');

# name => [ [argument, value table], ... ], setup
my @functions = (
	[
		'idem_begin',
		[
			[ key => 'hv_text' ], [ request => 'hv_jsonb' ],
			[ scope => 'hv_text' ], [ ttl => 'hv_interval' ],
			[ lease => 'hv_interval' ], [ wait => 'hv_bool' ]
		]
	],
	[
		'idem_finish',
		[
			[ key => 'hv_text' ], [ response => 'hv_jsonb' ],
			[ status => 'hv_int' ], [ scope => 'hv_text' ],
			[ attempt => 'hv_int' ]
		],
		1
	],
	[
		'idem_fail',
		[ [ key => 'hv_text' ], [ scope => 'hv_text' ], [ attempt => 'hv_int' ] ], 1
	],
	[ 'idem_once', [ [ key => 'hv_text' ], [ scope => 'hv_text' ], [ ttl => 'hv_interval' ] ] ],
	[ 'idem_key', [ [ entity => 'hv_text' ], [ action => 'hv_text' ], [ params => 'hv_jsonb' ] ] ],
	[ 'idem_fingerprint', [ [ request => 'hv_jsonb' ] ] ],
	[ 'idem_canonical', [ [ doc => 'hv_jsonb' ] ] ],
	[ 'idem_sweep', [ [ batch_size => 'hv_int' ] ] ],
	[ 'idem_set_logged', [ [ logged => 'hv_bool' ] ] ]);

# What the contract demands of a call, or undef for "any documented outcome"
sub expected
{
	my ($fn, $arg, $table, $row) = @_;
	my ($n, $label, $expect_key, $expect_scope, $expect_interval, $deep) = @$row;
	return $expect_key if $arg eq 'key';
	return $expect_scope if $arg eq 'scope';
	return $expect_interval if $table eq 'hv_interval';
	return '22004' if $arg =~ /^(wait|logged|status|entity|action)$/ && $label eq 'NULL';
	return 'ok' if $arg =~ /^(wait|logged|status|entity|action)$/;
	return 'ok' if $arg eq 'attempt' && $label =~ /^(NULL|one)$/;
	return undef if $arg eq 'attempt';
	if ($arg eq 'batch_size')
	{
		return '22023' if $label =~ /^(zero|minus one|int32 min)$/;
		return 'ok';
	}
	# documents: anything is a valid request or response; the canonical
	# text of a document deeper than the stack allows is 54001
	return '54001' if $deep && $fn =~ /^idem_(key|canonical)$/;
	return 'ok';
}

my %rows;
for my $table (qw(hv_text hv_interval hv_int hv_bool hv_jsonb))
{
	my $cols = {
		hv_text => q{n, label, expect_key, expect_scope, NULL, false},
		hv_interval => q{n, label, NULL, NULL, expect, false},
		hv_int => q{n, label, NULL, NULL, NULL, false},
		hv_bool => q{n, label, NULL, NULL, NULL, false},
		hv_jsonb => q{n, label, NULL, NULL, NULL, deep}
	}->{$table};
	$rows{$table} = [
		map { [ split /\|/, $_, -1 ] } split /\n/,
		$node->safe_psql('postgres', "SELECT $cols FROM $table ORDER BY n")
	];
	$_->[5] = ($_->[5] eq 't') for @{ $rows{$table} };
}

my $callno = 0;
for my $f (@functions)
{
	my ($fn, $args, $needs_attempt) = @$f;
	for my $i (0 .. $#$args)
	{
		my ($arg, $table) = @{ $args->[$i] };
		my (@calls, %expect);
		for my $row (@{ $rows{$table} })
		{
			$callno++;
			my %value = %baseline;
			$value{key} = "'hostile $callno'";
			$value{scope} = "'$fn $arg'";
			$value{$arg} = "(SELECT v FROM $table WHERE n = $row->[0])";
			my $call = "SELECT $fn("
			  . join(', ', map { $value{ $_->[0] } } @$args) . ')';
			my $setup = 'NULL';
			if ($needs_attempt)
			{
				# an attempt in progress for finish and fail to act on
				my $scope = grep({ $_->[0] eq 'scope' } @$args) ? $value{scope} : q{''};
				$setup = "\$s\$SELECT idem_begin($value{key}, '{\"b\": 1}', $scope)\$s\$";
			}
			push @calls, "($row->[0], $setup, \$c\$$call\$c\$)";
			$expect{ $row->[0] } = [ $row->[1], expected($fn, $arg, $table, $row) ];
		}
		my $out = $node->safe_psql(
			'postgres', "SELECT n, outcome_of(setup, stmt) FROM (VALUES "
			  . join(",\n", @calls)
			  . ") AS c(n, setup, stmt) ORDER BY n");
		my @wrong;
		for my $line (split /\n/, $out)
		{
			my ($n, $outcome) = split /\|/, $line, 2;
			my ($label, $want) = @{ $expect{$n} };
			my $code = $outcome eq 'ok' ? 'ok' : substr($outcome, 0, 5);
			my $good =
			  defined $want
			  ? $code eq $want
			  : ($code eq 'ok' || $documented{$code});
			push @wrong, "$label: got \"$outcome\", want " . ($want // 'a documented outcome')
			  unless $good;
		}
		is(scalar(split /\n/, $out), scalar(@calls), "$fn($arg => ...): every call returned")
		  and is_deeply(\@wrong, [], "$fn($arg => hostile values): each works or fails as documented")
		  or diag(join("\n", @wrong));
	}
}

# Every function of the extension, present and future, with every argument NULL
# (trigger functions aside: SQL cannot call them)
my @all = split /\n/,
  $node->safe_psql(
	'postgres', q{
	SELECT p.oid::regprocedure::text || '|' || p.proname || '(' ||
	       coalesce((SELECT string_agg('NULL::' || format_type(t, NULL), ', ' ORDER BY o)
	                   FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, o)), '') || ')'
	  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'idempotency')
	   AND p.prorettype <> 'trigger'::regtype
	 ORDER BY 1});
my @wrong;
for my $f (@all)
{
	my ($sig, $call) = split /\|/, $f;
	my $outcome = $node->safe_psql('postgres', "SELECT outcome_of(NULL, \$c\$SELECT * FROM $call\$c\$)");
	my $code = $outcome eq 'ok' ? 'ok' : substr($outcome, 0, 5);
	push @wrong, "$sig: $outcome" unless $code eq 'ok' || $documented{$code};
}
cmp_ok(scalar(@all), '>=', 9, 'the extension has its functions');
is_deeply(\@wrong, [], 'every function with every argument NULL works or fails as documented')
  or diag(join("\n", @wrong));

# ------------------------------------------------------ values come back intact

# Every key accepted comes back byte for byte, and replays its response
$node->safe_psql(
	'postgres', q{
	SELECT idem_set_logged(true);
	SELECT count(*) FROM hv_text h, idem_begin(h.v, '{"x": 1}', 'round trip') AS b
	 WHERE h.expect_key = 'ok' AND b.outcome = 'started';
	SELECT count(*) FROM hv_text h, idem_finish(h.v, to_jsonb(h.v), 201, 'round trip') AS f
	 WHERE h.expect_key = 'ok';
	SELECT count(*) FROM hv_jsonb h, idem_begin('doc ' || h.n, h.v, 'documents') AS b;
	SELECT count(*) FROM hv_jsonb h, idem_finish('doc ' || h.n, h.v, 201, 'documents') AS f;
});
is( $node->safe_psql(
		'postgres', q{
		SELECT count(*) FILTER (WHERE r.outcome = 'replayed' AND r.response = to_jsonb(h.v)
		                          AND convert_to(l.key, 'UTF8') = convert_to(h.v, 'UTF8')),
		       count(*)
		  FROM hv_text h
		  JOIN idem_ledger l ON l.scope = 'round trip' AND l.key = h.v,
		       LATERAL idem_begin(h.v, '{"x": 1}', 'round trip') AS r
		 WHERE h.expect_key = 'ok'}),
	'12|12',
	'every accepted key is stored byte for byte and replays its response');
my $ndocs = $node->safe_psql('postgres', 'SELECT count(*) FROM hv_jsonb');
is( $node->safe_psql(
		'postgres', q{
		SELECT count(*) FROM hv_jsonb h,
		       LATERAL idem_begin('doc ' || h.n, h.v, 'documents') AS r
		 WHERE r.outcome = 'replayed' AND r.status = 201
		   AND md5(r.response::text) IS NOT DISTINCT FROM md5(h.v::text)}),
	$ndocs,
	'every document, as request and as response, is stored and replayed intact');
is( $node->safe_psql(
		'postgres', q{
		SELECT count(*) FROM hv_jsonb h
		 WHERE outcome_of(NULL, format('SELECT idem_begin(%L, %L::jsonb, %L)',
		                               'doc ' || h.n, '{"another": "request"}', 'documents'))
		       LIKE 'IK001%'}),
	$ndocs,
	'every document is told apart from another request (IK001)');

# ------------------------------------------------------------- settings

my @settings = (
	[ 'idempotency.default_ttl', '0' ],
	[ 'idempotency.default_ttl', '-1 day' ],
	[ 'idempotency.default_ttl', 'soon' ],
	[ 'idempotency.default_ttl', '' ],
	[ 'idempotency.default_lease', '-1 microsecond' ],
	[ 'idempotency.default_lease', ('9' x 300) . ' years' ],
	[ 'idempotency.clock_offset', 'yesterday' ],
	[ 'idempotency.clock_offset', '178000000 years' ],
	[ 'idempotency.clock_offset', '-178000000 years' ]);
@wrong = ();
for my $s (@settings)
{
	my ($name, $value) = @$s;
	# the library is loaded first: before, a SET only records a placeholder
	my $outcome = $node->safe_psql('postgres',
		"LOAD 'idempotency'; SELECT outcome_of(NULL, format('SET %s = %L', '$name', \$v\$$value\$v\$))");
	my $code = $outcome eq 'ok' ? 'ok' : substr($outcome, 0, 5);
	push @wrong, "$name = '$value': $outcome" unless $code eq '22023';
}
is_deeply(\@wrong, [], 'bad settings are refused with 22023') or diag(join("\n", @wrong));

# The farthest the clock, a ttl and a lease can reach stays in range
is( $node->safe_psql(
		'postgres', q{
		SET idempotency.clock_offset = '100 years';
		SELECT outcome FROM idem_begin('far future', ttl => '100 years', lease => '100 years');
		SELECT outcome FROM idem_finish('far future');
		SELECT idem_once('far future once', ttl => '100 years');
		SET idempotency.clock_offset = '-100 years';
		SELECT outcome FROM idem_begin('far past', ttl => '1 microsecond', lease => '1 microsecond');
		SELECT idem_sweep() >= 0}),
	"started\ncompleted\nt\nstarted\nt",
	'the extreme clock offsets, ttls and leases stay in the timestamp range');

# ------------------------------------------------- a read-only transaction

# A READ ONLY transaction must not write the ledger, whichever path a call
# takes: each writing call fails with 25006 and the ledger stays as it was.
# (SPI checks this for a statement; a direct heap path must check it itself.)
my $before = $node->safe_psql('postgres', 'SELECT count(*), max(xmin::text) FROM idem_ledger');
my $ro = $node->safe_psql(
	'postgres', q{
	SET default_transaction_read_only = on;
	SELECT outcome_of(NULL, $$SELECT idem_begin('read-only new key', '{"a": 1}')$$);
	SELECT outcome_of(NULL, $$SELECT idem_once('read-only once')$$);
	SELECT outcome_of(NULL, $$SELECT idem_finish('read-only new key')$$);
	SELECT outcome_of(NULL, $$SELECT idem_sweep()$$)});
my @ro = map { substr($_, 0, 5) } split /\n/, $ro;
is_deeply(\@ro, [ '25006', '25006', '25006', '25006' ],
	'in a READ ONLY transaction begin, once, finish and sweep fail with 25006')
  or diag($ro);
is($node->safe_psql('postgres', 'SELECT count(*), max(xmin::text) FROM idem_ledger'),
	$before, 'a READ ONLY transaction leaves the ledger as it was');

# ------------------------------------------------------------ and afterwards

is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server is still up');
$node->safe_psql('postgres', 'CREATE EXTENSION amcheck');
is( $node->safe_psql(
		'postgres', q{
		SELECT bt_index_parent_check('idem_ledger_pkey', heapallindexed => true);
		SELECT count(*) FROM verify_heapam('idem_ledger')}),
	"\n0",
	'amcheck finds the ledger sound');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|PANIC|TRAP:/, 'no backend crashed');

$node->stop;
done_testing();
