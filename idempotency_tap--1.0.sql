/* idempotency_tap--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION idempotency_tap" to load this file. \quit

-- pgTAP assertions that prove a handler idempotent: a repeated call changes
-- nothing, a duplicate replays, a changed request is refused, concurrent
-- duplicates run once, a key expires after its ttl, and redelivery around
-- rollbacks has one effect.  Each assertion calls pgTAP's ok() exactly once,
-- so it counts as one test in a plan and works with check_test().
--
-- Functions whose names start with _idem_tap_ are internal.  The kit's own
-- objects and the catalog's are schema-qualified; the schemas of pgtap,
-- dblink and idempotency are looked up when a function runs, so the kit
-- keeps working wherever those extensions live.  No function sets its own
-- search_path: the calls under test are the caller's SQL and must resolve
-- names as the caller does.

------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------

CREATE FUNCTION @extschema@._idem_tap_schema(extension name)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    nsp text;
BEGIN
    SELECT pg_catalog.quote_ident(n.nspname) INTO nsp
      FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = extension;
    IF nsp IS NULL THEN
        RAISE EXCEPTION 'extension "%" is not installed', extension
            USING ERRCODE = 'undefined_object',
                  HINT = pg_catalog.format('idempotency_tap needs it: CREATE EXTENSION %s;', extension);
    END IF;
    RETURN nsp;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_schema(name) IS
'Internal: the quoted schema of an installed extension';

CREATE FUNCTION @extschema@._idem_tap_ok(description text, problems text[])
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    tap    text := @extschema@._idem_tap_schema('pgtap');
    passed boolean := pg_catalog.cardinality(coalesce(problems, '{}')) = 0;
    output text;
    notes  text;
BEGIN
    EXECUTE pg_catalog.format('SELECT %s.ok($1, $2)', tap)
        INTO output USING passed, description;
    IF NOT passed THEN
        EXECUTE pg_catalog.format('SELECT %s.diag($1::text)', tap)
            INTO notes USING pg_catalog.array_to_string(problems, E'\n');
        output := output || E'\n' || notes;
    END IF;
    RETURN output;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_ok(text, text[]) IS
'Internal: one pgTAP test, passing when there are no problems, with the problems as diagnostics';

-- Run one SQL statement, catching its error.  The result is a jsonb array
-- with one object per row it returned, or {"row_count": n} for a statement
-- that returns no rows (an INSERT without RETURNING, a CALL without output
-- arguments).  On error, result is NULL and the call's work is undone.
CREATE FUNCTION @extschema@._idem_tap_run(
    call              text,
    OUT result        jsonb,
    OUT error_code    text,
    OUT error_message text)
LANGUAGE plpgsql
AS $$
DECLARE
    r record;
    n bigint;
BEGIN
    result := '[]';
    BEGIN
        FOR r IN EXECUTE call LOOP
            result := result || pg_catalog.jsonb_build_array(pg_catalog.to_jsonb(r));
        END LOOP;
    EXCEPTION
        WHEN invalid_cursor_definition THEN
            -- not a statement that returns rows: run it as it is
            BEGIN
                EXECUTE call;
                GET DIAGNOSTICS n = ROW_COUNT;
                result := pg_catalog.jsonb_build_object('row_count', n);
            EXCEPTION WHEN OTHERS THEN
                result := NULL;
                error_code := SQLSTATE;
                error_message := SQLERRM;
            END;
        WHEN OTHERS THEN
            result := NULL;
            error_code := SQLSTATE;
            error_message := SQLERRM;
    END;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_run(text) IS
'Internal: run one statement and return its rows as jsonb, or its SQLSTATE and message if it failed';

CREATE FUNCTION @extschema@._idem_tap_failure(what text, error_code text, error_message text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT pg_catalog.format('%s failed: SQLSTATE %s: %s', what, error_code, error_message)
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_failure(text, text, text) IS
'Internal: the diagnostic line for a call that raised an error';

-- The rows of each table as {"<table oid>": [row text, ...]}, sorted.  Rows
-- are compared as a multiset of their text forms, so order never matters.
CREATE FUNCTION @extschema@._idem_tap_rows(tables regclass[])
RETURNS jsonb
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    result jsonb := '{}';
    t      regclass;
    tbl    jsonb;
BEGIN
    FOREACH t IN ARRAY coalesce(tables, '{}') LOOP
        EXECUTE pg_catalog.format(
            'SELECT coalesce(pg_catalog.jsonb_agg(s.r ORDER BY s.r COLLATE "C"), ''[]'')'
            ' FROM (SELECT idem_tap_row::text AS r FROM %s AS idem_tap_row) AS s', t)
            INTO tbl;
        result := result || pg_catalog.jsonb_build_object(t::oid::text, tbl);
    END LOOP;
    RETURN result;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_rows(regclass[]) IS
'Internal: the rows of the observed tables, as sorted row texts keyed by table oid';

-- Multiset difference between two _idem_tap_rows snapshots: one row per
-- table that differs, with the rows only the old snapshot has (removed) and
-- the rows only the new one has (added), duplicates counted.
CREATE FUNCTION @extschema@._idem_tap_rows_diff(old_rows jsonb, new_rows jsonb)
RETURNS TABLE (tbl regclass, removed text[], added text[])
LANGUAGE sql
SET jit = off       -- the estimates of the set-returning functions would make it compile
AS $$
    WITH tabs AS (
        SELECT k FROM pg_catalog.jsonb_object_keys(coalesce(old_rows, '{}')) AS k
        UNION
        SELECT k FROM pg_catalog.jsonb_object_keys(coalesce(new_rows, '{}')) AS k
    ), o AS (
        SELECT tabs.k, e.r, pg_catalog.count(*) AS n
          FROM tabs, pg_catalog.jsonb_array_elements_text(coalesce(old_rows -> tabs.k, '[]')) AS e(r)
         GROUP BY 1, 2
    ), n AS (
        SELECT tabs.k, e.r, pg_catalog.count(*) AS n
          FROM tabs, pg_catalog.jsonb_array_elements_text(coalesce(new_rows -> tabs.k, '[]')) AS e(r)
         GROUP BY 1, 2
    ), d AS (
        SELECT coalesce(n.k, o.k) AS k, coalesce(n.r, o.r) AS r,
               coalesce(n.n, 0) - coalesce(o.n, 0) AS delta
          FROM n FULL JOIN o ON n.k = o.k AND n.r = o.r
    )
    SELECT d.k::oid::regclass,
           coalesce(pg_catalog.array_agg(d.r ORDER BY d.r COLLATE "C") FILTER (WHERE d.delta < 0), '{}'),
           coalesce(pg_catalog.array_agg(d.r ORDER BY d.r COLLATE "C") FILTER (WHERE d.delta > 0), '{}')
      FROM d, pg_catalog.generate_series(1, pg_catalog.abs(d.delta)) AS g
     WHERE d.delta <> 0
     GROUP BY d.k
     ORDER BY d.k::oid
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_rows_diff(jsonb, jsonb) IS
'Internal: per table, the rows removed and added between two snapshots (multiset difference)';

-- Diagnostic lines listing rows, at most ten of each kind
CREATE FUNCTION @extschema@._idem_tap_row_lines(removed text[], added text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(pg_catalog.array_agg(line ORDER BY kind, i), '{}')
      FROM (
        SELECT 1 AS kind, i, CASE WHEN i <= 10 THEN '    removed: ' || r
                                   ELSE pg_catalog.format('    ... and %s more removed', pg_catalog.cardinality(removed) - 10) END AS line
          FROM pg_catalog.unnest(removed) WITH ORDINALITY AS u(r, i)
         WHERE i <= 11
        UNION ALL
        SELECT 2, i, CASE WHEN i <= 10 THEN '    added:   ' || r
                          ELSE pg_catalog.format('    ... and %s more added', pg_catalog.cardinality(added) - 10) END
          FROM pg_catalog.unnest(added) WITH ORDINALITY AS u(r, i)
         WHERE i <= 11
      ) AS s
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_row_lines(text[], text[]) IS
'Internal: diagnostic lines for removed and added rows, at most ten of each';

-- Compare an actual effect with the effect of one execution, by the number
-- of rows each observed table gained and lost (the rows themselves may
-- differ: a rolled-back execution still draws sequence values and has its
-- own timestamps).  Returns one problem per table whose counts differ.
CREATE FUNCTION @extschema@._idem_tap_effect_problems(
    tables   regclass[],
    baseline jsonb,
    once     jsonb,
    actual   jsonb,
    what     text)
RETURNS text[]
LANGUAGE plpgsql
AS $$
DECLARE
    problems text[] := '{}';
    t        regclass;
    want_rm  int;
    want_add int;
    have_rm  text[];
    have_add text[];
BEGIN
    FOREACH t IN ARRAY coalesce(tables, '{}') LOOP
        SELECT coalesce(pg_catalog.cardinality(d.removed), 0), coalesce(pg_catalog.cardinality(d.added), 0)
          INTO want_rm, want_add
          FROM (SELECT 1) AS one
          LEFT JOIN @extschema@._idem_tap_rows_diff(baseline, once) AS d ON d.tbl = t;
        SELECT coalesce(d.removed, '{}'), coalesce(d.added, '{}')
          INTO have_rm, have_add
          FROM (SELECT 1) AS one
          LEFT JOIN @extschema@._idem_tap_rows_diff(baseline, actual) AS d ON d.tbl = t;
        IF pg_catalog.cardinality(have_rm) <> want_rm OR pg_catalog.cardinality(have_add) <> want_add THEN
            problems := problems
                || pg_catalog.format('table %s: one execution adds %s and removes %s rows; %s added %s and removed %s:',
                                     t, want_add, want_rm, what,
                                     pg_catalog.cardinality(have_add), pg_catalog.cardinality(have_rm))
                || @extschema@._idem_tap_row_lines(have_rm, have_add);
        END IF;
    END LOOP;
    RETURN problems;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_effect_problems(regclass[], jsonb, jsonb, jsonb, text) IS
'Internal: tables whose gained and lost row counts differ from those of one execution';

-- The ledger as {"[scope, key]": row}
CREATE FUNCTION @extschema@._idem_tap_ledger()
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
        '  FROM %s.idem_ledger AS l', @extschema@._idem_tap_schema('idempotency'))
        INTO result;
    RETURN result;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_ledger() IS
'Internal: a snapshot of idem_ledger keyed by (scope, key)';

-- Ledger rows that differ between two snapshots.  Rows that disappeared
-- are left out unless they are among the watched keys: a background
-- sweeper may delete expired rows of other tests at any moment.
CREATE FUNCTION @extschema@._idem_tap_ledger_diff(old_ledger jsonb, new_ledger jsonb, watched text[] DEFAULT '{}')
RETURNS TABLE (entry text, old_row jsonb, new_row jsonb)
LANGUAGE sql
SET jit = off
AS $$
    SELECT s.k, old_ledger -> s.k, new_ledger -> s.k
      FROM (SELECT pg_catalog.jsonb_object_keys(old_ledger)
            UNION
            SELECT pg_catalog.jsonb_object_keys(new_ledger)) AS s(k)
     WHERE (old_ledger -> s.k) IS DISTINCT FROM (new_ledger -> s.k)
       AND (new_ledger ? s.k OR s.k = ANY (watched))
     ORDER BY 1
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_ledger_diff(jsonb, jsonb, text[]) IS
'Internal: ledger entries that changed between two snapshots';

CREATE FUNCTION @extschema@._idem_tap_key_label(entry text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN (entry::jsonb ->> 0) = '' THEN pg_catalog.format('key "%s"', entry::jsonb ->> 1)
                ELSE pg_catalog.format('key "%s" (scope "%s")', entry::jsonb ->> 1, entry::jsonb ->> 0) END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_key_label(text) IS
'Internal: a ledger entry as it appears in diagnostics';

CREATE FUNCTION @extschema@._idem_tap_row_label(ledger_row jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN ledger_row IS NULL THEN 'absent'
                ELSE pg_catalog.format('%s, attempt %s, created %s, expires %s',
                                       ledger_row ->> 'state', ledger_row ->> 'attempt',
                                       ledger_row ->> 'created_at',
                                       ledger_row ->> 'expires_at') END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_row_label(jsonb) IS
'Internal: a ledger row as it appears in diagnostics';

-- Run the first call of replays or expires_after and find the ledger keys
-- it completed.  Appends to problems and returns NULL keys when the call
-- failed, touched no key, or left a key unfinished.
CREATE FUNCTION @extschema@._idem_tap_first_call(
    call         text,
    OUT result   jsonb,
    OUT keys     text[],
    OUT ledger   jsonb,
    OUT problems text[])
LANGUAGE plpgsql
AS $$
DECLARE
    l0     jsonb := @extschema@._idem_tap_ledger();
    r      record;
    d      record;
BEGIN
    problems := '{}';
    SELECT * INTO r FROM @extschema@._idem_tap_run(call);
    IF r.error_code IS NOT NULL THEN
        problems := ARRAY[@extschema@._idem_tap_failure('the first call', r.error_code, r.error_message)];
        RETURN;
    END IF;
    result := r.result;
    ledger := @extschema@._idem_tap_ledger();
    keys := '{}';
    FOR d IN SELECT * FROM @extschema@._idem_tap_ledger_diff(l0, ledger) LOOP
        keys := keys || d.entry;
        IF d.new_row ->> 'state' <> 'completed' THEN
            problems := problems || pg_catalog.format(
                'after the first call %s is %s, not completed: the call must finish its attempt (idem_finish) before it returns',
                @extschema@._idem_tap_key_label(d.entry), d.new_row ->> 'state');
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(keys) = 0 THEN
        problems := problems || 'the first call completed no key in idem_ledger: it does not go through idem_begin and idem_finish (or idem_once), or its key was already used'::text;
    END IF;
    IF pg_catalog.cardinality(problems) > 0 THEN
        keys := NULL;
    END IF;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_first_call(text) IS
'Internal: run a first call and return the ledger keys it completed';

CREATE FUNCTION @extschema@._idem_tap_conninfo_quote(value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
AS $$
    SELECT '''' || pg_catalog.replace(pg_catalog.replace(value, E'\\', E'\\\\'), '''', E'\\''') || ''''
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_conninfo_quote(text) IS
'Internal: a value quoted for a libpq connection string';

-- Connection string for the sessions of is_idempotent_concurrently: this
-- database, through the first unix socket directory (or localhost), as the
-- session user, followed by idempotency_tap.connstr, whose keywords win.
CREATE FUNCTION @extschema@._idem_tap_connstr()
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    host  text := pg_catalog.btrim(pg_catalog.split_part(
                      coalesce(pg_catalog.current_setting('unix_socket_directories', true), ''), ',', 1));
    extra text := coalesce(pg_catalog.current_setting('idempotency_tap.connstr', true), '');
BEGIN
    IF host = '' THEN
        host := 'localhost';
    END IF;
    RETURN pg_catalog.rtrim(pg_catalog.format(
        'dbname=%s host=%s port=%s user=%s application_name=idempotency_tap %s',
        @extschema@._idem_tap_conninfo_quote(pg_catalog.current_database()),
        @extschema@._idem_tap_conninfo_quote(host),
        @extschema@._idem_tap_conninfo_quote(pg_catalog.current_setting('port')),
        @extschema@._idem_tap_conninfo_quote(session_user),
        extra));
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_connstr() IS
'Internal: the dblink connection string of the concurrent sessions (this database, plus idempotency_tap.connstr)';

-- What a session of is_idempotent_concurrently runs: wait at the gate the
-- kit holds, so that every session starts the call at the same moment, then
-- run the call (its statements take their snapshots after the gate opened).
CREATE FUNCTION @extschema@._idem_tap_run_gated(call text, gate_class int, gate_object int)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    r record;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(gate_class, gate_object);
    SELECT * INTO r FROM @extschema@._idem_tap_run(call);
    RETURN pg_catalog.to_jsonb(r);
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_run_gated(text, int, int) IS
'Internal: run a call in a concurrent session once the kit opens the gate (an advisory lock)';

-- The first line of a dblink error message, without its severity
CREATE FUNCTION @extschema@._idem_tap_remote_error(message text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT pg_catalog.regexp_replace(pg_catalog.split_part(coalesce(message, 'unknown error'), E'\n', 1),
                                     '^[A-Z]+:\s+', '')
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_remote_error(text) IS
'Internal: the first line of an error message reported by dblink, without its severity';

-- One jsonb value from a query on a dblink connection
CREATE FUNCTION @extschema@._idem_tap_remote(conn text, query text)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    result jsonb;
BEGIN
    EXECUTE pg_catalog.format('SELECT t.v FROM %s.dblink($1, $2) AS t(v jsonb)',
                              @extschema@._idem_tap_schema('dblink'))
        INTO result USING conn, query;
    RETURN result;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_remote(text, text) IS
'Internal: run a query returning one jsonb value on a dblink connection';

-- Close the kit's dblink connections (also those an interrupted run left)
CREATE FUNCTION @extschema@._idem_tap_disconnect()
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    link  text := @extschema@._idem_tap_schema('dblink');
    conns text[];
    c     text;
BEGIN
    EXECUTE pg_catalog.format('SELECT %s.dblink_get_connections()', link) INTO conns;
    FOREACH c IN ARRAY coalesce(conns, '{}') LOOP
        IF c LIKE 'idempotency\_tap\_%' THEN
            EXECUTE pg_catalog.format('SELECT %s.dblink_disconnect($1)', link) USING c;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION @extschema@._idem_tap_disconnect() IS
'Internal: close the dblink connections of is_idempotent_concurrently';

------------------------------------------------------------------------------
-- Assertions
------------------------------------------------------------------------------

-- The assertions that run in the caller's session share one shape: the
-- calls run in a block whose last statement raises IKT00, a SQLSTATE of the
-- kit's own, so that all they did (rows, ledger keys, clock steps) is rolled
-- back before pgTAP's ok() records the outcome outside that block; local
-- variables keep their values across the rollback.  The inner block <<work>>
-- is left early, with EXIT, once a call has failed.

CREATE FUNCTION @extschema@.is_idempotent(call text, tables regclass[], description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    problems text[] := '{}';
    r1       record;
    r2       record;
    s1       jsonb;
    s2       jsonb;
    d        record;
BEGIN
    description := coalesce(description, pg_catalog.format('%s is idempotent', call));
    BEGIN
        <<work>>
        BEGIN
            SELECT * INTO r1 FROM @extschema@._idem_tap_run(call);
            IF r1.error_code IS NOT NULL THEN
                problems := ARRAY[@extschema@._idem_tap_failure('the first call', r1.error_code, r1.error_message)];
                EXIT work;
            END IF;
            s1 := @extschema@._idem_tap_rows(tables);
            SELECT * INTO r2 FROM @extschema@._idem_tap_run(call);
            IF r2.error_code IS NOT NULL THEN
                problems := ARRAY[@extschema@._idem_tap_failure('the second call', r2.error_code, r2.error_message)];
                EXIT work;
            END IF;
            s2 := @extschema@._idem_tap_rows(tables);
            FOR d IN SELECT * FROM @extschema@._idem_tap_rows_diff(s1, s2) LOOP
                problems := problems
                    || pg_catalog.format('the second call changed table %s:', d.tbl)
                    || @extschema@._idem_tap_row_lines(d.removed, d.added);
            END LOOP;
            IF r1.result::text IS DISTINCT FROM r2.result::text THEN
                problems := problems
                    || 'the second call returned a different result:'::text
                    || ('    first:  ' || r1.result::text)
                    || ('    second: ' || r2.result::text);
            END IF;
        END;
        RAISE SQLSTATE 'IKT00';     -- undo both calls
    EXCEPTION WHEN SQLSTATE 'IKT00' THEN
        NULL;
    END;
    RETURN @extschema@._idem_tap_ok(description, problems);
END
$$;

COMMENT ON FUNCTION @extschema@.is_idempotent(text, regclass[], text) IS
'pgTAP: running call twice leaves the observed tables as one call left them and returns the same result both times';

CREATE FUNCTION @extschema@.replays(call text, description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    problems text[] := '{}';
    fc       record;
    r2       record;
    l2       jsonb;
    d        record;
BEGIN
    description := coalesce(description, pg_catalog.format('%s replays its first result', call));
    BEGIN
        <<work>>
        BEGIN
            SELECT * INTO fc FROM @extschema@._idem_tap_first_call(call);
            problems := fc.problems;
            IF fc.result IS NULL THEN
                EXIT work;
            END IF;
            SELECT * INTO r2 FROM @extschema@._idem_tap_run(call);
            IF r2.error_code IS NOT NULL THEN
                problems := problems || @extschema@._idem_tap_failure('the second call', r2.error_code, r2.error_message);
                EXIT work;
            END IF;
            l2 := @extschema@._idem_tap_ledger();
            FOR d IN SELECT * FROM @extschema@._idem_tap_ledger_diff(fc.ledger, l2, fc.keys) LOOP
                problems := problems
                    || pg_catalog.format('the second call changed the ledger row of %s: it executed again instead of replaying',
                                         @extschema@._idem_tap_key_label(d.entry))
                    || ('    before: ' || @extschema@._idem_tap_row_label(d.old_row))
                    || ('    after:  ' || @extschema@._idem_tap_row_label(d.new_row));
            END LOOP;
            IF fc.result::text IS DISTINCT FROM r2.result::text THEN
                problems := problems
                    || 'the second call returned a different result:'::text
                    || ('    first:  ' || fc.result::text)
                    || ('    second: ' || r2.result::text);
            END IF;
        END;
        RAISE SQLSTATE 'IKT00';     -- undo both calls
    EXCEPTION WHEN SQLSTATE 'IKT00' THEN
        NULL;
    END;
    RETURN @extschema@._idem_tap_ok(description, problems);
END
$$;

COMMENT ON FUNCTION @extschema@.replays(text, text) IS
'pgTAP: the first call completes a ledger key, and a second call returns exactly the first result without changing the ledger';

CREATE FUNCTION @extschema@.rejects_changed_request(first text, second text, description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    problems text[] := '{}';
    r1       record;
    r2       record;
BEGIN
    description := coalesce(description, pg_catalog.format('%s is rejected with IK001 after %s', $2, $1));
    BEGIN
        <<work>>
        BEGIN
            SELECT * INTO r1 FROM @extschema@._idem_tap_run($1);
            IF r1.error_code IS NOT NULL THEN
                problems := ARRAY[@extschema@._idem_tap_failure('the first call', r1.error_code, r1.error_message)];
                EXIT work;
            END IF;
            SELECT * INTO r2 FROM @extschema@._idem_tap_run($2);
            IF r2.error_code IS NULL THEN
                problems := ARRAY['the second call, with a changed request, did not fail; it returned:',
                                  '    ' || r2.result::text,
                                  '    want: SQLSTATE IK001 (key reused with a different request)'];
            ELSIF r2.error_code <> 'IK001' THEN
                problems := ARRAY[@extschema@._idem_tap_failure('the second call', r2.error_code, r2.error_message),
                                  '    want: SQLSTATE IK001 (key reused with a different request)'];
            END IF;
        END;
        RAISE SQLSTATE 'IKT00';     -- undo both calls
    EXCEPTION WHEN SQLSTATE 'IKT00' THEN
        NULL;
    END;
    RETURN @extschema@._idem_tap_ok(description, problems);
END
$$;

COMMENT ON FUNCTION @extschema@.rejects_changed_request(text, text, text) IS
'pgTAP: after the first call, the second (same key, different request) fails with SQLSTATE IK001';

CREATE FUNCTION @extschema@.expires_after(call text, ttl interval, description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    problems text[] := '{}';
    margin   interval;
    base     interval;
    fc       record;
    r        record;
    l2       jsonb;
    l3       jsonb;
    d        record;
    k        text;
BEGIN
    IF ttl IS NULL OR ttl <= interval '0' THEN
        RAISE EXCEPTION 'ttl must be positive'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    description := coalesce(description, pg_catalog.format('%s expires after %s', call, ttl));
    -- how far before and after the ttl the key is tried: small beside the
    -- ttl, large beside the time the calls themselves take
    margin := LEAST(ttl / 10, interval '1 second');
    base := coalesce(NULLIF(pg_catalog.current_setting('idempotency.clock_offset', true), ''), '0')::interval;
    BEGIN
        <<work>>
        BEGIN
            SELECT * INTO fc FROM @extschema@._idem_tap_first_call(call);
            problems := fc.problems;
            IF fc.keys IS NULL THEN
                EXIT work;
            END IF;

            -- just before the ttl runs out: still a replay
            PERFORM pg_catalog.set_config('idempotency.clock_offset', (base + ttl - margin)::text, true);
            SELECT * INTO r FROM @extschema@._idem_tap_run(call);
            IF r.error_code IS NOT NULL THEN
                problems := problems || @extschema@._idem_tap_failure(
                    pg_catalog.format('the call %s after the first', ttl - margin), r.error_code, r.error_message);
                EXIT work;
            END IF;
            l2 := @extschema@._idem_tap_ledger();
            FOR d IN SELECT * FROM @extschema@._idem_tap_ledger_diff(fc.ledger, l2, fc.keys) LOOP
                problems := problems
                    || pg_catalog.format('%s after the first call, %s had already expired: the call executed again',
                                         ttl - margin, @extschema@._idem_tap_key_label(d.entry))
                    || ('    before: ' || @extschema@._idem_tap_row_label(d.old_row))
                    || ('    after:  ' || @extschema@._idem_tap_row_label(d.new_row));
            END LOOP;
            IF pg_catalog.cardinality(problems) > 0 THEN
                EXIT work;
            END IF;

            -- just after: a fresh execution
            PERFORM pg_catalog.set_config('idempotency.clock_offset', (base + ttl + margin)::text, true);
            SELECT * INTO r FROM @extschema@._idem_tap_run(call);
            IF r.error_code IS NOT NULL THEN
                problems := problems || @extschema@._idem_tap_failure(
                    pg_catalog.format('the call %s after the first', ttl + margin), r.error_code, r.error_message);
                EXIT work;
            END IF;
            l3 := @extschema@._idem_tap_ledger();
            FOREACH k IN ARRAY fc.keys LOOP
                IF (l3 -> k) IS NOT DISTINCT FROM (l2 -> k) THEN
                    problems := problems
                        || pg_catalog.format('%s after the first call, %s was replayed, not executed afresh: it outlives the ttl',
                                             ttl + margin, @extschema@._idem_tap_key_label(k))
                        || ('    row: ' || @extschema@._idem_tap_row_label(l3 -> k));
                ELSIF (l3 -> k ->> 'state') IS DISTINCT FROM 'completed' THEN
                    problems := problems
                        || pg_catalog.format('%s after the first call, %s executed afresh but was left %s',
                                             ttl + margin, @extschema@._idem_tap_key_label(k),
                                             coalesce(l3 -> k ->> 'state', 'absent'));
                END IF;
            END LOOP;
        END;
        RAISE SQLSTATE 'IKT00';     -- undo the calls and the clock steps
    EXCEPTION WHEN SQLSTATE 'IKT00' THEN
        NULL;
    END;
    RETURN @extschema@._idem_tap_ok(description, problems);
END
$$;

COMMENT ON FUNCTION @extschema@.expires_after(text, interval, text) IS
'pgTAP: a duplicate of call replays just before ttl has passed and executes afresh just after (the ledger clock is stepped with idempotency.clock_offset)';

CREATE FUNCTION @extschema@.at_least_once(call text, deliveries int, tables regclass[], description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    problems text[] := '{}';
    s0       jsonb;
    once     jsonb;
    s2       jsonb;
    sn       jsonb;
    r        record;
    d        record;
    i        int;
BEGIN
    IF deliveries IS NULL OR deliveries < 3 THEN
        RAISE EXCEPTION 'deliveries must be at least 3'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Delivery 1 rolls back, delivery 2 applies the effect, later ones are duplicates.';
    END IF;
    description := coalesce(description, pg_catalog.format('%s delivered %s times has one effect', call, deliveries));
    BEGIN
        <<work>>
        BEGIN
            s0 := @extschema@._idem_tap_rows(tables);
            FOR i IN 1 .. deliveries LOOP
                IF i % 3 = 1 THEN
                    -- delivered, handled, then rolled back: a consumer that
                    -- died before COMMIT
                    BEGIN
                        SELECT * INTO r FROM @extschema@._idem_tap_run(call);
                        IF i = 1 AND r.error_code IS NULL THEN
                            once := @extschema@._idem_tap_rows(tables);
                        END IF;
                        RAISE SQLSTATE 'IKT00';
                    EXCEPTION WHEN SQLSTATE 'IKT00' THEN
                        NULL;
                    END;
                ELSE
                    SELECT * INTO r FROM @extschema@._idem_tap_run(call);
                END IF;
                IF r.error_code IS NOT NULL THEN
                    problems := ARRAY[@extschema@._idem_tap_failure(
                        pg_catalog.format('delivery %s%s', i, CASE WHEN i % 3 = 1 THEN ' (rolled back)' ELSE '' END),
                        r.error_code, r.error_message)];
                    EXIT work;
                END IF;
                IF i = 1 AND NOT EXISTS (SELECT FROM @extschema@._idem_tap_rows_diff(s0, once)) THEN
                    problems := ARRAY['delivery 1 changed none of the observed tables: there is no effect to check'];
                    EXIT work;
                END IF;
                IF i = 2 THEN
                    s2 := @extschema@._idem_tap_rows(tables);
                    problems := @extschema@._idem_tap_effect_problems(
                        tables, s0, once, s2, 'delivery 2, the first to commit after delivery 1 rolled back,');
                END IF;
            END LOOP;
            sn := @extschema@._idem_tap_rows(tables);
            FOR d IN SELECT * FROM @extschema@._idem_tap_rows_diff(s2, sn) LOOP
                problems := problems
                    || pg_catalog.format('deliveries 3 to %s changed table %s after delivery 2 had applied the effect:',
                                         deliveries, d.tbl)
                    || @extschema@._idem_tap_row_lines(d.removed, d.added);
            END LOOP;
        END;
        RAISE SQLSTATE 'IKT00';     -- undo every delivery
    EXCEPTION WHEN SQLSTATE 'IKT00' THEN
        NULL;
    END;
    RETURN @extschema@._idem_tap_ok(description, problems);
END
$$;

COMMENT ON FUNCTION @extschema@.at_least_once(text, int, regclass[], text) IS
'pgTAP: delivering call N times, deliveries 1, 4, 7 ... rolled back, has the effect of one execution on the observed tables';

CREATE FUNCTION @extschema@.is_idempotent_concurrently(call text, sessions int, tables regclass[], description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    link        text := @extschema@._idem_tap_schema('dblink');
    problems    text[] := '{}';
    timeout     interval := coalesce(NULLIF(pg_catalog.current_setting('idempotency_tap.timeout', true), ''),
                                     '30 seconds')::interval;
    connstr     text := @extschema@._idem_tap_connstr();
    oids        text := pg_catalog.quote_literal(coalesce(tables, '{}')::oid[]::text);
    gate_class  int := 1229210957;      -- 'IDEM' in ASCII
    gate_object int := pg_catalog.pg_backend_pid();
    gated       boolean := false;
    obs         text := 'idempotency_tap_observer';
    conn        text;
    setting     text;
    detail      text;
    deadline    timestamptz;
    s0          jsonb;
    once        jsonb;
    sn          jsonb;
    ref         jsonb;
    results     jsonb[] := '{}';
    res         jsonb;
    busy        int;
    one_busy    int;
    waiting     bigint;
    cancelled   int[] := '{}';
    i           int;
BEGIN
    IF sessions IS NULL OR sessions < 2 THEN
        RAISE EXCEPTION 'sessions must be at least 2'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    description := coalesce(description,
                            pg_catalog.format('%s from %s sessions at once runs once', call, sessions));

    -- The sessions see committed work only: refuse to run in a transaction
    -- that has written anything (pgTAP's plan() in an open transaction has).
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RETURN @extschema@._idem_tap_ok(description, ARRAY[
            'is_idempotent_concurrently must run outside a transaction block:',
            '    its sessions cannot see the uncommitted work of the test''s transaction.',
            '    Run the test file without BEGIN (autocommit), commit the handler and its',
            '    tables first, and drop them and delete their ledger rows at the end.']);
    END IF;

    BEGIN
        <<work>>
        BEGIN
            PERFORM @extschema@._idem_tap_disconnect();

            -- an observer session for snapshots and the reference execution,
            -- and the sessions that race; all share the caller's settings
            BEGIN
                FOR i IN 0 .. sessions LOOP
                    conn := CASE i WHEN 0 THEN obs ELSE 'idempotency_tap_' || i END;
                    EXECUTE pg_catalog.format('SELECT %s.dblink_connect($1, $2)', link) USING conn, connstr;
                    FOREACH setting IN ARRAY ARRAY['search_path', 'idempotency.clock_offset',
                                                   'idempotency.default_ttl', 'idempotency.default_lease'] LOOP
                        IF pg_catalog.current_setting(setting, true) IS NOT NULL THEN
                            PERFORM @extschema@._idem_tap_remote(conn, pg_catalog.format(
                                'SELECT pg_catalog.to_jsonb(pg_catalog.set_config(%L, %L, false))',
                                setting, pg_catalog.current_setting(setting)));
                        END IF;
                    END LOOP;
                END LOOP;
            EXCEPTION WHEN sqlclient_unable_to_establish_sqlconnection THEN
                GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
                problems := ARRAY['could not open the sessions: ' || SQLERRM,
                                  '    ' || pg_catalog.replace(coalesce(detail, ''), E'\n', E'\n    '),
                                  '    idempotency_tap.connstr adds to or overrides the keywords the kit uses'];
                EXIT work;
            END;

            -- the observer's statements must not hang on a lock for ever either
            PERFORM @extschema@._idem_tap_remote(obs, pg_catalog.format(
                'SELECT pg_catalog.to_jsonb(pg_catalog.set_config(''statement_timeout'', %L, false))',
                (pg_catalog.date_part('epoch', timeout) * 1000)::bigint::text));

            -- one execution on its own, rolled back: what one execution leaves
            s0 := @extschema@._idem_tap_remote(obs,
                      pg_catalog.format('SELECT @extschema@._idem_tap_rows(%s::oid[]::regclass[])', oids));
            EXECUTE pg_catalog.format('SELECT %s.dblink_exec($1, $2)', link) USING obs, 'BEGIN';
            EXECUTE pg_catalog.format('SELECT t.v FROM %s.dblink($1, $2, false) AS t(v jsonb)', link)
                INTO ref
                USING obs, pg_catalog.format('SELECT pg_catalog.to_jsonb(r) FROM @extschema@._idem_tap_run(%L) AS r', call);
            IF ref IS NULL THEN
                -- cancelled by the statement timeout, which _idem_tap_run lets through
                EXECUTE pg_catalog.format('SELECT %s.dblink_error_message($1)', link) INTO setting USING obs;
                problems := ARRAY[pg_catalog.format(
                    'the call, run once in a session of its own, did not finish within %s (idempotency_tap.timeout): %s',
                    timeout, @extschema@._idem_tap_remote_error(setting))];
            ELSIF ref ->> 'error_code' IS NOT NULL THEN
                problems := ARRAY[@extschema@._idem_tap_failure('the call, run once in a session of its own,',
                                                                ref ->> 'error_code', ref ->> 'error_message')];
            ELSE
                once := @extschema@._idem_tap_remote(obs,
                          pg_catalog.format('SELECT @extschema@._idem_tap_rows(%s::oid[]::regclass[])', oids));
            END IF;
            EXECUTE pg_catalog.format('SELECT %s.dblink_exec($1, $2)', link) USING obs, 'ROLLBACK';
            IF pg_catalog.cardinality(problems) > 0 THEN
                EXIT work;
            END IF;

            -- close the gate, send the call to every session, wait until all
            -- of them queue at the gate, then open it
            PERFORM pg_catalog.pg_advisory_lock(gate_class, gate_object);
            gated := true;
            FOR i IN 1 .. sessions LOOP
                EXECUTE pg_catalog.format('SELECT %s.dblink_send_query($1, $2)', link)
                    USING 'idempotency_tap_' || i,
                          pg_catalog.format('SELECT @extschema@._idem_tap_run_gated(%L, %s, %s)',
                                            call, gate_class, gate_object);
            END LOOP;
            deadline := pg_catalog.clock_timestamp() + timeout;
            LOOP
                SELECT pg_catalog.count(*) INTO waiting
                  FROM pg_catalog.pg_locks
                 WHERE locktype = 'advisory' AND NOT granted
                   AND classid = gate_class::oid AND objid = gate_object::oid AND objsubid = 2;
                busy := 0;
                FOR i IN 1 .. sessions LOOP
                    EXECUTE pg_catalog.format('SELECT %s.dblink_is_busy($1)', link)
                        INTO one_busy USING 'idempotency_tap_' || i;
                    busy := busy + one_busy;
                END LOOP;
                -- all queued; or some ended early (an error), or time is up
                EXIT WHEN waiting >= sessions OR busy < sessions OR pg_catalog.clock_timestamp() > deadline;
                PERFORM pg_catalog.pg_sleep(0.002);
            END LOOP;
            PERFORM pg_catalog.pg_advisory_unlock(gate_class, gate_object);
            gated := false;

            -- wait for every session, cancelling those that overrun
            deadline := pg_catalog.clock_timestamp() + timeout;
            LOOP
                busy := 0;
                FOR i IN 1 .. sessions LOOP
                    EXECUTE pg_catalog.format('SELECT %s.dblink_is_busy($1)', link)
                        INTO one_busy USING 'idempotency_tap_' || i;
                    busy := busy + one_busy;
                END LOOP;
                EXIT WHEN busy = 0;
                IF pg_catalog.clock_timestamp() > deadline THEN
                    FOR i IN 1 .. sessions LOOP
                        EXECUTE pg_catalog.format('SELECT %s.dblink_is_busy($1)', link)
                            INTO one_busy USING 'idempotency_tap_' || i;
                        IF one_busy = 1 THEN
                            problems := problems || pg_catalog.format(
                                'session %s did not finish within %s (idempotency_tap.timeout) and was cancelled: is it waiting for a lock?',
                                i, timeout);
                            EXECUTE pg_catalog.format('SELECT %s.dblink_cancel_query($1)', link)
                                USING 'idempotency_tap_' || i;
                            cancelled := cancelled || i;
                        END IF;
                    END LOOP;
                    EXIT;
                END IF;
                PERFORM pg_catalog.pg_sleep(0.002);
            END LOOP;

            FOR i IN 1 .. sessions LOOP
                conn := 'idempotency_tap_' || i;
                res := NULL;
                EXECUTE pg_catalog.format('SELECT t.v FROM %s.dblink_get_result($1, false) AS t(v jsonb)', link)
                    INTO res USING conn;
                IF res IS NULL THEN
                    -- the session's statement itself failed (cancelled)
                    EXECUTE pg_catalog.format('SELECT %s.dblink_error_message($1)', link) INTO setting USING conn;
                    res := pg_catalog.jsonb_build_object('error_message', @extschema@._idem_tap_remote_error(setting));
                    IF NOT i = ANY (cancelled) THEN
                        problems := problems || pg_catalog.format('session %s failed: %s', i, res ->> 'error_message');
                    END IF;
                ELSIF res ->> 'error_code' IS NOT NULL THEN
                    problems := problems || @extschema@._idem_tap_failure(pg_catalog.format('session %s', i),
                                                                         res ->> 'error_code', res ->> 'error_message');
                END IF;
                results := results || res;
            END LOOP;

            sn := @extschema@._idem_tap_remote(obs,
                      pg_catalog.format('SELECT @extschema@._idem_tap_rows(%s::oid[]::regclass[])', oids));

            problems := problems || @extschema@._idem_tap_effect_problems(
                tables, s0, once, sn, pg_catalog.format('%s concurrent calls', sessions));

            IF (SELECT pg_catalog.count(DISTINCT (e ->> 'result')) FROM pg_catalog.unnest(results) AS e
                 WHERE e ->> 'error_message' IS NULL) > 1 THEN
                problems := problems || 'the sessions saw different results:'::text;
                FOR i IN 1 .. sessions LOOP
                    IF results[i] ->> 'error_message' IS NULL THEN
                        problems := problems || pg_catalog.format('    session %s: %s', i, results[i] ->> 'result');
                    END IF;
                END LOOP;
            END IF;
        END;
        PERFORM @extschema@._idem_tap_disconnect();
    EXCEPTION WHEN OTHERS OR QUERY_CANCELED THEN
        IF gated THEN
            PERFORM pg_catalog.pg_advisory_unlock(gate_class, gate_object);
        END IF;
        PERFORM @extschema@._idem_tap_disconnect();
        RAISE;
    END;
    RETURN @extschema@._idem_tap_ok(description, problems);
END
$$;

COMMENT ON FUNCTION @extschema@.is_idempotent_concurrently(text, int, regclass[], text) IS
'pgTAP: call started from several dblink sessions at the same moment has the effect of one execution, and every session sees the same result; runs outside a transaction block';
