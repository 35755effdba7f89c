/* idempotency_tap--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION idempotency_tap UPDATE TO '1.1'" to load this file. \quit

-- The ledger snapshot reads the ledger's own rows only: the rows of a table
-- that inherits from idem_ledger are not keys, and the extension itself
-- never reads them.
CREATE OR REPLACE FUNCTION @extschema@._idem_tap_ledger()
RETURNS jsonb
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    result jsonb;
BEGIN
    EXECUTE pg_catalog.format(
        'SELECT coalesce(pg_catalog.jsonb_object_agg('
        '           pg_catalog.jsonb_build_array(l.scope, l.key)::text, pg_catalog.to_jsonb(l)), ''{}'')'
        '  FROM ONLY %s.idem_ledger AS l', @extschema@._idem_tap_schema('idempotency'))
        INTO result;
    RETURN result;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_ledger() IS
'Internal: a snapshot of idem_ledger''s own rows (not an inheriting table''s), keyed by (scope, key)';
