--
-- idem_key and idem_canonical: keys derived as a service in another
-- language derives them: sha256 of "entity:action[:canonical params]",
-- the canonical text being Python's json.dumps(json.loads(doc), sort_keys=True)
--
CREATE EXTENSION idempotency;

-- known keys (computed with Python hashlib and json)
SELECT entity, action, params, idem_key(entity, action, params::jsonb) AS key
  FROM (VALUES
    ('order', 'create', NULL),
    ('order', 'create', '{"amount": 100, "currency": "EUR"}'),
    ('order', 'create', '{"currency":"EUR","amount":100}'),
    ('payment', 'capture', '{"id": "pay_1", "amount": 12.50, "lines": [{"sku": "b-1", "qty": 2}]}'),
    ('café', 'réserver', '{"table": 4, "note": "près de la fenêtre 😀"}'),
    ('order', 'create', '[]'),
    ('order', 'create', '"abc"')) AS t(entity, action, params);
-- params defaults to NULL: no ":" and no canonical text are appended
SELECT idem_key('order', 'create') AS key,
       idem_key('order', 'create') = idem_key('order', 'create', NULL) AS same;
-- key order and white space do not change the key; 1 and 1.0 do (int and float in Python)
SELECT idem_key('order', 'create', '{"b": 1, "a": 2}')
     = idem_key('order', 'create', '{ "a":2,"b" :1 }') AS same_order,
       idem_key('order', 'create', '{"a": 1}')
     = idem_key('order', 'create', '{"a": 1.0}') AS int_and_float;

-- nested objects and arrays; keys sorted at every level
SELECT doc, idem_canonical(doc::jsonb) AS canonical
  FROM (VALUES
    ('{"b": {"d": 1, "c": [3, {"z": null, "y": true}]}, "a": false}'),
    ('{"outer": {"inner": {"deepest": []}}, "list": [{"b": 2, "a": 1}, {}]}'),
    ('[[], {}, [[]], [{"a": {}}]]')) AS t(doc);
-- key order is by code point (jsonb stores shortest first): "" < "A" < "a" < "aa" < "b" < U+00E9 < U+1F600
SELECT doc, idem_canonical(doc::jsonb) AS canonical
  FROM (VALUES
    ('{"b": 1, "aa": 2, "a": 3, "A": 4, "": 5, "é": 6, "😀": 7, "ab": 8}'),
    ('{"été": 1, "ete": 2, "€": 3, "\uffff": 4, "\ud800\udc00": 5, "z": 6}'),
    ('{"a": 1, "a": 2}')) AS t(doc);
-- unicode: non-ASCII as lowercase \u escapes, astral characters as surrogate pairs
SELECT doc, idem_canonical(doc::jsonb) AS canonical
  FROM (VALUES
    ('"café naïve ü"'),
    ('"日本語 Ж שלום €"'),
    ('"😀 💩 𝄞 𠀀 \udbff\udfff"'),
    ('"\u00e9 \u00E9 \ud83d\ude00"'),
    ('"e\u0301 \ufeff \u00a0 \u2028"')) AS t(doc);
-- escapes: quote, backslash, \n \r \t \b \f; other control characters and DEL as \u00XX; "/" unescaped
SELECT doc, idem_canonical(doc::jsonb) AS canonical
  FROM (VALUES
    ('"quote \" backslash \\ slash / \/"'),
    ('"\n\r\t\b\f"'),
    ('"\u0001\u0002\u001f \u007f \u0080 \u009f"'),
    ('"tab\tin\u0009side"'),
    ('{"key\nwith\u0001control": "value\\"}')) AS t(doc);
-- numbers with a fraction are Python floats: shortest round-trip digits as repr(float) prints them
SELECT doc, idem_canonical(doc::jsonb) AS canonical
  FROM (VALUES
    ('[0.1, 1.0, 1.00, 0.0, -0.5, 2.50]'),
    ('[0.000015, 0.0001, 0.00001, 0.00009999]'),
    ('[12345678901234567890.5, 100000000000000000.0, 10000000000000000.0, 1234567890123456.0, 9999999999999999.0]'),
    ('[0.30000000000000004, 3.141592653589793238, 2.718281828459045235360287]'),
    ('[30819114570922112.0, 123456789012345678.9, -0.0000001234]')) AS t(doc);
-- integers stay integers, however big
SELECT doc, idem_canonical(doc::jsonb) AS canonical
  FROM (VALUES
    ('[0, -0, 1, -1, 9007199254740993, 18446744073709551616]'),
    ('[123456789012345678901234567890123456789, -99999999999999999999999999999999]')) AS t(doc);
-- top-level scalars, empty containers, literals
SELECT doc, idem_canonical(doc::jsonb) AS canonical
  FROM (VALUES
    ('"abc"'),
    ('1'),
    ('-7'),
    ('1.5'),
    ('null'),
    ('true'),
    ('false'),
    ('{}'),
    ('[]'),
    ('""')) AS t(doc);
-- overflow to infinity, as Python prints it
SELECT idem_canonical(('1' || repeat('0', 400) || '.5')::jsonb) AS canonical;
-- underflow to zero, and to the smallest denormal
SELECT idem_canonical(('[0.' || repeat('0', 400) || '1, 0.' || repeat('0', 323) || '5]')::jsonb) AS canonical;
-- jsonb has no negative zero (numeric drops the sign), so this is 0.0 where
-- Python would print -0.0: give zero without a sign
SELECT idem_canonical('-0.0') AS canonical;

-- idem_canonical is strict; idem_key rejects a NULL entity or action
SELECT idem_canonical(NULL) IS NULL AS is_null;
SELECT idem_key(NULL, 'create');
SELECT idem_key('order', NULL, '{}');
DO $$
BEGIN
    PERFORM idem_key(NULL, 'create');
EXCEPTION WHEN null_value_not_allowed THEN
    RAISE NOTICE 'SQLSTATE %', SQLSTATE;
END
$$;

DROP EXTENSION idempotency;
