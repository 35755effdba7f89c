'use strict';
// test/crash.test.js: a handler interrupted for real, then the request retried.
//
// - the handler's PostgreSQL backend terminated (pg_terminate_backend) while
//   the handler is inside its transaction;
// - the application process killed (SIGKILL) while its handler is inside its
//   transaction, then started again;
// - the same in lease mode: the retry meets 409 until the lease has lapsed
//   (the restarted process's connections run the ledger clock 2 minutes
//   ahead, idempotency.clock_offset), then takes the key over and executes;
// - a lease-mode handler stuck past its lease (its process alive): taken
//   over, and its late end refused with IK003.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const readline = require('node:readline');
const pg = require('pg');
const { newKey, setupDatabase, listen, request, waitFor, gate } = require('./helpers');
const { makeApp } = require('./fixtures/app');

let db;
const children = new Set();

before(async () => {
  db = await setupDatabase();
});

after(async () => {
  for (const c of children) {
    c.kill('SIGKILL');
  }
  await db.teardown();
});

// Start test/fixtures/server.js; resolves { url, child, appName }.
function startServer({ hold = [], clockOffset = null } = {}) {
  const appName = `idem-node-${process.pid}-${children.size}`;
  const env = {
    ...process.env,
    FIXTURE: JSON.stringify({ tables: db.tables, scopePrefix: db.scopePrefix }),
    HOLD: hold.join(','),
    PGAPPNAME: appName,
  };
  if (clockOffset) {
    env.PGOPTIONS = `${process.env.PGOPTIONS || ''} -c idempotency.clock_offset=${clockOffset}`.trim();
  }
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'server.js')], {
    env, stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
    readline.createInterface({ input: child.stdout }).once('line', (line) => {
      const { port } = JSON.parse(line);
      resolve({ url: `http://127.0.0.1:${port}`, child, appName });
    });
  });
}

function kill(child) {
  return new Promise((resolve) => {
    child.removeAllListeners('exit');
    child.once('exit', () => {
      children.delete(child);
      resolve();
    });
    child.kill('SIGKILL');
  });
}

const post = (url, p, key, body) => request(url, { path: p, body, headers: { 'idempotency-key': key } });

test('transaction mode: the handler\'s backend is terminated inside its transaction; the retry executes once', async () => {
  const pool = new pg.Pool({ max: 4 });
  const calls = new Map();
  const errors = [];
  const reached = gate();
  const held = gate();
  let holding = true;
  const srv = await listen(makeApp({
    pool, tables: db.tables, scopePrefix: db.scopePrefix,
    hooks: {
      calls,
      onError: (e) => errors.push(e),
      inside: async (name, info) => reached.open(info),
      hold: async () => {
        if (holding) {
          await held.promise;
        }
      },
    },
  }));
  try {
    const key = newKey('terminate');
    const first = post(srv.url, '/payments', key, { amount: 70 });
    const { pid } = await reached.promise;
    const { rows } = await db.admin.query('SELECT pg_terminate_backend($1) AS ok', [pid]);
    assert.equal(rows[0].ok, true);
    await waitFor(async () => (await db.admin.query(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0].n === 0,
    10000, 'the backend to exit');
    holding = false;
    held.open();
    const r1 = await first;
    assert.equal(r1.status, 500);
    assert.equal(await db.count(key), 0);
    assert.deepEqual(await db.ledger(key), []);

    const r2 = await post(srv.url, '/payments', key, { amount: 70 });
    assert.equal(r2.status, 201);
    assert.equal(r2.headers['idempotent-replayed'], undefined);
    const r3 = await post(srv.url, '/payments', key, { amount: 70 });
    assert.equal(r3.headers['idempotent-replayed'], 'true');
    assert.equal(r3.text, r2.text);
    assert.equal(await db.count(key), 1);
    assert.equal(calls.get(`payments ${key}`), 2);
    // the pool lost the terminated client and still works
    assert.equal((await pool.query('SELECT 1 AS one')).rows[0].one, 1);
  } finally {
    await srv.close();
    await pool.end();
  }
});

test('transaction mode: the application is killed inside a handler\'s transaction, restarted; the retry executes once', async () => {
  const key = newKey('kill-tx');
  const a = await startServer({ hold: ['payments'] });
  const first = post(a.url, '/payments', key, { amount: 71 }).catch((e) => e);
  // the handler has inserted its row and waits inside its open transaction
  await waitFor(async () => (await db.admin.query(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'",
    [a.appName])).rows[0].n === 1, 10000, 'the handler inside its transaction');
  await kill(a.child);
  const lost = await first;
  assert.ok(lost instanceof Error, 'the first client gets no response');

  const b = await startServer();
  try {
    const r2 = await post(b.url, '/payments', key, { amount: 71 });
    assert.equal(r2.status, 201);
    assert.equal(r2.headers['idempotent-replayed'], undefined);
    const r3 = await post(b.url, '/payments', key, { amount: 71 });
    assert.equal(r3.headers['idempotent-replayed'], 'true');
    assert.equal(r3.text, r2.text);
    assert.equal(await db.count(key), 1);
    const [row] = await db.ledger(key);
    assert.equal(row.state, 'completed');
    assert.equal(row.attempt, 1);   // the killed attempt never committed
  } finally {
    await kill(b.child);
  }
});

test('lease mode: the application is killed inside a handler; the retry after the lease takes over and executes once', async () => {
  const key = newKey('kill-lease');
  const a = await startServer({ hold: ['lease'] });
  const first = post(a.url, '/lease', key, { amount: 72 }).catch((e) => e);
  // the begin has committed: the key is held under its one-minute lease
  await waitFor(async () => {
    const rows = await db.ledger(key);
    return rows.length === 1 && rows[0].state === 'in_progress';
  }, 10000, 'the committed attempt');
  await kill(a.child);
  assert.ok((await first) instanceof Error);

  const b = await startServer();
  const later = await startServer({ clockOffset: '2min' });
  try {
    let r2 = await post(b.url, '/lease', key, { amount: 72 });
    if (r2.status === 409) {
      // the lease still holds the key
      assert.equal(r2.headers['retry-after'], '1');
      assert.equal(await db.count(key), 0);
      r2 = await post(later.url, '/lease', key, { amount: 72 });
    }
    // else: a server that takes over from an owner whose session is gone
    // did so at once, before the lease lapsed
    assert.equal(r2.status, 201);
    assert.equal(r2.json.attempt, 2);   // a takeover of the crashed attempt
    const r3 = await post(b.url, '/lease', key, { amount: 72 });
    assert.equal(r3.status, 201);
    assert.equal(r3.headers['idempotent-replayed'], 'true');
    assert.equal(r3.text, r2.text);
    assert.equal(await db.count(key), 1);
    const mismatch = await post(b.url, '/lease', key, { amount: 73 });
    assert.equal(mismatch.status, 422);
  } finally {
    await kill(b.child);
    await kill(later.child);
  }
});

test('lease mode: a handler stuck past its lease is taken over; its late end cannot release the new attempt (IK003)', async () => {
  const key = newKey('stuck-lease');
  const pool = new pg.Pool({ max: 4 });
  const laterPool = new pg.Pool({ max: 4, options: '-c idempotency.clock_offset=2min' });
  const errors = [];
  const calls = new Map();
  const reached = gate();
  const held = gate();
  const stuck = await listen(makeApp({
    pool, tables: db.tables, scopePrefix: db.scopePrefix,
    hooks: {
      calls,
      onError: (e) => errors.push(e),
      inside: async (name, info) => reached.open(info),
      hold: () => held.promise,
    },
  }));
  const later = await listen(makeApp({ pool: laterPool, tables: db.tables, scopePrefix: db.scopePrefix, hooks: { calls } }));
  try {
    // the first request's handler is stuck (its process and session alive)
    const first = request(stuck.url, {
      path: '/lease', body: { amount: 74 }, headers: { 'idempotency-key': key, 'x-fail': 'throw' },
    });
    await reached.promise;
    const early = await post(stuck.url, '/lease', key, { amount: 74 });
    assert.equal(early.status, 409);

    // two minutes later by the ledger's clock the one-minute lease has lapsed
    const r2 = await post(later.url, '/lease', key, { amount: 74 });
    assert.equal(r2.status, 201);
    assert.equal(r2.json.attempt, 2);

    // the stuck handler ends with an error: its idem_fail (attempt 1) is refused
    held.open();
    assert.equal((await first).status, 500);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, 'IK003');
    const r3 = await post(stuck.url, '/lease', key, { amount: 74 });
    assert.equal(r3.headers['idempotent-replayed'], 'true');
    assert.equal(r3.text, r2.text);
    assert.equal(await db.count(key), 1);
  } finally {
    await stuck.close();
    await later.close();
    await pool.end();
    await laterPool.end();
  }
});
