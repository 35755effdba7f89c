# With idempotency.enforce_scope_grants on for the whole server, application
# roles are held to their scopes, while the owner's paths keep working: the
# launcher's sweeper removes expired keys of every scope, and the pgTAP kit
# (which runs as a superuser, in its dblink sessions too) passes its
# assertions on a handler that uses a granted scope.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('scope_grants');
$node->init;
$node->append_conf(
    'postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
idempotency.enforce_scope_grants = on
});
$node->start;

$node->safe_psql(
    'postgres', q{
    CREATE EXTENSION idempotency;
    CREATE ROLE tenant_a LOGIN;
    CREATE ROLE tenant_b LOGIN;
    GRANT idempotency_user TO tenant_a, tenant_b;
    INSERT INTO idem_scope_grants VALUES ('tenant-a:', 'tenant_a'), ('tenant-b:', 'tenant_b');
});
is($node->safe_psql('postgres', 'SHOW idempotency.enforce_scope_grants'),
    'on', 'enforcement is on for every session');

# Each tenant fills its own scope with keys that have already expired (made
# two hours ago with a one-hour ttl); the other's scope is closed to it
for my $t (qw(a b))
{
    is( $node->safe_psql(
            'postgres',
            "SET idempotency.clock_offset = '-2 hours'; SET ROLE tenant_$t; "
              . "SELECT count(*) FROM generate_series(1, 500) g "
              . "WHERE idem_once('k' || g, 'tenant-$t:jobs', ttl => '1 hour')"),
        '500',
        "tenant $t records keys in its own scope");
}
my ($ret, $stdout, $stderr) = $node->psql(
    'postgres',
    "SELECT idem_once('k1', 'tenant-b:jobs')",
    extra_params => [ '-U', 'tenant_a' ]);
isnt($ret, 0, 'tenant a, logged in as itself, cannot use tenant b\'s scope');
like($stderr, qr/permission denied for idempotency scope "tenant-b:jobs"/, 'and is told why');
is( $node->safe_psql(
        'postgres', "SELECT idem_once('k1', 'tenant-a:jobs')",
        extra_params => [ '-U', 'tenant_a' ]),
    't',
    'but can use its own');

# The launcher's sweeper removes the expired keys of every scope
$node->poll_query_until('postgres',
    "SELECT count(*) = 1 FROM idem_ledger WHERE scope LIKE 'tenant-_:jobs'")
  or die 'the sweeper did not remove the expired keys';
pass('the sweeper removes expired keys of every scope');
is($node->safe_psql('postgres', 'SELECT last_error IS NULL FROM idem_sweeper_status()'),
    't', 'and reports no error');

# The kit, as a superuser, with enforcement on in its own and its dblink sessions
SKIP:
{
    skip 'pgTAP is not installed', 1
      unless $node->safe_psql('postgres',
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'pgtap'") eq '1';
    $node->safe_psql(
        'postgres', q{
        SET client_min_messages = warning;
        CREATE EXTENSION idempotency_tap CASCADE;
        CREATE TABLE payments (id bigserial PRIMARY KEY, amount int NOT NULL);
        CREATE FUNCTION pay(k text, amount int) RETURNS jsonb
        LANGUAGE plpgsql AS $$
        DECLARE
            r idem_result;
            paid bigint;
        BEGIN
            r := idem_begin(k, jsonb_build_object('amount', amount), 'tenant-a:payments');
            IF r.outcome = 'replayed' THEN
                RETURN r.response;
            END IF;
            INSERT INTO payments (amount) VALUES (amount) RETURNING id INTO paid;
            r := idem_finish(k, jsonb_build_object('payment_id', paid), 201, 'tenant-a:payments');
            RETURN r.response;
        END
        $$;
    });
    my $tap = $node->safe_psql(
        'postgres', q{
        SELECT plan(4);
        SELECT replays($$SELECT pay('t-1', 5)$$);
        SELECT is_idempotent($$SELECT pay('t-2', 5)$$, ARRAY['payments']::regclass[]);
        SELECT expires_after($$SELECT pay('t-3', 5)$$, '24 hours');
        SELECT is_idempotent_concurrently($$SELECT pay('t-4', 5)$$, 3, ARRAY['payments']::regclass[]);
        SELECT * FROM finish();
    });
    my @not_ok = grep { /^not ok/ } split /\n/, $tap;
    is_deeply(\@not_ok, [], 'the kit\'s assertions pass with enforcement on')
      or diag($tap);
}

$node->stop;
done_testing();
