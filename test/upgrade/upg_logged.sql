-- test/upgrade/upg_logged.sql: check.sql in the database whose ledger was logged on the source
\connect upg_logged
\set persistence p
\set digest :digest_logged
\ir check.sql
