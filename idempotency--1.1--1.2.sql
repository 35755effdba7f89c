/* idempotency--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION idempotency UPDATE TO '1.2'" to load this file. \quit

-- ------------------------------------------------------------------ await
-- idem_begin gains a last argument, await: how long a begin that meets
-- another session's committed attempt in progress waits for it to settle
-- (finished: replayed; released, taken over or its owner gone: started;
-- the interval passed: in_progress).  NULL, the default, answers at once
-- as before.  A function's arguments cannot change in place, so the
-- function is made anew: calls by position and by name read as before.
-- The new function keeps the old one's owner (it runs as its owner:
-- SECURITY DEFINER) and privileges, grants made since CREATE EXTENSION
-- included; the extension's initial privileges, which pg_dump compares
-- with, stay those the install script gave.
DO $await$
DECLARE
    old_owner    pg_catalog.regrole;
    old_acl      pg_catalog.aclitem[];
    initial_acl  pg_catalog.aclitem[];
    new_begin    pg_catalog.regprocedure;
    item         record;
BEGIN
    SELECT p.proowner, p.proacl INTO old_owner, old_acl
      FROM pg_catalog.pg_proc p
     WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.idem_begin(pg_catalog.text, pg_catalog.jsonb, pg_catalog.text, pg_catalog.interval, pg_catalog.interval, boolean)'::pg_catalog.regprocedure;

    DROP FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean);

    CREATE FUNCTION @extschema@.idem_begin(
        key     text,
        request jsonb    DEFAULT NULL,
        scope   text     DEFAULT '',
        ttl     interval DEFAULT NULL,
        lease   interval DEFAULT NULL,
        wait    boolean  DEFAULT true,
        await   interval DEFAULT NULL)
    RETURNS @extschema@.idem_result
    AS 'MODULE_PATHNAME', 'idem_begin'
    LANGUAGE C VOLATILE SECURITY DEFINER;
    new_begin := '@extschema@.idem_begin(pg_catalog.text, pg_catalog.jsonb, pg_catalog.text, pg_catalog.interval, pg_catalog.interval, boolean, pg_catalog.interval)'::pg_catalog.regprocedure;

    COMMENT ON FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean, interval) IS
    'Claim an idempotency key: started (do the work), replayed (stored response) or in_progress (another attempt holds it); with await, wait that long for another session''s attempt to settle first';

    -- the old function's owner, then the privileges of 1.0's install script
    EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %s', new_begin, old_owner);
    REVOKE ALL ON FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean, interval) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean, interval) TO idempotency_user;
    SELECT p.proacl INTO initial_acl FROM pg_catalog.pg_proc p
     WHERE p.oid OPERATOR(pg_catalog.=) new_begin;

    -- then what was granted or revoked since
    IF old_acl IS NULL THEN
        old_acl := pg_catalog.acldefault('f', old_owner);
    END IF;
    FOR item IN
        SELECT a.grantee, a.is_grantable
          FROM pg_catalog.aclexplode(old_acl) a
         WHERE a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
           AND a.grantee OPERATOR(pg_catalog.<>) old_owner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', new_begin,
            CASE WHEN item.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                 ELSE item.grantee::pg_catalog.regrole::pg_catalog.text END,
            CASE WHEN item.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_catalog.aclexplode(old_acl) a
                    WHERE a.grantee OPERATOR(pg_catalog.=) 'idempotency_user'::pg_catalog.regrole) THEN
        REVOKE ALL ON FUNCTION @extschema@.idem_begin(text, jsonb, text, interval, interval, boolean, interval) FROM idempotency_user;
    END IF;

    -- Every GRANT in an extension script is recorded as an initial
    -- privilege of the extension, which pg_dump leaves to CREATE EXTENSION:
    -- put back the install script's, so that a dump keeps the grants made
    -- since as the user's own.
    UPDATE pg_catalog.pg_init_privs
       SET initprivs = initial_acl
     WHERE objoid OPERATOR(pg_catalog.=) new_begin
       AND classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
       AND objsubid OPERATOR(pg_catalog.=) 0;
END
$await$;

-- The counters gain awaits (begins that awaited another session's attempt)
-- and await_timeouts (of those, the ones whose interval ran out), after
-- keys_swept.  A view's columns cannot be inserted in place: the view and
-- its function are made anew, with 1.1's privileges.
DROP VIEW @extschema@.idem_stats;
DROP FUNCTION @extschema@.idem_stats_read();

CREATE FUNCTION @extschema@.idem_stats_read(
    OUT started              bigint,
    OUT replayed             bigint,
    OUT in_progress          bigint,
    OUT mismatches           bigint,
    OUT takeovers_lease      bigint,
    OUT takeovers_owner_gone bigint,
    OUT finishes             bigint,
    OUT fails                bigint,
    OUT once_true            bigint,
    OUT once_false           bigint,
    OUT keys_swept           bigint,
    OUT awaits               bigint,
    OUT await_timeouts       bigint,
    OUT stats_reset          timestamptz,
    OUT shared               boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'idem_stats'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION @extschema@.idem_stats_read() IS
'The counters of the current database, as the view idem_stats shows them';

CREATE VIEW @extschema@.idem_stats AS
SELECT * FROM @extschema@.idem_stats_read();

COMMENT ON VIEW @extschema@.idem_stats IS
'What the API did in this database: begins by outcome, request mismatches (IK001), takeovers after a lapsed lease or a gone owner, finishes, fails, idem_once true and false, keys swept, begins that awaited an attempt and those whose await ran out; since stats_reset; shared: counted for every session (library preloaded) or this session only';

REVOKE ALL ON FUNCTION @extschema@.idem_stats_read() FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.idem_stats FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.idem_stats_read() TO pg_read_all_stats;
GRANT SELECT ON TABLE @extschema@.idem_stats TO pg_read_all_stats;
-- ------------------------------------------------------------- end await

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
