--
-- Argument checks: bad input is a clear ERROR and changes nothing
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- run one statement, show its SQLSTATE and message, or ok
CREATE FUNCTION pg_temp.outcome_of(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- a ledger with something in it, to see that errors leave it alone
SELECT outcome FROM idem_begin('present', '{"n": 1}');
SELECT outcome FROM idem_begin('done', '{"n": 2}');
SELECT outcome FROM idem_finish('done', '{"r": 2}');
CREATE TEMP TABLE ledger_before AS SELECT * FROM idem_ledger;

SELECT n, call, pg_temp.outcome_of('SELECT ' || call) AS result
  FROM unnest(ARRAY[
    -- NULL key or scope
    $$idem_begin(NULL)$$,
    $$idem_begin(NULL, '{}')$$,
    $$idem_begin('k', scope => NULL)$$,
    $$idem_finish(NULL)$$,
    $$idem_finish('present', scope => NULL)$$,
    $$idem_fail(NULL)$$,
    $$idem_fail('present', NULL)$$,
    $$idem_once(NULL)$$,
    $$idem_once('k', NULL)$$,
    -- NULL status, NULL wait
    $$idem_finish('present', '{}', NULL)$$,
    $$idem_begin('k', wait => NULL)$$,
    -- empty key
    $$idem_begin('')$$,
    $$idem_finish('')$$,
    $$idem_fail('')$$,
    $$idem_once('')$$,
    -- key over 255 bytes, counted in bytes
    $$idem_begin(repeat('k', 256))$$,
    $$idem_finish(repeat('k', 256))$$,
    $$idem_fail(repeat('k', 256))$$,
    $$idem_once(repeat('k', 256))$$,
    $$idem_begin(repeat('é', 128))$$,
    $$idem_begin(repeat('😀', 64))$$,
    $$idem_once(repeat('é', 127) || 'xy')$$,
    -- scope over 255 bytes
    $$idem_begin('k', scope => repeat('s', 256))$$,
    $$idem_once('k', repeat('s', 256))$$,
    -- ttl and lease must be positive, and at most 100 years
    $$idem_begin('k', ttl => '0')$$,
    $$idem_begin('k', ttl => '-1 hour')$$,
    $$idem_begin('k', ttl => '1 day -25 hours')$$,
    $$idem_begin('k', ttl => '101 years')$$,
    $$idem_begin('k', ttl => '40000 days')$$,
    $$idem_begin('k', lease => '0 seconds')$$,
    $$idem_begin('k', lease => '-1 minute')$$,
    $$idem_begin('k', lease => '100 years 1 day')$$,
    $$idem_once('k', ttl => '0')$$,
    $$idem_once('k', ttl => '-1 day')$$,
    $$idem_once('k', ttl => '1000 years')$$
  ]) WITH ORDINALITY AS c(call, n)
 ORDER BY n;

-- none of that changed the ledger
SELECT count(*) AS rows FROM idem_ledger;
SELECT count(*) AS changed_rows
  FROM ((SELECT * FROM idem_ledger EXCEPT SELECT * FROM ledger_before)
        UNION ALL
        (SELECT * FROM ledger_before EXCEPT SELECT * FROM idem_ledger)) AS d;

-- errors at top level roll back in the same way
SELECT * FROM idem_begin(repeat('é', 128));
\echo :SQLSTATE
SELECT * FROM idem_begin('k', ttl => '-5 minutes');
\echo :SQLSTATE
SELECT * FROM idem_finish('present', '{}', NULL);
\echo :SQLSTATE
SELECT idem_once('k', ttl => '101 years');
\echo :SQLSTATE
SELECT count(*) AS changed_rows
  FROM ((SELECT * FROM idem_ledger EXCEPT SELECT * FROM ledger_before)
        UNION ALL
        (SELECT * FROM ledger_before EXCEPT SELECT * FROM idem_ledger)) AS d;

-- the limits themselves are accepted: 255-byte keys, 100 years
SELECT octet_length(repeat('k', 255)) AS ascii_bytes,
       octet_length(repeat('é', 127) || 'x') AS two_byte_bytes,
       octet_length(repeat('😀', 63) || 'xyz') AS four_byte_bytes;
SELECT * FROM idem_begin(repeat('k', 255), '{"n": 255}');
SELECT * FROM idem_finish(repeat('k', 255), '{"ok": 255}');
SELECT * FROM idem_begin(repeat('k', 255), '{"n": 255}');
SELECT * FROM idem_begin(repeat('é', 127) || 'x');
SELECT idem_fail(repeat('é', 127) || 'x');
SELECT idem_once(repeat('😀', 63) || 'xyz');
SELECT idem_once(repeat('😀', 63) || 'xyz');
SELECT * FROM idem_begin('long-scope', scope => repeat('s', 255));
SELECT * FROM idem_begin('century', ttl => '100 years', lease => '100 years');
SELECT lease_until = created_at + '100 years' AS lease_100_years,
       expires_at = lease_until + '100 years' AS ttl_100_years
  FROM idem_ledger WHERE key = 'century';
SELECT idem_once('century-once', ttl => '100 years');
-- NULL ttl and lease mean the defaults
SELECT * FROM idem_begin('defaults', NULL, '', NULL, NULL);
SELECT lease_until - created_at AS lease, expires_at - lease_until AS ttl
  FROM idem_ledger WHERE key = 'defaults';
SELECT octet_length(key) AS key_bytes, octet_length(scope) AS scope_bytes, state
  FROM idem_ledger WHERE key NOT IN ('present', 'done', 'century', 'century-once', 'defaults')
 ORDER BY 1, 2, 3;

-- keys and scopes with quotes, backslashes and other punctuation round-trip
SELECT * FROM idem_begin(E'it''s "quoted" \\ back\\slash', '{"q": "\"\\\\"}', scope => E'sc''ope\\');
SELECT * FROM idem_finish(E'it''s "quoted" \\ back\\slash', '{"reply": "it''s \"fine\" \\\\"}', scope => E'sc''ope\\');
SELECT * FROM idem_begin(E'it''s "quoted" \\ back\\slash', '{"q": "\"\\\\"}', scope => E'sc''ope\\');
SELECT * FROM idem_begin(E'it''s "quoted" \\ back\\slash', '{"q": "other"}', scope => E'sc''ope\\');
\echo :SQLSTATE
SELECT scope = E'sc''ope\\' AS scope_kept, key = E'it''s "quoted" \\ back\\slash' AS key_kept,
       key, scope, response->>'reply' AS reply
  FROM idem_ledger WHERE key LIKE 'it%';
-- the same key without the scope is another key
SELECT * FROM idem_begin(E'it''s "quoted" \\ back\\slash', '{"q": "other"}');
SELECT idem_once($$%_*?[]{}$()|;&<>'"`$$);
SELECT idem_once($$%_*?[]{}$()|;&<>'"`$$);
SELECT key FROM idem_ledger WHERE key LIKE '\%\_%';

-- a deeply nested request and response: 1000 levels
SELECT * FROM idem_begin('deep', (repeat('[', 1000) || repeat(']', 1000))::jsonb);
SELECT outcome, status, response = (repeat('{"a": ', 1000) || '1' || repeat('}', 1000))::jsonb AS same, attempt
  FROM idem_finish('deep', (repeat('{"a": ', 1000) || '1' || repeat('}', 1000))::jsonb);
SELECT outcome, status, response = (repeat('{"a": ', 1000) || '1' || repeat('}', 1000))::jsonb AS same, attempt
  FROM idem_begin('deep', (repeat('[', 1000) || repeat(']', 1000))::jsonb);
SELECT * FROM idem_begin('deep', (repeat('[', 999) || repeat(']', 999))::jsonb);
\echo :SQLSTATE

DROP EXTENSION idempotency;
