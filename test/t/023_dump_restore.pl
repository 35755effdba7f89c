# test/t/023_dump_restore.pl: pg_dump and pg_restore keep every key
#
# A database whose ledger holds keys in every state (completed with and
# without a response, in progress under a live lease, released, taken over
# after a lapsed lease, recorded by idem_once, expired but not yet swept),
# in several scopes, with keys full of quotes, backslashes, new lines and
# multibyte characters up to the 255-byte limit, is dumped in the custom and
# the plain format and restored into a fresh cluster.  The restored ledger is
# equal row for row, and behaves the same: completed keys replay, a
# different request is IK001, a held key is in_progress, a released one
# starts afresh, a superseded owner meets IK003.  The same holds with the
# extension in its own schema, and for an UNLOGGED ledger (whose restored
# copy is logged), unless pg_dump was told --no-unlogged-table-data.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Run SQL and return the SQLSTATE of its error, or 'ok'
sub sqlstate_of
{
	my ($node, $db, $sql) = @_;
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	return 'ok' if $rc == 0;
	return $1 if $err =~ /ERROR:  ([0-9A-Z]{5}):/;
	return "rc=$rc: $err";
}

my $src = PostgreSQL::Test::Cluster->new('dump_source');
$src->init;
$src->start;
my $dst = PostgreSQL::Test::Cluster->new('restore_target');
$dst->init;
$dst->start;

# Keys with awkward characters; the last two are exactly 255 bytes
my @keys = (
	q{plain},
	q{it's "quoted"},
	q{back\slash \\ \N \. end},
	qq{new\nline\ttab\r},
	q{;DROP TABLE idem_ledger;--},
	q{日本語のキー},
	('é' x 127) . 'x',
	('😀' x 63) . 'xyz');

# Fill a ledger with keys in every state, in the schema $s
sub fill
{
	my ($db, $s) = @_;
	my $sql = "SET search_path = $s, public;\n";
	my $i = 0;
	for my $key (@keys)
	{
		my $k = $key;
		$k =~ s/'/''/g;
		$i++;
		# completed, in two scopes, with a response naming the key
		$sql .= qq{
			SELECT idem_begin('$k', jsonb_build_object('n', $i, 'k', '$k'));
			SELECT idem_finish('$k', jsonb_build_object('reply', '$k', 'deep', '{"a": [1, {"b": null}]}'::jsonb), 201);
			SELECT idem_begin('$k', '{"other": true}', scope => 'scope ''$i''');
			SELECT idem_finish('$k', NULL, 422, scope => 'scope ''$i''');
			SELECT idem_once('$k', scope => 'once');
		};
	}
	$sql .= q{
		-- in progress under a live lease, begun without an owner so
		-- that the lease alone binds it once this session has ended
		SET idempotency.owner_liveness = off;
		SELECT idem_begin('held', '{"h": 1}', lease => '1 hour');
		RESET idempotency.owner_liveness;
		-- released
		SELECT idem_begin('released', '{"r": 1}');
		SELECT idem_fail('released');
		-- taken over after its lease lapsed: attempt 2 in progress
		SELECT idem_begin('taken', '{"t": 1}', lease => '1 minute');
		SET idempotency.clock_offset = '2 minutes';
		SELECT idem_begin('taken', '{"t": 1}', lease => '1 hour');
		RESET idempotency.clock_offset;
		-- expired but not swept
		SELECT idem_begin('expired', '{"e": 1}', ttl => '1 microsecond');
		SELECT idem_finish('expired', '{"gone": true}');
	};
	$src->safe_psql($db, $sql);
	return;
}

# The whole ledger as one line per row, every column
sub ledger_rows
{
	my ($node, $db, $s) = @_;
	return $node->safe_psql(
		$db, qq{
		SELECT string_agg(concat_ws(' | ', to_json(scope), to_json(key),
		           state, status, response::text, attempt, created_at, expires_at,
		           lease_until, encode(fingerprint, 'hex')), E'\\n'
		           ORDER BY scope, key)
		  FROM $s.idem_ledger});
}

# The restored ledger behaves as the original did
sub check_behaviour
{
	my ($node, $db, $s, $what) = @_;
	my $q = "SET search_path = $s, public;";
	my @values;
	for my $i (1 .. scalar(@keys))
	{
		my $k = $keys[ $i - 1 ];
		$k =~ s/'/''/g;
		push @values, "('$k', $i)";
	}
	my $in = join(', ', @values);
	is( $node->safe_psql(
			$db, qq{$q
			SELECT count(*) FROM (VALUES $in) AS v(k, i),
			       LATERAL idem_begin(k, jsonb_build_object('n', i, 'k', k)) AS r
			 WHERE r.outcome = 'replayed' AND r.status = 201
			   AND r.response->>'reply' = k}),
		scalar(@keys),
		"$what: every completed key replays its response");
	is( $node->safe_psql(
			$db, qq{$q
			SELECT count(*) FROM (VALUES $in) AS v(k, i),
			       LATERAL idem_begin(k, '{"other": true}', scope => 'scope ''' || i || '''') AS r
			 WHERE r.outcome = 'replayed' AND r.status = 422 AND r.response IS NULL}),
		scalar(@keys),
		"$what: keys in other scopes replay theirs");
	is( $node->safe_psql(
			$db, qq{$q
			SELECT count(*) FROM (VALUES $in) AS v(k, i) WHERE NOT idem_once(k, scope => 'once')}),
		scalar(@keys),
		"$what: idem_once remembers its keys");
	is(sqlstate_of($node, $db, qq{$q SELECT idem_begin('plain', '{"n": 99}')}),
		'IK001', "$what: a different request is still IK001");
	is($node->safe_psql($db, qq{$q SELECT outcome FROM idem_begin('held', '{"h": 1}')}),
		'in_progress', "$what: a held key is in progress");
	is( $node->safe_psql(
			$db, qq{$q SELECT outcome, attempt FROM idem_begin('released', '{"r": 1}')}),
		'started|2',
		"$what: a released key starts afresh");
	is(sqlstate_of($node, $db, qq{$q SELECT idem_finish('taken', attempt => 1)}),
		'IK003', "$what: a superseded owner meets IK003");
	is( $node->safe_psql(
			$db, qq{$q SELECT outcome, attempt FROM idem_finish('taken', '{}', attempt => 2)}),
		'completed|2',
		"$what: the attempt that took over finishes");
	is( $node->safe_psql(
			$db, qq{$q SELECT outcome, attempt FROM idem_begin('expired', '{"e": 2}')}),
		'started|1',
		"$what: an expired key counts as absent");
	return;
}

my $dumpdir = $src->basedir;

# ------------------------------------------- extension in public, both formats

$src->safe_psql('postgres', 'CREATE DATABASE src');
$src->safe_psql('src', 'CREATE EXTENSION idempotency');
fill('src', 'public');
my $rows = ledger_rows($src, 'src', 'public');
is(scalar(split /\n/, $rows), 3 * scalar(@keys) + 4, 'the source ledger holds every key');

$src->command_ok([ 'pg_dump', '-Fc', '-f', "$dumpdir/src.dump", '-d', $src->connstr('src') ],
	'pg_dump -Fc');
$src->command_ok([ 'pg_dump', '-Fp', '-f', "$dumpdir/src.sql", '-d', $src->connstr('src') ],
	'pg_dump -Fp');

$dst->safe_psql('postgres', 'CREATE DATABASE custom');
$dst->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', $dst->connstr('custom'), "$dumpdir/src.dump" ],
	'pg_restore into a fresh cluster');
is(ledger_rows($dst, 'custom', 'public'), $rows, 'custom format: the ledger is restored row for row');
check_behaviour($dst, 'custom', 'public', 'custom format');

$dst->safe_psql('postgres', 'CREATE DATABASE plain');
$dst->command_ok(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $dst->connstr('plain'), '-f', "$dumpdir/src.sql" ],
	'plain dump restored with psql');
is(ledger_rows($dst, 'plain', 'public'), $rows, 'plain format: the ledger is restored row for row');

# The restored API is as closed as the original
is( $dst->safe_psql(
		'plain', q{
		SELECT has_table_privilege('idempotency_user', 'idem_ledger', 'SELECT'),
		       has_function_privilege('idempotency_user',
		           'idem_begin(text, jsonb, text, interval, interval, boolean, interval)', 'EXECUTE')}),
	'f|t',
	'plain format: grants are restored');

# ------------------------------------------------ extension in its own schema

$src->safe_psql('postgres', 'CREATE DATABASE src_schema');
$src->safe_psql('src_schema', 'CREATE SCHEMA "Idem Keys"; CREATE EXTENSION idempotency SCHEMA "Idem Keys"');
fill('src_schema', '"Idem Keys"');
my $rows_schema = ledger_rows($src, 'src_schema', '"Idem Keys"');
$src->command_ok(
	[ 'pg_dump', '-Fc', '-f', "$dumpdir/schema.dump", '-d', $src->connstr('src_schema') ],
	'pg_dump of a database with the extension in its own schema');
$dst->safe_psql('postgres', 'CREATE DATABASE in_schema');
$dst->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', $dst->connstr('in_schema'), "$dumpdir/schema.dump" ],
	'pg_restore');
is(ledger_rows($dst, 'in_schema', '"Idem Keys"'),
	$rows_schema, 'own schema: the ledger is restored row for row');
check_behaviour($dst, 'in_schema', '"Idem Keys"', 'own schema');

# ------------------------------------------------------------ UNLOGGED ledger

$src->safe_psql('postgres', 'CREATE DATABASE src_unlogged');
$src->safe_psql('src_unlogged', 'CREATE EXTENSION idempotency; SELECT idem_set_logged(false)');
fill('src_unlogged', 'public');
my $rows_unlogged = ledger_rows($src, 'src_unlogged', 'public');
$src->command_ok(
	[ 'pg_dump', '-Fc', '-f', "$dumpdir/unlogged.dump", '-d', $src->connstr('src_unlogged') ],
	'pg_dump of an UNLOGGED ledger');
$src->command_ok(
	[
		'pg_dump', '-Fc', '--no-unlogged-table-data', '-f', "$dumpdir/unlogged_nodata.dump",
		'-d', $src->connstr('src_unlogged')
	],
	'pg_dump --no-unlogged-table-data');
$dst->safe_psql('postgres', 'CREATE DATABASE unlogged; CREATE DATABASE unlogged_nodata');
$dst->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', $dst->connstr('unlogged'), "$dumpdir/unlogged.dump" ],
	'pg_restore');
is(ledger_rows($dst, 'unlogged', 'public'),
	$rows_unlogged, 'UNLOGGED: the ledger is restored row for row');
is( $dst->safe_psql(
		'unlogged', "SELECT relpersistence FROM pg_class WHERE oid = 'idem_ledger'::regclass"),
	'p',
	'UNLOGGED: the restored ledger is logged');
$dst->command_ok(
	[
		'pg_restore', '--exit-on-error', '-d', $dst->connstr('unlogged_nodata'),
		"$dumpdir/unlogged_nodata.dump"
	],
	'pg_restore of the dump without unlogged data');
is($dst->safe_psql('unlogged_nodata', 'SELECT count(*) FROM idem_ledger'),
	'0', 'UNLOGGED with --no-unlogged-table-data: the keys are not dumped');

$src->stop;
$dst->stop;
done_testing();
