--
-- idem_sweep: deletes expired keys, in batches, and counts them
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- nothing to sweep in an empty ledger
SELECT idem_sweep();

-- expire after one hour (lease plus ttl for attempts in progress)
SELECT outcome FROM idem_begin('done-short', ttl => '1 hour');
SELECT outcome FROM idem_finish('done-short', '{}');
SELECT outcome FROM idem_begin('held-short', lease => '1 minute', ttl => '1 hour');
SELECT outcome FROM idem_begin('failed-short', ttl => '1 hour');
SELECT idem_fail('failed-short');
SELECT idem_once('once-short', ttl => '1 hour');
SELECT outcome FROM idem_begin('retaken', '{"v": 1}', ttl => '1 hour');
SELECT outcome FROM idem_finish('retaken', '{}');
-- expire after ten hours
SELECT outcome FROM idem_begin('done-long', ttl => '10 hours');
SELECT outcome FROM idem_finish('done-long', '{}');
SELECT outcome FROM idem_begin('held-long', lease => '1 minute', ttl => '10 hours');

-- nothing has expired yet
SELECT idem_sweep();
SELECT count(*) FROM idem_ledger;

SET idempotency.clock_offset = '2 hours';
-- an expired key that was not swept yet already counts as absent
SELECT * FROM idem_begin('retaken', '{"v": 2}');
SELECT key, state, expires_at <= now() + '2 hours' AS expired
  FROM idem_ledger ORDER BY key;
-- batch_size limits the rows one call removes
SELECT idem_sweep(batch_size => 3);
SELECT idem_sweep(batch_size => 3);
SELECT idem_sweep();
-- what is left: live keys, and an attempt whose lease lapsed but whose
-- lease plus ttl has not passed
SELECT key, state, attempt, lease_until <= now() + '2 hours' AS lease_lapsed
  FROM idem_ledger ORDER BY key;

SET idempotency.clock_offset = '11 hours';
SELECT idem_sweep(batch_size => 1);
SELECT idem_sweep(batch_size => 1);
SELECT idem_sweep(batch_size => 1);
SELECT key, state FROM idem_ledger ORDER BY key;
SET idempotency.clock_offset = '3 days';
SELECT idem_sweep(NULL);
SELECT count(*) FROM idem_ledger;
RESET idempotency.clock_offset;

-- a role given idem_sweep without DELETE on the ledger is refused, as the
-- DELETE statement would refuse it, and nothing is deleted
SELECT idem_once('not-yours', ttl => '1 hour');
CREATE ROLE regress_idem_sweep_reader;
GRANT EXECUTE ON FUNCTION idem_sweep(int) TO regress_idem_sweep_reader;
GRANT SELECT, UPDATE ON idem_ledger TO regress_idem_sweep_reader;
SET idempotency.clock_offset = '2 hours';
SET ROLE regress_idem_sweep_reader;
SELECT idem_sweep();
\echo :SQLSTATE
RESET ROLE;
SELECT key FROM idem_ledger;
-- with DELETE as well, it sweeps
GRANT DELETE ON idem_ledger TO regress_idem_sweep_reader;
SET ROLE regress_idem_sweep_reader;
SELECT idem_sweep();
RESET ROLE;
RESET idempotency.clock_offset;
REVOKE ALL ON idem_ledger FROM regress_idem_sweep_reader;
REVOKE ALL ON FUNCTION idem_sweep(int) FROM regress_idem_sweep_reader;
DROP ROLE regress_idem_sweep_reader;

-- an expired row that the sweeping transaction itself holds locked (its
-- own idem_fail, or a FOR UPDATE of its own) is swept, as the DELETE
-- statement sweeps it; a lock of another transaction is skipped (see
-- test/specs/sweep_race.spec)
SELECT idem_once('mine-locked', ttl => '1 minute');
BEGIN;
SELECT key FROM idem_ledger WHERE key = 'mine-locked' FOR UPDATE;
SET LOCAL idempotency.clock_offset = '2 minutes';
SELECT idem_sweep();
SELECT count(*) AS left FROM idem_ledger WHERE key = 'mine-locked';
COMMIT;

-- batch_size must be positive
SELECT idem_sweep(0);
\echo :SQLSTATE
SELECT idem_sweep(-1);
\echo :SQLSTATE

DROP EXTENSION idempotency;
