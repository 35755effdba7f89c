/* idempotency--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION idempotency UPDATE TO '1.3'" to load this file. \quit

-- ---------------------------------------------------- UUIDv7 keys in order
-- 1.2's digest, the first 128 bits of the SHA-256 of (scope, key), scatters
-- keys made one after another over the whole primary key: at ten million
-- keys nearly every new key dirties a leaf that no other change has
-- touched since the last checkpoint, and that leaf goes whole into the WAL.
-- From 1.3, the digest of a key that is a UUIDv7 in its text form (8-4-4-4-12
-- hex digits, version 7, the RFC 9562 variant) starts with the key's first
-- 32 bits, the top of its millisecond timestamp, followed by the first 96
-- bits of the same SHA-256: such keys land on the right-most leaves, as
-- on a primary key of the keys themselves, at 16 bytes an entry.  Every
-- other key keeps its digest.
--
-- The library reads which digest a ledger uses from its schema's
-- idem_digest(text, text), after it has locked the ledger.  So the ledger
-- is locked first, here: no call writes a row with the old digest once the
-- rows are rewritten, and the calls that waited for the lock read the new
-- function when this commits.  Only the rows of UUIDv7 keys change (the
-- ledger's, and those of tables that inherit from it), by an UPDATE whose
-- new digest is written out in SQL rather than by idem_digest: on a ledger
-- that Citus distributes, the shards' nodes may not have updated their own
-- idem_digest yet when the statement reaches them.  Then a CHECK constraint
-- holds every row written by other hands than the library's to the new
-- digest: a dump of 1.2 restored under 1.3 fails loudly instead of leaving
-- UUIDv7 keys where no call finds them.
-- ---------------------------------------------------------------------------

LOCK TABLE @extschema@.idem_ledger IN ACCESS EXCLUSIVE MODE;

CREATE OR REPLACE FUNCTION @extschema@.idem_digest(scope text, key text)
RETURNS uuid
AS 'MODULE_PATHNAME', 'idem_digest_ordered'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.idem_digest(text, text) IS
'The ledger''s primary key for (scope, key): the first 128 bits of the SHA-256 of the length of scope (4 bytes, big-endian), scope and key, in UTF-8; for a key that is a UUIDv7 in its text form, the key''s first 32 bits and the first 96 bits of that SHA-256. Read a key through the index with WHERE digest = idem_digest(scope, key)';

DO $do$
DECLARE
    -- a text column's UTF-8 bytes, as SQL: in a UTF8 (or SQL_ASCII)
    -- database the text's own bytes, by IMMUTABLE functions (Citus sends no
    -- STABLE function of a column to the shards, and convert_to is one)
    utf8 text := CASE WHEN pg_catalog.getdatabaseencoding() IN ('UTF8', 'SQL_ASCII')
                      THEN $e$pg_catalog.decode(pg_catalog.replace(%1$s, '\', '\\'), 'escape')$e$
                      ELSE $e$pg_catalog.convert_to(%1$s, 'UTF8')$e$ END;
    -- a key that is a UUIDv7 in its text form
    v7 text := pg_catalog.quote_literal(
        '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-7[0-9A-Fa-f]{3}-[89ABab][0-9A-Fa-f]{3}-[0-9A-Fa-f]{12}$');
    sha text;           -- the SHA-256 of (scope, key), as SQL
    ordered text;       -- a UUIDv7 key's digest
    plain text;         -- any other key's
    on_worker boolean;
BEGIN
    sha := pg_catalog.format(
        'pg_catalog.sha256(pg_catalog.int4send(pg_catalog.octet_length(%1$s))'
        ' OPERATOR(pg_catalog.||) %1$s OPERATOR(pg_catalog.||) %2$s)',
        pg_catalog.format(utf8, 'scope'), pg_catalog.format(utf8, 'key'));
    ordered := pg_catalog.format(
        $f$pg_catalog.encode(pg_catalog.decode(pg_catalog.substr(key, 1, 8), 'hex')
           OPERATOR(pg_catalog.||) pg_catalog.substr(%s, 1, 12), 'hex')::pg_catalog.uuid$f$, sha);
    plain := pg_catalog.format(
        $f$pg_catalog.encode(pg_catalog.substr(%s, 1, 16), 'hex')::pg_catalog.uuid$f$, sha);

    -- on a ledger that Citus distributes, the coordinator's statements
    -- reach every shard; a worker, where the update arrives from the
    -- coordinator, has none of its own to change
    IF EXISTS (SELECT FROM pg_catalog.pg_extension
                WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        EXECUTE $c$
            SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition
                            WHERE logicalrelid OPERATOR(pg_catalog.=) $1)
               AND (SELECT groupid FROM pg_catalog.pg_dist_local_group)
                   OPERATOR(pg_catalog.<>) 0
        $c$ INTO on_worker USING '@extschema@.idem_ledger'::pg_catalog.regclass;
        IF on_worker THEN
            RETURN;
        END IF;
    END IF;

    EXECUTE pg_catalog.format(
        'UPDATE @extschema@.idem_ledger SET digest = %s WHERE key OPERATOR(pg_catalog.~) %s',
        ordered, v7);

    -- A row whose digest is not idem_digest's is an error from now on:
    -- written by hand, copied in by a restore of a 1.2 dump (whose UUIDv7
    -- keys carry 1.2's digest), or applied by replication from a 1.2
    -- server.  The digest is written out in SQL here too, so that the
    -- constraint depends on no function of the extension (the shards of a
    -- Citus ledger carry it, and DROP EXTENSION must not trip over them).
    -- NOT VALID: the rows are right, the statement above saw to it, and a
    -- check of them all would hold the lock for a scan.  The library's own
    -- writes need no check and make none.
    -- Citus does not carry DDL that an extension's script runs to the shards
    -- of a ledger it distributes already: doc/citus.md gives the command
    -- that adds it to them once this has committed.
    EXECUTE pg_catalog.format(
        'ALTER TABLE @extschema@.idem_ledger ADD CONSTRAINT idem_ledger_digest_check'
        ' CHECK (digest OPERATOR(pg_catalog.=)'
        ' CASE WHEN key OPERATOR(pg_catalog.~) %s THEN %s ELSE %s END) NOT VALID',
        v7, ordered, plain);
END
$do$;

COMMENT ON COLUMN @extschema@.idem_ledger.digest IS
'The primary key: idem_digest(scope, key), drawn from the SHA-256 of the pair (a UUIDv7 key''s first 32 bits first); written by the extension, never by hand';

-- end of UUIDv7 keys in order
-- ---------------------------------------------------------------------------
