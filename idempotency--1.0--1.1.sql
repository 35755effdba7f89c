/* idempotency--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION idempotency UPDATE TO '1.1'" to load this file. \quit

-- Scopes as boundaries.  With idempotency.enforce_scope_grants on, a role
-- may use a scope only when it has the privileges of a role granted a
-- prefix of that scope here; superusers may use every scope.  The extension's
-- owner manages the table.  idem_begin, idem_finish, idem_fail and idem_once
-- check it in C before they touch the ledger, through a copy kept in each
-- backend that the trigger below invalidates.
CREATE TABLE @extschema@.idem_scope_grants (
    scope_prefix text    NOT NULL,
    grantee      regrole NOT NULL,
    CONSTRAINT idem_scope_grants_pkey PRIMARY KEY (scope_prefix, grantee)
);

COMMENT ON TABLE @extschema@.idem_scope_grants IS
'Which roles may use which scopes while idempotency.enforce_scope_grants is on: a role may use a scope that starts with a prefix granted to a role it has the privileges of';
COMMENT ON COLUMN @extschema@.idem_scope_grants.scope_prefix IS
'Scopes that start with these bytes are granted; end it with a separator (''tenant-1:''), since ''tenant-1'' also covers ''tenant-10''; '''' grants every scope';
COMMENT ON COLUMN @extschema@.idem_scope_grants.grantee IS
'The role granted the prefix; every role that has its privileges (a member that inherits them) may use it too';

-- pg_dump keeps the grants, as it keeps the ledger's rows
SELECT pg_catalog.pg_extension_config_dump('@extschema@.idem_scope_grants', '');

-- Plain writes send no cache invalidation: this trigger sends one, so that
-- every session reads the grants afresh (its own at its next command, the
-- others once the change commits).  ENABLE ALWAYS: it fires under
-- session_replication_role = replica too (logical replication, restores).
CREATE FUNCTION @extschema@.idem_scope_grants_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'idem_scope_grants_changed'
LANGUAGE C;

COMMENT ON FUNCTION @extschema@.idem_scope_grants_changed() IS
'Trigger on idem_scope_grants: tells every session to read the grants afresh';

CREATE TRIGGER idem_scope_grants_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.idem_scope_grants
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.idem_scope_grants_changed();
ALTER TABLE @extschema@.idem_scope_grants
    ENABLE ALWAYS TRIGGER idem_scope_grants_changed;

-- Nothing is open to PUBLIC; idempotency_user gets nothing new
REVOKE ALL ON TABLE @extschema@.idem_scope_grants FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.idem_scope_grants_changed() FROM PUBLIC;

-- Owner liveness.  An attempt in progress names the session that began it:
-- the backend's pid, its start time and the server's start time, 20 bytes
-- (int4send and timestamptz_send of each).  Once that session is gone the
-- next begin takes the key over without waiting for the lease.  Added as
-- the last column, so a new install (1.0, then this script) and an updated
-- 1.0 ledger have one layout.  Rows of 1.0 have none: their lease binds them.
ALTER TABLE @extschema@.idem_ledger ADD COLUMN owner bytea;

COMMENT ON COLUMN @extschema@.idem_ledger.owner IS
'The session that began the attempt in progress: pid (4 bytes), backend start and server start (8 bytes each, microseconds since 2000-01-01), big-endian; NULL once the attempt ended, or when none was recorded (the lease alone binds it)';

-- Counters an operator watches, per database: what begin answered, IK001s,
-- takeovers, finishes, fails, idem_once's answers, keys swept.  With the
-- library preloaded they are the server's, kept in shared memory until it
-- stops or idem_stats_reset(); without it, each session's own.
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
'What the API did in this database: begins by outcome, request mismatches (IK001), takeovers after a lapsed lease or a gone owner, finishes, fails, idem_once true and false, keys swept; since stats_reset; shared: counted for every session (library preloaded) or this session only';

CREATE FUNCTION @extschema@.idem_stats_reset()
RETURNS void
AS 'MODULE_PATHNAME', 'idem_stats_reset'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION @extschema@.idem_stats_reset() IS
'Zero the counters of idem_stats for the current database (this session''s only, when the library is not preloaded)';

-- Readable by pg_read_all_stats, as PostgreSQL's own statistics are; only
-- the extension's owner (and superusers) may reset them
REVOKE ALL ON FUNCTION @extschema@.idem_stats_read() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.idem_stats_reset() FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.idem_stats FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.idem_stats_read() TO pg_read_all_stats;
GRANT SELECT ON TABLE @extschema@.idem_stats TO pg_read_all_stats;

-- Scaling out with Citus.  idem_distribute makes the ledger a Citus
-- distributed table, by scope or by key: the primary key (key, scope)
-- includes either column, so each shard's unique index arbitrates between
-- concurrent duplicates.  The API then reaches the shards through
-- statements Citus plans; the direct path steps aside on a Citus table.
CREATE FUNCTION @extschema@.idem_distribute(
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
                  DETAIL = 'The distribution column must be one of the primary key''s: scope or key.',
                  HINT = 'Distribute by scope to keep a tenant''s keys beside its rows, by key to spread them evenly.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'the citus extension is not installed in this database'
            USING ERRCODE = '0A000',
                  HINT = 'Add citus to shared_preload_libraries, run CREATE EXTENSION citus and add the worker nodes first.';
    END IF;
    PERFORM pg_catalog.create_distributed_table(
        '@extschema@.idem_ledger'::pg_catalog.regclass, $1,
        colocate_with => COALESCE($2::pg_catalog.text, 'default'));
END
$$;

COMMENT ON FUNCTION @extschema@.idem_distribute(text, regclass) IS
'Make the ledger a Citus distributed table, by scope (beside tables distributed by tenant, co-located with colocate_with) or by key (even spread); run it on the coordinator';

REVOKE ALL ON FUNCTION @extschema@.idem_distribute(text, regclass) FROM PUBLIC;
