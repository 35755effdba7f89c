--
-- idem_set_logged: switch the ledger between logged and UNLOGGED
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never

-- logged by default, and its rows are dumped
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'idempotency';
SELECT relname, relpersistence FROM pg_class
 WHERE oid IN ('idem_ledger'::regclass, 'idem_ledger_pkey'::regclass) ORDER BY relname;
SELECT * FROM idem_begin('log-1', '{"n": 1}');
SELECT * FROM idem_finish('log-1', '{"stored": "logged"}');

-- UNLOGGED: the rows are kept and the API works as before
SELECT idem_set_logged(false);
SELECT relname, relpersistence FROM pg_class
 WHERE oid IN ('idem_ledger'::regclass, 'idem_ledger_pkey'::regclass) ORDER BY relname;
SELECT * FROM idem_begin('log-1', '{"n": 1}');
SELECT * FROM idem_begin('log-2', '{"n": 2}');
SELECT * FROM idem_begin('log-2', '{"n": 2}');
SELECT * FROM idem_finish('log-2', '{"stored": "unlogged"}');
SELECT * FROM idem_begin('log-2', '{"n": 2}');
SELECT * FROM idem_begin('log-2', '{"n": 3}');
\echo :SQLSTATE
SELECT idem_once('log-3');
SELECT idem_once('log-3');
-- switching to the mode the ledger already has is harmless
SELECT idem_set_logged(false);

-- back to logged, with every row kept; the ledger is still dumped
SELECT idem_set_logged(true);
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'idempotency';
SELECT relname, relpersistence FROM pg_class
 WHERE oid IN ('idem_ledger'::regclass, 'idem_ledger_pkey'::regclass) ORDER BY relname;
SELECT key, state, status, response FROM idem_ledger ORDER BY key;
SELECT * FROM idem_begin('log-1', '{"n": 1}');
SELECT * FROM idem_begin('log-2', '{"n": 2}');
SELECT idem_set_logged(true);

-- the switch is transactional
BEGIN;
SELECT idem_set_logged(false);
SELECT relpersistence FROM pg_class WHERE oid = 'idem_ledger'::regclass;
SELECT * FROM idem_begin('log-4');
ROLLBACK;
SELECT relpersistence FROM pg_class WHERE oid = 'idem_ledger'::regclass;
SELECT count(*) FROM idem_ledger;
SELECT * FROM idem_begin('log-1', '{"n": 1}');
SELECT * FROM idem_begin('log-4');

-- NULL is not a mode
SELECT idem_set_logged(NULL);
\echo :SQLSTATE
SELECT relpersistence FROM pg_class WHERE oid = 'idem_ledger'::regclass;

-- only the ledger's owner may switch it, not an application role
CREATE ROLE regress_idem_logged;
GRANT idempotency_user TO regress_idem_logged;
SET ROLE regress_idem_logged;
SELECT idem_set_logged(false);
\echo :SQLSTATE
RESET ROLE;
SELECT relpersistence FROM pg_class WHERE oid = 'idem_ledger'::regclass;
DROP ROLE regress_idem_logged;

DROP EXTENSION idempotency;
