'use strict';
// test/behaviour.test.js: what each kind of request gets, in transaction mode and lease mode.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const pg = require('pg');
const { newKey, setupDatabase, listen, request, gate } = require('./helpers');
const { makeApp } = require('./fixtures/app');

let db;
let pool;
let srv;
const calls = new Map();
const held = new Map();
const reached = new Map();
const errors = [];

const hooks = {
  calls,
  onError: (err) => errors.push(err),
  inside: async (name, info) => {
    const r = reached.get(name);
    if (r) {
      r.open(info);
    }
  },
  hold: async (name) => {
    const g = held.get(name);
    if (g) {
      await g.promise;
    }
  },
};

const post = (path, key, body, headers = {}) =>
  request(srv.url, { path, body, headers: key === undefined ? headers : { 'idempotency-key': key, ...headers } });

before(async () => {
  db = await setupDatabase();
  pool = new pg.Pool({ max: 10 });
  srv = await listen(makeApp({ pool, tables: db.tables, scopePrefix: db.scopePrefix, hooks }));
});

after(async () => {
  await srv.close();
  await pool.end();
  await db.teardown();
});

test('a missing, empty, too long or repeated key is 400 problem+json; GET needs none', async () => {
  const missing = await post('/payments', undefined, { amount: 1 });
  assert.equal(missing.status, 400);
  assert.match(missing.headers['content-type'], /^application\/problem\+json/);
  assert.equal(missing.json.status, 400);
  assert.match(missing.json.title, /Idempotency-Key/);

  for (const bad of ['', '""', 'x'.repeat(256), '"unterminated', '"a"b', 'caf\u00e9']) {
    const r = await request(srv.url, {
      path: '/payments', body: { amount: 1 }, headers: { 'idempotency-key': Buffer.from(bad, 'latin1').toString('latin1') },
    });
    assert.equal(r.status, 400, `key ${JSON.stringify(bad.slice(0, 20))}`);
    assert.match(r.headers['content-type'], /^application\/problem\+json/);
  }
  const twice = await request(srv.url, {
    path: '/payments', body: { amount: 1 }, headers: { 'Idempotency-Key': ['a', 'b'] },
  });
  assert.equal(twice.status, 400);
  assert.match(twice.json.detail, /more than one/);

  const longest = newKey('x').padEnd(255, 'x');
  const ok = await post('/payments', longest, { amount: 1 });
  assert.equal(ok.status, 201);
  assert.equal(await db.count(longest), 1);

  const get = await request(srv.url, { method: 'GET', path: '/payments' });
  assert.equal(get.status, 200);
});

test('a quoted key (the draft) and a bare key (Stripe) are the same key', async () => {
  const key = newKey('quoted');
  const first = await post('/payments', `"${key}"`, { amount: 5 });
  assert.equal(first.status, 201);
  const second = await post('/payments', key, { amount: 5 });
  assert.equal(second.status, 201);
  assert.equal(second.headers['idempotent-replayed'], 'true');
  assert.equal(second.text, first.text);
});

test('a replay returns the stored status, body and kept headers, marked', async () => {
  const key = newKey('replay');
  const first = await post('/payments', key, { amount: 42 });
  assert.equal(first.status, 201);
  assert.equal(first.headers['idempotent-replayed'], undefined);
  assert.ok(first.headers['x-not-kept']);
  // the same body with its keys in another order and other white space
  const again = await request(srv.url, {
    path: '/payments', headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{ "amount" :  42.0 }',
  });
  assert.equal(again.status, 201);
  assert.equal(again.text, first.text);
  assert.equal(again.headers['content-type'], first.headers['content-type']);
  assert.equal(again.headers.location, first.headers.location);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(again.headers['x-not-kept'], undefined);
  assert.equal(await db.count(key), 1);
  assert.equal(calls.get(`payments ${key}`), 1);

  const [row] = await db.ledger(key);
  assert.equal(row.state, 'completed');
  assert.equal(row.status, 201);
  assert.deepEqual(Object.keys(row.response.headers).sort(), ['content-type', 'location']);
  assert.equal(row.response.body, first.text);
});

test('the same key with another body, path or method is 422 (IK001)', async () => {
  const key = newKey('mismatch');
  assert.equal((await post('/payments', key, { amount: 10 })).status, 201);
  const body = await post('/payments', key, { amount: 11 });
  assert.equal(body.status, 422);
  assert.match(body.headers['content-type'], /^application\/problem\+json/);
  assert.equal(body.json.status, 422);
  const path = await post('/payments?currency=eur', key, { amount: 10 });
  assert.equal(path.status, 422);
  const other = await post('/reject', key, { amount: 10 });
  assert.equal(other.status, 422);
  assert.equal(other.headers['content-type'].startsWith('application/problem+json'), true);
  assert.equal(calls.get(`reject ${key}`), undefined);
  assert.equal(await db.count(key), 1);
});

test('a body that is not JSON is fingerprinted as bytes', async () => {
  const key = newKey('bytes');
  const h = { 'content-type': 'application/octet-stream' };
  const first = await post('/upload', key, Buffer.from([1, 2, 3]), h);
  assert.equal(first.status, 201);
  const again = await post('/upload', key, Buffer.from([1, 2, 3]), h);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(again.text, first.text);
  const changed = await post('/upload', key, Buffer.from([1, 2, 4]), h);
  assert.equal(changed.status, 422);
  const invalid = await post('/payments', newKey('badjson'), '{"amount": ', { 'content-type': 'application/json' });
  assert.equal(invalid.status, 400);
  assert.match(invalid.headers['content-type'], /^application\/problem\+json/);
});

test('a body over the limit is 413, and nothing is recorded', async () => {
  const key = newKey('small');
  const big = await post('/small', key, { text: 'x'.repeat(100000) });
  assert.equal(big.status, 413);
  assert.match(big.headers['content-type'], /^application\/problem\+json/);
  assert.deepEqual(await db.ledger(key), []);
  const ok = await post('/small', key, { a: 1 });
  assert.equal(ok.status, 200);
  assert.equal(calls.get(`small ${key}`), 1);
});

test('after a body parser that ran first, the parsed body is fingerprinted', async () => {
  const key = newKey('parsed');
  const first = await post('/parsed-first', key, { amount: 8 });
  assert.equal(first.status, 201);
  const again = await post('/parsed-first', key, { amount: 8 });
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(again.text, first.text);
  assert.equal((await post('/parsed-first', key, { amount: 9 })).status, 422);
  assert.equal(calls.get(`parsed-first ${key}`), 1);
});

test('PATCH is covered too; a 204 is replayed as a 204', async () => {
  const key = newKey('patch');
  const send = () => request(srv.url, { method: 'PATCH', path: '/orders/7', body: { state: 'paid' },
    headers: { 'idempotency-key': key } });
  assert.equal((await request(srv.url, { method: 'PATCH', path: '/orders/7', body: {} })).status, 400);
  const first = await send();
  assert.equal(first.status, 204);
  const again = await send();
  assert.equal(again.status, 204);
  assert.equal(again.text, '');
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(calls.get(`patch ${key}`), 1);
});

test('a binary response is replayed byte for byte', async () => {
  const key = newKey('binary');
  const first = await request(srv.url, { path: '/binary', headers: { 'idempotency-key': key } });
  const again = await request(srv.url, { path: '/binary', headers: { 'idempotency-key': key } });
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(again.text, first.text);
  assert.equal(again.headers['content-length'], '6');
  const [row] = await db.ledger(key);
  assert.equal(row.response.body_base64, Buffer.from([0, 1, 2, 255, 254, 0]).toString('base64'));
});

test('a 500 is not stored: the retry runs again, and the first run left nothing', async () => {
  const key = newKey('flaky');
  const first = await post('/flaky', key, {});
  assert.equal(first.status, 500);
  assert.equal(await db.count(key), 0);
  assert.deepEqual(await db.ledger(key), []);
  const retry = await post('/flaky', key, {});
  assert.equal(retry.status, 201);
  assert.deepEqual(retry.json, { execution: 2 });
  assert.equal(retry.headers['idempotent-replayed'], undefined);
  assert.equal(await db.count(key), 1);
  const replay = await post('/flaky', key, {});
  assert.equal(replay.headers['idempotent-replayed'], 'true');
  assert.equal(calls.get(`flaky ${key}`), 2);
});

test('a handler that throws rolls back its writes and the key', async () => {
  const key = newKey('throws');
  assert.equal((await post('/throws', key, {})).status, 500);
  assert.equal((await post('/throws', key, {})).status, 500);
  assert.equal(calls.get(`throws ${key}`), 2);
  assert.equal(await db.count(key), 0);
  assert.deepEqual(await db.ledger(key), []);
});

test('a 4xx is stored and replayed; with storeClientErrors off it runs again', async () => {
  const key = newKey('reject');
  const first = await post('/reject', key, { amount: -1 });
  assert.equal(first.status, 422);
  assert.equal(first.json.execution, 1);
  const again = await post('/reject', key, { amount: -1 });
  assert.equal(again.status, 422);
  assert.equal(again.text, first.text);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(calls.get(`reject ${key}`), 1);

  const key2 = newKey('unstored');
  assert.equal((await post('/reject-unstored', key2, {})).json.execution, 1);
  const rerun = await post('/reject-unstored', key2, {});
  assert.equal(rerun.status, 404);
  assert.equal(rerun.json.execution, 2);
  assert.equal(rerun.headers['idempotent-replayed'], undefined);
});

test('a failed COMMIT answers 500 instead of the handler\'s response, and keeps nothing', async () => {
  const key = newKey('deferred');
  errors.length = 0;
  const r = await post('/deferred', key, {});
  assert.equal(r.status, 500);
  assert.match(r.headers['content-type'], /^application\/problem\+json/);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, '23505');
  assert.deepEqual(await db.ledger(key), []);
  assert.equal((await post('/deferred', key, {})).status, 500);
  assert.equal(calls.get(`deferred ${key}`), 2);
});

test('the scope comes from the hook and the ttl from the route', async () => {
  const key = newKey('scope');
  const a = await post('/ttl', key, {}, { 'x-tenant': 'a' });
  const b = await post('/ttl', key, {}, { 'x-tenant': 'b' });
  assert.equal(a.json.scope, `${db.scopePrefix}:a`);
  assert.equal(b.json.scope, `${db.scopePrefix}:b`);
  assert.equal(b.headers['idempotent-replayed'], undefined);
  assert.equal(calls.get(`ttl ${key}`), 2);
  const rows = await db.ledger(key);
  assert.deepEqual(rows.map((r) => r.scope), [`${db.scopePrefix}:a`, `${db.scopePrefix}:b`]);
  for (const row of rows) {
    assert.equal(row.ttl.hours, 1);
    assert.equal(row.ttl.days, undefined);
  }
});

test('in progress: 409 with Retry-After (lease mode, and transaction mode without waiting)', async () => {
  for (const path of ['/lease', '/nowait']) {
    const name = path.slice(1);
    const key = newKey(name);
    const g = gate();
    const r = gate();
    held.set(name, g);
    reached.set(name, r);
    const first = post(path, key, { amount: 7 });
    await r.promise;
    const second = await post(path, key, { amount: 7 });
    assert.equal(second.status, 409, path);
    assert.equal(second.headers['retry-after'], '1');
    assert.match(second.headers['content-type'], /^application\/problem\+json/);
    assert.equal(second.json.status, 409);
    held.delete(name);
    reached.delete(name);
    g.open();
    assert.equal((await first).status, 201);
    const third = await post(path, key, { amount: 7 });
    assert.equal(third.headers['idempotent-replayed'], 'true');
    assert.equal(calls.get(`${name} ${key}`), 1);
  }
});

test('lease mode: a thrown handler releases the key (idem_fail), so the retry runs at once', async () => {
  const key = newKey('leasefail');
  const first = await post('/lease', key, { amount: 3 }, { 'x-fail': 'throw' });
  assert.equal(first.status, 500);
  const [row] = await db.ledger(key);
  assert.equal(row.state, 'in_progress');   // released: no lease holds it
  const retry = await post('/lease', key, { amount: 3 });
  assert.equal(retry.status, 201);
  assert.equal(retry.json.attempt, 2);
  assert.equal(await db.count(key), 1);
  const replay = await post('/lease', key, { amount: 3 });
  assert.equal(replay.headers['idempotent-replayed'], 'true');
  assert.equal(replay.text, retry.text);
});

test('awaitInterval is passed to idem_begin as await: a server without await refuses it', async () => {
  const { idempotency } = require('..');
  const express = require('express');
  const app = express();
  const seen = [];
  app.post('/x', idempotency({ pool, awaitInterval: '5 seconds' })(), (req, res) => res.json({}));
  app.use((err, req, res, next) => {
    seen.push(err);
    res.status(500).end();
  });
  const s = await listen(app);
  try {
    const r = await request(s.url, { path: '/x', headers: { 'idempotency-key': newKey('await') } });
    const { rows } = await db.admin.query(
      "SELECT count(*)::int AS n FROM pg_proc p, unnest(p.proargnames) a WHERE p.proname = 'idem_begin' AND a = 'await'");
    if (rows[0].n === 0) {
      assert.equal(r.status, 500);
      assert.equal(seen[0].code, '42883');   // no idem_begin with an await argument
    } else {
      assert.equal(r.status, 200);
    }
  } finally {
    await s.close();
  }
});

test('awaitInterval: a retry during a lease-mode request waits and replays its response instead of 409', async () => {
  const { rows: has } = await db.admin.query(
    "SELECT count(*)::int AS n FROM pg_proc p, unnest(p.proargnames) a WHERE p.proname = 'idem_begin' AND a = 'await'");
  if (has[0].n === 0) {
    return;   // a server before 1.2: see the test above
  }
  const waiting = await listen(makeApp({
    pool, tables: db.tables, scopePrefix: db.scopePrefix, hooks, options: { awaitInterval: '30 seconds' },
  }));
  try {
    const key = newKey('awaited');
    const g = gate();
    const r = gate();
    held.set('lease', g);
    reached.set('lease', r);
    const first = request(waiting.url, { path: '/lease', body: { amount: 8 }, headers: { 'idempotency-key': key } });
    await r.promise;
    let early = null;
    const second = request(waiting.url, { path: '/lease', body: { amount: 8 }, headers: { 'idempotency-key': key } })
      .then((res) => { early = res; return res; });
    // the retry's begin sleeps in await until the first request finishes
    for (let i = 0; ; i++) {
      const { rows } = await db.admin.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND strpos(query, 'idem_begin') > 0");
      if (rows[0].n > 0) {
        break;
      }
      assert.equal(early, null, `the retry did not wait: ${early && early.status} ${early && early.text}`);
      assert.ok(i < 1000, 'the retry never waited');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    held.delete('lease');
    reached.delete('lease');
    g.open();
    const a = await first;
    const b = await second;
    assert.equal(a.status, 201);
    assert.equal(b.status, 201);
    assert.equal(b.headers['idempotent-replayed'], 'true');
    assert.equal(b.text, a.text);
    assert.equal(calls.get(`lease ${key}`), 1);
  } finally {
    await waiting.close();
  }
});

test('options are checked', () => {
  const { idempotency } = require('..');
  assert.throws(() => idempotency({}), /pool/);
  assert.throws(() => idempotency({ pool, mode: 'eager' }), /mode/);
  assert.throws(() => idempotency({ pool, ttl: '1 hour', lifetime: 3 }), /unknown option "lifetime"/);
});
