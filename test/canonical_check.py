#!/usr/bin/env python3
"""Check idem_canonical and idem_key against Python's json module.

Generates a few thousand random JSON documents (seeded, so every run checks
the same ones), sends them all to the server in one psql call, and compares
idem_canonical(doc::jsonb) with json.dumps(json.loads(doc), sort_keys=True)
and idem_key('e', 'a', doc::jsonb) with the sha256 of "e:a:" plus that text.

Connection settings come from the environment (PGHOST, PGPORT, PGDATABASE,
PGUSER, ...); the database must be UTF8.  The extension is created if it is
missing.  Exits non-zero on any mismatch; the last line of output is
"N passed, M failed".

    PGHOST=/tmp PGPORT=5432 PGDATABASE=test python3 test/canonical_check.py
    python3 test/canonical_check.py --count 10000 --seed 7
"""

import argparse
import csv
import decimal
import hashlib
import io
import json
import os
import random
import struct
import subprocess
import sys

# Characters with a short escape in JSON, and '/', which Python leaves alone
SPECIALS = '"\\/\b\f\n\r\t'


def random_char(rng):
    """A random character: printable ASCII, short escapes, other control
    characters and DEL, Latin-1, the rest of the BMP (no surrogates) and
    astral code points.  U+0000 is left out: jsonb does not accept it."""
    kind = rng.random()
    if kind < 0.45:
        return chr(rng.randint(0x20, 0x7E))
    if kind < 0.55:
        return rng.choice(SPECIALS)
    if kind < 0.62:
        return chr(rng.choice([rng.randint(0x01, 0x1F), 0x7F]))
    if kind < 0.72:
        return chr(rng.randint(0x80, 0xFF))
    if kind < 0.87:
        cp = rng.randint(0x100, 0xFFFD)
        while 0xD800 <= cp <= 0xDFFF:
            cp = rng.randint(0x100, 0xFFFD)
        return chr(cp)
    if kind < 0.95:
        return chr(rng.choice([0x1F600, 0x1F4A9, 0x10000, 0x10FFFF, 0x1D11E,
                               0x20000, 0xE0001]))
    return chr(rng.randint(0x10000, 0x10FFFF))


def random_text(rng, maxlen=12):
    return ''.join(random_char(rng) for _ in range(rng.randint(0, maxlen)))


def encode_string(rng, s):
    """A JSON string literal for s, escaping each character in one of the
    ways JSON allows, so that jsonb's parser sees every spelling."""
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == '\\':
            out.append('\\\\')
        elif cp < 0x20:
            short = {'\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r',
                     '\t': '\\t'}
            if ch in short and rng.random() < 0.5:
                out.append(short[ch])
            else:
                out.append('\\u%04x' % cp if rng.random() < 0.5
                           else '\\u%04X' % cp)
        elif ch == '/' and rng.random() < 0.3:
            out.append('\\/')
        elif cp >= 0x7F and rng.random() < 0.4:
            if cp >= 0x10000:
                v = cp - 0x10000
                out.append('\\u%04x\\u%04x' % (0xD800 | (v >> 10),
                                               0xDC00 | (v & 0x3FF)))
            else:
                out.append('\\u%04x' % cp)
        else:
            out.append(ch)
    out.append('"')
    return ''.join(out)


def random_int(rng):
    kind = rng.random()
    if kind < 0.5:
        n = rng.randint(-1000, 1000)
    elif kind < 0.8:
        n = rng.randint(-2 ** 63, 2 ** 64)
    else:
        n = rng.randint(-10 ** 120, 10 ** 120)
    return str(n)


def random_float(rng):
    """A number with a fraction and no exponent, in one of several shapes."""
    kind = rng.random()
    if kind < 0.3:
        # a random double, printed with 17 decimals and trimmed
        x = rng.choice([rng.uniform(-1e6, 1e6), rng.uniform(-1, 1),
                        rng.gauss(0, 1e-3), rng.uniform(-1e20, 1e20)])
        text = ('%.17f' % x).rstrip('0')
        if text.endswith('.'):
            text += '0'
    elif kind < 0.5:
        # a random double with a random number of decimals
        x = rng.choice([rng.random() * 10 ** rng.randint(-30, 30),
                        float(rng.getrandbits(53)) * 2.0 ** rng.randint(-80, 80)])
        text = '%.*f' % (rng.randint(1, 40), x)
    elif kind < 0.85:
        # a random decimal string, often longer than a double can hold
        ipart = str(rng.randint(0, 10 ** rng.randint(0, 25)))
        fpart = ''.join(rng.choice('0123456789')
                        for _ in range(rng.randint(1, 25)))
        text = ipart + '.' + fpart
    elif kind < 0.95:
        # boundaries of Python's fixed notation and round numbers
        text = rng.choice([
            '0.0', '1.0', '0.1', '0.5', '0.0001', '0.00001', '0.000015',
            '0.00009999999999999999', '1234567890123456.0',
            '9999999999999999.0', '12345678901234567.0',
            '100000000000000000.0', '10000000000000000.0',
            '12345678901234567890.5', '0.30000000000000004',
            '3.141592653589793238', '2.5', '1.00', '123.4560',
            '179769313486231570000000000000000000000000000000000000000000'
            '000000000000000000000000000000000000000000000000000000000000'
            '000000000000000000000000000000000000000000000000000000000000'
            '000000000000000000000000000000000000000000000000000000000000'
            '000000000000000000000000000000000000000000000000000000000000'
            '0000000000000000000000000000000.0',
        ])
    else:
        # out of range: overflow to infinity, underflow to a denormal or 0
        if rng.random() < 0.5:
            text = '1' + '0' * rng.randint(300, 400) + '.5'
        else:
            text = '0.' + '0' * rng.randint(300, 340) + str(rng.randint(1, 99999))
    if rng.random() < 0.4 and not text.startswith('-'):
        text = '-' + text
    # jsonb has no negative zero (numeric drops the sign), Python keeps it
    if text.startswith('-') and set(text[1:]) <= set('0.'):
        text = text[1:]
    return text


def exact_double(rng):
    """A double written out exactly, without an exponent: the cases where
    the shortest digits sit on a rounding bound are common among these."""
    kind = rng.random()
    if kind < 0.5:
        x = float(rng.getrandbits(rng.randint(1, 80))) * 2.0 ** rng.randint(-60, 60)
    else:
        x = struct.unpack('<d', struct.pack('<Q', rng.getrandbits(64)))[0]
        if x != x or abs(x) > 1e300 or abs(x) < 1e-300:
            x = rng.uniform(-1e300, 1e300)
    text = format(decimal.Decimal(x), 'f')
    if '.' not in text:
        text += '.0'
    if text.startswith('-') and set(text[1:]) <= set('0.'):
        text = text[1:]
    return text


def ws(rng):
    if rng.random() < 0.7:
        return ''
    return ''.join(rng.choice(' \t\n\r') for _ in range(rng.randint(1, 3)))


def random_doc(rng, depth=0):
    """The JSON text of a random value."""
    kind = rng.random()
    if depth < 5 and kind < 0.25:
        pairs = []
        keys = [random_text(rng, 6) for _ in range(rng.randint(0, 7))]
        if keys and rng.random() < 0.15:
            keys.append(rng.choice(keys))      # a duplicate: the last one wins
        if rng.random() < 0.3:
            # keys that differ only in order-sensitive ways
            keys += rng.sample(['a', 'aa', 'b', 'A', '', '\u00e9', 'e\u0301',
                                '\U0001F600', '\uFFFD', 'ab', 'a\x7f'],
                               rng.randint(1, 5))
        for k in keys:
            pairs.append(ws(rng) + encode_string(rng, k) + ws(rng) + ':' +
                         ws(rng) + random_doc(rng, depth + 1) + ws(rng))
        return '{' + ','.join(pairs) + ws(rng) + '}'
    if depth < 5 and kind < 0.45:
        items = [ws(rng) + random_doc(rng, depth + 1) + ws(rng)
                 for _ in range(rng.randint(0, 6))]
        return '[' + ','.join(items) + ws(rng) + ']'
    if kind < 0.6:
        return encode_string(rng, random_text(rng))
    if kind < 0.72:
        return random_int(rng)
    if kind < 0.92:
        return random_float(rng)
    return rng.choice(['true', 'false', 'null'])


def copy_text_field(s):
    return (s.replace('\\', '\\\\').replace('\t', '\\t')
            .replace('\n', '\\n').replace('\r', '\\r'))


def run_server(docs):
    """Canonical text and key of every document, from one psql call."""
    script = io.StringIO()
    script.write('SET client_min_messages = warning;\n')
    script.write('CREATE EXTENSION IF NOT EXISTS idempotency;\n')
    script.write("DO $$ BEGIN IF current_setting('server_encoding') <> 'UTF8' "
                 "THEN RAISE EXCEPTION 'canonical_check needs a UTF8 database'; "
                 "END IF; END $$;\n")
    script.write('CREATE TEMP TABLE canonical_check_docs (id int, doc text);\n')
    script.write('COPY canonical_check_docs FROM STDIN;\n')
    for i, doc in enumerate(docs):
        script.write('%d\t%s\n' % (i, copy_text_field(doc)))
    script.write('\\.\n')
    script.write("COPY (SELECT id, idem_canonical(doc::jsonb), "
                 "idem_key('e', 'a', doc::jsonb) "
                 "FROM canonical_check_docs ORDER BY id) "
                 "TO STDOUT WITH (FORMAT csv);\n")

    env = dict(os.environ, PGCLIENTENCODING='UTF8')
    proc = subprocess.run(['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1'],
                          input=script.getvalue().encode('utf-8'),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode('utf-8', 'replace'))
        sys.stderr.write('psql failed with exit code %d\n' % proc.returncode)
        return None

    results = {}
    for row in csv.reader(io.StringIO(proc.stdout.decode('utf-8'))):
        results[int(row[0])] = (row[1], row[2])
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--count', type=int, default=3000,
                        help='number of random documents (default 3000)')
    parser.add_argument('--seed', type=int, default=20240601,
                        help='random seed (default 20240601)')
    args = parser.parse_args()

    rng = random.Random(args.seed)
    docs = [random_doc(rng) for _ in range(args.count)]
    # and arrays of exactly written doubles, one in ten documents
    docs += ['[' + ', '.join(exact_double(rng) for _ in range(20)) + ']'
             for _ in range(args.count // 10)]
    results = run_server(docs)
    if results is None:
        print('0 passed, %d failed' % len(docs))
        return 1

    passed = failed = 0
    for i, doc in enumerate(docs):
        want = json.dumps(json.loads(doc), sort_keys=True)
        want_key = hashlib.sha256(('e:a:' + want).encode('utf-8')).hexdigest()[:32]
        got, got_key = results.get(i, (None, None))
        if got == want and got_key == want_key:
            passed += 1
            continue
        failed += 1
        print('MISMATCH #%d' % i)
        print('  doc:       %r' % doc)
        print('  python:    %s' % want)
        print('  server:    %s' % got)
        if got_key != want_key:
            print('  key want %s got %s' % (want_key, got_key))

    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
