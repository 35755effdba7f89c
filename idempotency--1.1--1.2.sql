/* idempotency--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION idempotency UPDATE TO '1.2'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- A narrow primary key: the ledger's key is a 16-byte digest of (scope, key)
--
-- The primary key (key, scope) made index entries as wide as the key (some
-- 56 bytes for a UUID key); digest, the first 128 bits of the SHA-256 of
-- the pair as a uuid (fixed width, compared as bytes), makes them 24 bytes
-- whatever the key: fewer leaf pages, fewer full-page images, more of the
-- index in memory at tens of millions of live keys.  The key and the scope
-- stay in the row, where every call compares them: a row of another
-- (scope, key) under the same digest raises an error (SQLSTATE 23505),
-- never a replay of that key's response nor a hold on it.
--
-- digest is added as the last column (uuid needs no alignment, so it wastes
-- no byte there), after 1.1's owner: a new install (1.0, 1.1, then this
-- script) and an updated ledger have one layout.  The update rewrites the
-- ledger once, under an exclusive lock (a populated ledger of 10 million
-- keys takes minutes): ALTER COLUMN ... TYPE ... USING computes every row's
-- digest into a compact new heap, and the new primary key is built after
-- it.  On a ledger that Citus distributes, the primary key must hold the
-- distribution column: there it is (digest, that column).
-- ---------------------------------------------------------------------------

CREATE FUNCTION @extschema@.idem_digest(scope text, key text)
RETURNS uuid
AS 'MODULE_PATHNAME', 'idem_digest'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.idem_digest(text, text) IS
'The ledger''s primary key for (scope, key): the first 128 bits of the SHA-256 of the length of scope (4 bytes, big-endian), scope and key, in UTF-8; read a key through the index with WHERE digest = idem_digest(scope, key)';

ALTER TABLE @extschema@.idem_ledger ADD COLUMN digest uuid;

DO $do$
DECLARE
    distcol text;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension
               WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        EXECUTE 'SELECT pg_catalog.column_to_column_name(logicalrelid, partkey)'
                ' FROM pg_catalog.pg_dist_partition'
                ' WHERE logicalrelid OPERATOR(pg_catalog.=) $1'
                '   AND partkey IS NOT NULL'
           INTO distcol
          USING '@extschema@.idem_ledger'::pg_catalog.regclass;
    END IF;
    EXECUTE pg_catalog.format(
        'ALTER TABLE @extschema@.idem_ledger'
        '  ALTER COLUMN digest TYPE uuid USING @extschema@.idem_digest(scope, key),'
        '  ALTER COLUMN digest SET NOT NULL,'
        '  DROP CONSTRAINT idem_ledger_pkey,'
        '  ADD CONSTRAINT idem_ledger_pkey PRIMARY KEY (digest%s)',
        CASE WHEN distcol IS NULL THEN ''
             ELSE ', ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(distcol) END);
END
$do$;

COMMENT ON TABLE @extschema@.idem_ledger IS
'One row per (scope, key), found through digest, the primary key: idem_digest(scope, key)';
COMMENT ON COLUMN @extschema@.idem_ledger.digest IS
'The primary key: idem_digest(scope, key), the first 128 bits of the SHA-256 of the pair; written by the extension, never by hand';

-- idem_distribute: the primary key takes the distribution column too, as
-- Citus requires of a unique index
CREATE OR REPLACE FUNCTION @extschema@.idem_distribute(
    "by"          text     DEFAULT 'scope',
    colocate_with regclass DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF $1 IS NULL OR $1 NOT IN ('scope', 'key') THEN
        RAISE EXCEPTION 'cannot distribute the ledger by "%"', $1
            USING ERRCODE = '22023',
                  DETAIL = 'The distribution column must be scope or key; the primary key becomes (digest, that column).',
                  HINT = 'Distribute by scope to keep a tenant''s keys beside its rows, by key to spread them evenly.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'the citus extension is not installed in this database'
            USING ERRCODE = '0A000',
                  HINT = 'Add citus to shared_preload_libraries, run CREATE EXTENSION citus and add the worker nodes first.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_index i
                     JOIN pg_catalog.pg_attribute a
                       ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                      AND a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey)
                    WHERE i.indrelid OPERATOR(pg_catalog.=) '@extschema@.idem_ledger'::pg_catalog.regclass
                      AND i.indisprimary
                      AND a.attname OPERATOR(pg_catalog.=) $1) THEN
        EXECUTE pg_catalog.format(
            'ALTER TABLE @extschema@.idem_ledger DROP CONSTRAINT idem_ledger_pkey,'
            ' ADD CONSTRAINT idem_ledger_pkey PRIMARY KEY (digest, %I)', $1);
    END IF;
    PERFORM pg_catalog.create_distributed_table(
        '@extschema@.idem_ledger'::pg_catalog.regclass, $1,
        colocate_with => COALESCE($2::pg_catalog.text, 'default'));
END
$$;

COMMENT ON FUNCTION @extschema@.idem_distribute(text, regclass) IS
'Make the ledger a Citus distributed table, by scope (beside tables distributed by tenant, co-located with colocate_with) or by key (even spread), its primary key (digest, that column); run it on the coordinator';

REVOKE ALL ON FUNCTION @extschema@.idem_digest(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.idem_digest(text, text) TO idempotency_user;

-- end of the narrow primary key
-- ---------------------------------------------------------------------------
