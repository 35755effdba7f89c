# test/t/036_citus_upgrade.pl: ALTER EXTENSION ... UPDATE TO '1.3' on a ledger that Citus distributes
#
# A coordinator and two workers, the extension made at 1.2 and the ledger
# distributed by scope, then filled: UUIDv7 keys (completed, in progress,
# a consumer's) in two scopes, and another key.  The update on the
# coordinator reaches both workers, gives every row of every shard the
# digest 1.3's idem_digest computes (a UUIDv7 key's first 32 bits first;
# the other key's digest as it was) and the CHECK constraint that holds them
# to it, which doc/citus.md's command carries to the shards; every key
# behaves as before: replayed, in progress, seen; a new UUIDv7 key starts
# once.  DROP EXTENSION at the end still works.
#
# Skipped when Citus is not installed for the server under test
# (scripts/citus.sh builds it); failed instead with IDEM_REQUIRE_CITUS=1, as
# in CI.

use strict;
use warnings;

use lib 'test/perl';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemCitus;

IdemCitus::skip_unless_installed();

my ($coord, @workers) = IdemCitus::cluster(2);
my $k1 = '01932c07-8a5b-7abc-9def-000000000001';
my $k2 = '01932c07-8a5b-7abc-9def-000000000002';
my $k3 = '01932c08-0000-7000-8000-000000000003';
$coord->safe_psql('postgres', qq{
	CREATE EXTENSION idempotency VERSION '1.2';
	SELECT idem_distribute('scope');
	SELECT idem_begin('$k1', '{"amount": 1}', scope => 'tenant-a');
	SELECT idem_finish('$k1', '{"payment_id": 1}', 201, scope => 'tenant-a');
	SELECT idem_begin('$k1', '{"amount": 2}', scope => 'tenant-b');
	SELECT idem_finish('$k1', '{"payment_id": 2}', 201, scope => 'tenant-b');
	SELECT idem_begin('$k2', scope => 'tenant-a', lease => '1 hour');
	SELECT idem_once('$k3', scope => 'queue');
	SELECT idem_begin('order-42', '{"amount": 42}', scope => 'tenant-b');
	SELECT idem_finish('order-42', '{"payment_id": 42}', 201, scope => 'tenant-b');
});

# The digests of the shards' rows, as "scope/key:first 8 hex digits" lines
my $digests = q{
	SELECT string_agg(scope || '/' || key || ':' || substr(digest::text, 1, 8), ',' ORDER BY scope, key)
	  FROM idem_ledger};
my $before = $coord->safe_psql('postgres', $digests);
unlike($before, qr/:01932c0/, 'under 1.2 no digest starts with its key');

$coord->safe_psql('postgres', "ALTER EXTENSION idempotency UPDATE TO '1.3'");
for my $node ($coord, @workers)
{
	is($node->safe_psql('postgres',
			"SELECT extversion FROM pg_extension WHERE extname = 'idempotency'"),
		'1.3', 'the update reached ' . $node->name);
}

is($coord->safe_psql('postgres', $digests),
	"queue/$k3:01932c08,tenant-a/$k1:01932c07,tenant-a/$k2:01932c07,"
	  . "tenant-b/$k1:01932c07,tenant-b/order-42:"
	  . ($before =~ m{tenant-b/order-42:(\w+)})[0],
	'UUIDv7 keys lead with their first 32 bits; the other key keeps its digest');
is($coord->safe_psql('postgres', q{
		SELECT sum(result::bigint) FROM run_command_on_shards('idem_ledger',
		  $$SELECT count(*) FROM %s WHERE digest IS DISTINCT FROM idem_digest(scope, key)$$)}),
	'0', "every shard's rows carry the digest their node's idem_digest computes");
# Citus (13.2) does not carry the update's CHECK constraint to the shards;
# the command doc/citus.md gives adds it to them
my $shard_checks = q{
	SELECT string_agg(DISTINCT result, ',') FROM run_command_on_shards('idem_ledger',
	  $$SELECT count(*) FROM pg_constraint
	     WHERE conrelid = '%s'::regclass AND conname = 'idem_ledger_digest_check'$$)};
my $before_command = $coord->safe_psql('postgres', $shard_checks);
SKIP:
{
	skip 'this Citus carried the constraint to the shards itself', 1
	  if $before_command eq '1';
	is($coord->safe_psql('postgres', q{
			SELECT string_agg(DISTINCT success::text, ',')
			  FROM pg_constraint c,
			       run_command_on_shards('idem_ledger',
			         format('ALTER TABLE %%s ADD CONSTRAINT %I %s', c.conname, pg_get_constraintdef(c.oid)))
			 WHERE c.conrelid = 'idem_ledger'::regclass AND c.conname = 'idem_ledger_digest_check'}),
		'true', "doc/citus.md's command succeeds on every shard");
}
is($coord->safe_psql('postgres', $shard_checks), '1', 'every shard has the CHECK constraint of the digest');
is($coord->safe_psql('postgres', q{
		SELECT string_agg(DISTINCT success::text, ',') FROM run_command_on_shards('idem_ledger',
		  $$ALTER TABLE %s VALIDATE CONSTRAINT idem_ledger_digest_check$$)}),
	'true', "and every shard's rows meet it");

is($coord->safe_psql('postgres', qq{
		SELECT outcome || ' ' || status || ' ' || response
		  FROM idem_begin('$k1', '{"amount": 1}', scope => 'tenant-a')}),
	'replayed 201 {"payment_id": 1}', 'a completed UUIDv7 key replays');
is($coord->safe_psql('postgres', qq{
		SELECT outcome || ' ' || response FROM idem_begin('$k1', '{"amount": 2}', scope => 'tenant-b')}),
	'replayed {"payment_id": 2}', 'so does the same key in another scope');
is($coord->safe_psql('postgres', qq{SELECT outcome FROM idem_begin('$k2', scope => 'tenant-a')}),
	'in_progress', 'the attempt in progress still holds its key');
is($coord->safe_psql('postgres', qq{SELECT idem_once('$k3', scope => 'queue')}),
	'f', "the consumer's key is still seen");
is($coord->safe_psql('postgres', q{
		SELECT outcome FROM idem_begin('order-42', '{"amount": 42}', scope => 'tenant-b')}),
	'replayed', 'the other key replays');
is($coord->safe_psql('postgres', q{
		SELECT outcome FROM idem_begin('01932c09-0000-7000-8000-000000000004', scope => 'tenant-a')}),
	'started', 'a new UUIDv7 key starts');
is($coord->safe_psql('postgres', q{
		SELECT outcome FROM idem_begin('01932c09-0000-7000-8000-000000000004', scope => 'tenant-a')}),
	'in_progress', 'once');
is($coord->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT (scope, key)) || ' ' ||
		       count(*) FILTER (WHERE digest <> idem_digest(scope, key)) FROM idem_ledger}),
	'6 6 0', 'six keys, one row each, every digest 1.3\'s');

$coord->safe_psql('postgres', 'DROP EXTENSION idempotency');
is($coord->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'idempotency'"),
	'0', 'DROP EXTENSION drops it, shards and all');

done_testing();
