-- A row position remembered between begin and finish is checked against
-- the storage it came from: a ledger rewritten in between (TRUNCATE,
-- idem_set_logged) gives the documented answer, never a read error.
CREATE EXTENSION idempotency;

BEGIN;
SELECT outcome FROM idem_begin('k');
TRUNCATE idem_ledger;
SELECT idem_finish('k');
\echo :SQLSTATE
ROLLBACK;

-- A bloated ledger rewritten by idem_set_logged: the row moves, finish finds it
SELECT count(idem_once('bloat-' || g)) FROM generate_series(1, 20000) AS g;
DELETE FROM idem_ledger WHERE key LIKE 'bloat-%';
BEGIN;
SELECT outcome FROM idem_begin('moved');
SELECT idem_set_logged(false);
SELECT (idem_finish('moved', '{"ok": 1}')).outcome;
SELECT idem_set_logged(true);
COMMIT;
SELECT outcome, response FROM idem_begin('moved');

DROP EXTENSION idempotency;
