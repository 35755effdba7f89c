--
-- Settings: defaults, accepted and rejected values, who may change what
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- the defaults
SHOW idempotency.default_ttl;
SHOW idempotency.default_lease;
SHOW idempotency.clock_offset;
SHOW idempotency.sweep_interval;
SHOW idempotency.sweep_batch_size;
SHOW idempotency.sweep_rate_limit;
SELECT name, setting, unit, context, vartype, boot_val
  FROM pg_settings WHERE name LIKE 'idempotency.%' ORDER BY name;

-- interval settings take any interval syntax, and idem_begin uses them
SET idempotency.default_ttl = '1 hour';
SHOW idempotency.default_ttl;
SET idempotency.default_lease = '90 s';
SHOW idempotency.default_lease;
SELECT outcome FROM idem_begin('guc-1');
SELECT lease_until - created_at AS lease, expires_at - lease_until AS ttl
  FROM idem_ledger WHERE key = 'guc-1';
SET idempotency.default_ttl = 'P1DT2H';
SET idempotency.default_lease = 'PT5M';
SHOW idempotency.default_lease;
SELECT outcome FROM idem_begin('guc-2');
SELECT lease_until - created_at AS lease, expires_at - lease_until AS ttl
  FROM idem_ledger WHERE key = 'guc-2';
-- idem_once takes its ttl from default_ttl too
SELECT idem_once('guc-3');
SELECT expires_at - created_at AS ttl FROM idem_ledger WHERE key = 'guc-3';
-- SET LOCAL lasts for the transaction
BEGIN;
SET LOCAL idempotency.default_ttl = '10 minutes';
SHOW idempotency.default_ttl;
COMMIT;
SHOW idempotency.default_ttl;
RESET idempotency.default_ttl;
RESET idempotency.default_lease;
SHOW idempotency.default_ttl;
SHOW idempotency.default_lease;

-- rejected values: not an interval, zero, negative
SET idempotency.default_ttl = 'tomorrow';
\echo :SQLSTATE
SET idempotency.default_ttl = '0';
\echo :SQLSTATE
SET idempotency.default_ttl = '-1 hour';
\echo :SQLSTATE
SET idempotency.default_ttl = '';
\echo :SQLSTATE
SET idempotency.default_lease = '5 parsecs';
\echo :SQLSTATE
SET idempotency.default_lease = '0 seconds';
\echo :SQLSTATE
SET idempotency.default_lease = 'PT-1M';
\echo :SQLSTATE
SET idempotency.clock_offset = 'later';
\echo :SQLSTATE
-- an interval too long to add to a timestamp is an invalid value too
\set VERBOSITY sqlstate
SET idempotency.default_ttl = '300000 years';
SET idempotency.default_lease = '300000 years';
\set VERBOSITY default
SHOW idempotency.default_ttl;
SHOW idempotency.default_lease;
SHOW idempotency.clock_offset;

-- clock_offset may move the clock back as well as forward
SET idempotency.clock_offset = '-1 day';
SHOW idempotency.clock_offset;
SET idempotency.clock_offset = 'PT36H';
SHOW idempotency.clock_offset;
RESET idempotency.clock_offset;

-- clock_offset is for superusers only; the other interval settings are not
CREATE ROLE regress_idem_guc;
SET ROLE regress_idem_guc;
SET idempotency.clock_offset = '1 hour';
\echo :SQLSTATE
SELECT set_config('idempotency.clock_offset', '1 hour', false);
\echo :SQLSTATE
SHOW idempotency.clock_offset;
SET idempotency.default_ttl = '2 hours';
SHOW idempotency.default_ttl;
RESET idempotency.default_ttl;
RESET ROLE;
DROP ROLE regress_idem_guc;

-- the sweeper's settings change only on reload
SET idempotency.sweep_interval = '5min';
\echo :SQLSTATE
SET idempotency.sweep_batch_size = 100;
\echo :SQLSTATE
SET idempotency.sweep_rate_limit = 1000;
\echo :SQLSTATE
SHOW idempotency.sweep_interval;
SHOW idempotency.sweep_batch_size;
SHOW idempotency.sweep_rate_limit;

-- the idempotency prefix is reserved: unknown names are refused
SET idempotency.default_tll = '1 hour';
\echo :SQLSTATE
SET idempotency.nonexistent = 'on';
\echo :SQLSTATE

DROP EXTENSION idempotency;
