--
-- idem_distribute without Citus: clear errors, and the ledger stays as it was
-- (test/t/030_citus.pl distributes it on a Citus cluster)
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
\set VERBOSITY default

-- only a primary key column may distribute the ledger
SELECT idem_distribute('fingerprint');
SELECT idem_distribute(NULL);

-- without the citus extension there is nothing to distribute with
SELECT idem_distribute();
SELECT idem_distribute('key');

-- closed to PUBLIC, like every function that changes the ledger's table
SELECT has_function_privilege('public', 'idem_distribute(text, regclass)', 'EXECUTE');

-- the ledger still works on the fast path
SELECT outcome FROM idem_begin('dist-1');
SELECT outcome FROM idem_finish('dist-1');
SELECT outcome FROM idem_begin('dist-1');

DROP EXTENSION idempotency;
