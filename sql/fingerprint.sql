--
-- idem_fingerprint: equal exactly when the requests are equal as jsonb
--
CREATE EXTENSION idempotency;

-- each pair: the fingerprints agree exactly when jsonb = does
SELECT a, b,
       idem_fingerprint(a::jsonb) = idem_fingerprint(b::jsonb) AS same_fingerprint,
       a::jsonb = b::jsonb AS jsonb_equal
  FROM (VALUES
    ('{"a":1,"b":[1,2]}', '{"b":[1.0,2.00],"a":1}'),
    ('{"a":1,"b":[1,2]}', ' {
  "b" : [ 1.0 , 2.00 ] ,
  "a" : 1
} '),
    ('1', '[1]'),
    ('"1"', '1'),
    ('{"a":1}', '{"a":1,"b":null}'),
    ('[1,2]', '[2,1]'),
    ('{}', '[]'),
    ('null', '"null"'),
    ('0', '-0'),
    ('100', '1e2'),
    ('1.50', '1.5000'),
    ('0.1', '0.10000000000000001'),
    ('{"a":1,"a":2}', '{"a":2}'),
    ('{"a":"x"}', '{"a":"x "}'),
    ('"é"', '"\u00e9"'),
    ('[[]]', '[]'),
    ('{"a":{}}', '{"a":[]}'),
    ('[true,false]', '[false,true]')) AS t(a, b);

-- NULL matches only NULL: its fingerprint is NULL
SELECT idem_fingerprint(NULL) IS NULL AS is_null;
-- 32 lowercase hex digits (the first 128 bits of a SHA-256)
SELECT length(idem_fingerprint('{}')) AS length,
       idem_fingerprint('{"a": [1, "x"]}') ~ '^[0-9a-f]{32}$' AS lowercase_hex;
-- the serialization is stable: fingerprints stored in the ledger stay valid
SELECT doc, idem_fingerprint(doc::jsonb) AS fingerprint
  FROM (VALUES
    ('{"b": {}, "a": [1.50, "x", null, true, false], "aa": -0.0}'),
    ('"text"'),
    ('[]')) AS t(doc);
-- a document of a few megabytes
SELECT length(idem_fingerprint(d)) AS length,
       idem_fingerprint(d) = idem_fingerprint(d || '[]') AS stable,
       length(idem_key('e', 'a', d)) AS key_length
  FROM (SELECT jsonb_agg(jsonb_build_object('i', i, 'v', repeat('x', 100)))
          FROM generate_series(1, 20000) AS i) AS t(d);

DROP EXTENSION idempotency;
