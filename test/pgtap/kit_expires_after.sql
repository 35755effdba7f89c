-- kit_expires_after.sql: expires_after() of the idempotency_tap kit steps the
-- ledger clock (idempotency.clock_offset) to just before and just after the
-- ttl: a duplicate must replay before and execute afresh after.  It catches
-- a ttl that is longer or shorter than claimed and a handler with no key,
-- and gives the clock back as it found it.  Runs in one transaction that
-- rolls back.
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS idempotency_tap;
\ir ../../examples/handlers.sql

SELECT plan(26);

-- The example handler keeps keys for idempotency.default_ttl (24 hours)
SET LOCAL idempotency.default_ttl = '24 hours';
SELECT * FROM check_test(
    expires_after($$SELECT example_pay_idempotent('ex-1', 100)$$, '24 hours',
                  'a payment key lives 24 hours'),
    true, 'expires_after on the idempotent handler', 'a payment key lives 24 hours', '');
SELECT is(current_setting('idempotency.clock_offset'), '0',
          'expires_after gives the clock back');
SELECT is((SELECT count(*) FROM idem_ledger WHERE scope = 'example_pay'), 0::bigint,
          'expires_after leaves no ledger row behind');

SELECT * FROM check_test(
    expires_after($$SELECT example_pay_idempotent('ex-1', 100)$$, '24 hours'),
    true, 'expires_after with its default description',
    $$SELECT example_pay_idempotent('ex-1', 100) expires after 24:00:00$$, '');

-- Another ttl, and a clock the test had already moved
SET LOCAL idempotency.default_ttl = '10 minutes';
SET LOCAL idempotency.clock_offset = '3 days';
SELECT * FROM check_test(
    expires_after($$SELECT example_pay_idempotent('ex-2', 100)$$, '10 minutes',
                  'a key lives 10 minutes on a moved clock'),
    true, 'expires_after with a moved clock', 'a key lives 10 minutes on a moved clock', '');
SELECT is(current_setting('idempotency.clock_offset'), '3 days',
          'expires_after gives a moved clock back as it was');
SET LOCAL idempotency.clock_offset = '0';
SET LOCAL idempotency.default_ttl = '24 hours';

-- The key outlives a shorter claim
SELECT * FROM check_test(
    expires_after($$SELECT example_pay_idempotent('ex-3', 100)$$, '12 hours',
                  'a payment key lives 12 hours'),
    false, 'expires_after with a ttl shorter than the key''s', 'a payment key lives 12 hours',
    $re$^12:00:01 after the first call, key "ex-3" \(scope "example_pay"\) was replayed, not executed afresh: it outlives the ttl
    row: completed, attempt 1, created \S+, expires \S+$$re$, true);

-- The key is gone before a longer claim
SELECT * FROM check_test(
    expires_after($$SELECT example_pay_idempotent('ex-4', 100)$$, '48 hours',
                  'a payment key lives 48 hours'),
    false, 'expires_after with a ttl longer than the key''s', 'a payment key lives 48 hours',
    $re$^47:59:59 after the first call, key "ex-4" \(scope "example_pay"\) had already expired: the call executed again
    before: completed, attempt 1, created \S+, expires \S+
    after:  completed, attempt 1, created \S+, expires \S+$$re$, true);
SELECT is(current_setting('idempotency.clock_offset'), '0',
          'a failing expires_after gives the clock back too');

-- The naive handler has no key to expire
SELECT * FROM check_test(
    expires_after($$SELECT example_pay_naive('ex-5', 100)$$, '24 hours',
                  'the naive handler expires after 24 hours'),
    false, 'expires_after on the naive handler', 'the naive handler expires after 24 hours',
    'the first call completed no key in idem_ledger: it does not go through idem_begin and idem_finish (or idem_once), or its key was already used');

SELECT * FROM check_test(
    expires_after($$SELECT example_pay_check_then_insert('ex-6', 100)$$, '24 hours',
                  'check-then-insert expires after 24 hours'),
    false, 'expires_after on check-then-insert', 'check-then-insert expires after 24 hours',
    'the first call completed no key in idem_ledger: it does not go through idem_begin and idem_finish (or idem_once), or its key was already used');

SELECT throws_ok(
    $$SELECT expires_after('SELECT 1', '0 seconds')$$,
    '22023', 'ttl must be positive',
    'expires_after refuses a ttl that is not positive');

SELECT * FROM finish();
ROLLBACK;
