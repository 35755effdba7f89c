-- Owner liveness: a committed attempt in progress whose session is gone is
-- taken over by the next begin at once; a live owner keeps its key, however
-- idle.  Sessions that are gone are made here by writing the owner column
-- as a dead session would have left it (the TAP test 027 ends real ones).
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never

-- A new install has the layout of an updated 1.0 ledger (upgrade.sql): the
-- owner column last
SELECT attnum, attname, atttypid::regtype, attnotnull
  FROM pg_attribute
 WHERE attrelid = 'idem_ledger'::regclass AND attnum > 0 AND NOT attisdropped
 ORDER BY attnum;

-- The owner as the ledger keeps it: pid, backend start, server start
CREATE FUNCTION owner_of(pid int, started timestamptz, server timestamptz)
RETURNS bytea LANGUAGE sql
AS $$ SELECT int4send(pid) || timestamptz_send(started) || timestamptz_send(server) $$;
CREATE VIEW me AS
SELECT pid, backend_start, pg_postmaster_start_time() AS server
  FROM pg_stat_activity WHERE pid = pg_backend_pid();

-- A new attempt names this session as its owner
SELECT outcome, attempt FROM idem_begin('mine', lease => '1 hour');
SELECT l.owner = owner_of(me.pid, me.backend_start, me.server) AS owner_is_me,
       length(l.owner) AS owner_bytes
  FROM idem_ledger l, me WHERE l.key = 'mine';
-- a live owner (this session: committed, idle since) keeps its key
SELECT outcome, attempt FROM idem_begin('mine');
-- finishing it forgets the owner
SELECT outcome, attempt FROM idem_finish('mine', '{"ok": true}');
SELECT state, owner IS NULL AS no_owner FROM idem_ledger WHERE key = 'mine';
-- idem_once records no owner: its key is completed at once
SELECT idem_once('msg');
SELECT owner IS NULL AS no_owner FROM idem_ledger WHERE key = 'msg';

-- An owner whose backend is gone: no backend has that pid
SELECT outcome, attempt FROM idem_begin('dead', '{"n": 1}', lease => '1 hour');
UPDATE idem_ledger SET owner = owner_of(0, me.backend_start, me.server)
  FROM me WHERE key = 'dead';
-- a different request is still IK001, and takes nothing over
SELECT outcome FROM idem_begin('dead', '{"n": 2}');
\echo :SQLSTATE
SELECT outcome, attempt FROM idem_begin('dead', '{"n": 1}');
SELECT l.owner = owner_of(me.pid, me.backend_start, me.server) AS owner_is_me
  FROM idem_ledger l, me WHERE l.key = 'dead';
-- the dead owner's late finish meets IK003; the new owner finishes
SELECT idem_finish('dead', attempt => 1);
\echo :SQLSTATE
SELECT outcome, attempt FROM idem_finish('dead', '{"paid": 1}', attempt => 2);

-- pid reuse: a live backend has the owner's pid (this one), but started at
-- another time: it is not the owner
SELECT outcome, attempt FROM idem_begin('reused', lease => '1 hour');
UPDATE idem_ledger
   SET owner = owner_of(me.pid, me.backend_start - interval '1 microsecond', me.server)
  FROM me WHERE key = 'reused';
SELECT outcome, attempt FROM idem_begin('reused');
SELECT idem_fail('reused', attempt => 1);
\echo :SQLSTATE

-- an owner on another server start (a restart, a promoted standby, a
-- restored dump) is gone, whatever its pid
SELECT outcome, attempt FROM idem_begin('restarted', lease => '1 hour');
UPDATE idem_ledger
   SET owner = owner_of(me.pid, me.backend_start, me.server - interval '1 second')
  FROM me WHERE key = 'restarted';
SELECT outcome, attempt FROM idem_begin('restarted');

-- idem_once takes over from a gone owner too
SELECT outcome FROM idem_begin('once-dead', lease => '1 hour');
UPDATE idem_ledger SET owner = owner_of(0, me.backend_start, me.server)
  FROM me WHERE key = 'once-dead';
SELECT idem_once('once-dead');
SELECT state, attempt FROM idem_ledger WHERE key = 'once-dead';

-- No owner recorded (a row of 1.0, or idempotency.owner_liveness off): the
-- lease alone binds the attempt
SET idempotency.owner_liveness = off;
SELECT outcome, attempt FROM idem_begin('leased', lease => '1 hour');
SELECT owner IS NULL AS no_owner FROM idem_ledger WHERE key = 'leased';
RESET idempotency.owner_liveness;
SELECT outcome, attempt FROM idem_begin('leased');
SET idempotency.clock_offset = '61 minutes';
SELECT outcome, attempt FROM idem_begin('leased');
RESET idempotency.clock_offset;

-- A value of the wrong length names no session: the lease binds
SELECT outcome FROM idem_begin('garbled', lease => '1 hour');
UPDATE idem_ledger SET owner = '\x00' WHERE key = 'garbled';
SELECT outcome, attempt FROM idem_begin('garbled');

-- The own transaction's attempt is never taken from, whatever its owner says
BEGIN;
SELECT outcome, attempt FROM idem_begin('in-xact', lease => '1 hour');
UPDATE idem_ledger SET owner = owner_of(0, now(), now()) WHERE key = 'in-xact';
SELECT outcome, attempt FROM idem_begin('in-xact');
COMMIT;
-- committed, the same owner is gone
SELECT outcome, attempt FROM idem_begin('in-xact');

DROP VIEW me;
DROP FUNCTION owner_of(int, timestamptz, timestamptz);
DROP EXTENSION idempotency;
