-- test/upgrade/upg_unlogged.sql: check.sql in the database whose ledger was UNLOGGED on the source
\connect upg_unlogged
\set persistence :unlogged_persistence
\set digest :digest_unlogged
\ir check.sql
