'use strict';
// test/storm.test.js: 20 clients send the same request 5 times each, all at once.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const pg = require('pg');
const { newKey, setupDatabase, listen, request } = require('./helpers');
const { makeApp } = require('./fixtures/app');

let db;
let pool;
let srv;
const calls = new Map();

before(async () => {
  db = await setupDatabase();
  pool = new pg.Pool({ max: 10 });
  srv = await listen(makeApp({ pool, tables: db.tables, scopePrefix: db.scopePrefix, hooks: { calls } }));
});

after(async () => {
  await srv.close();
  await pool.end();
  await db.teardown();
});

test('100 concurrent duplicates: one execution, one business row, 100 identical responses, 99 replays', async () => {
  const key = newKey('storm');
  const agents = Array.from({ length: 20 }, () => new http.Agent({ keepAlive: true, maxSockets: 5 }));
  const sends = [];
  for (const agent of agents) {
    for (let i = 0; i < 5; i++) {
      // the handler sleeps 0.3 s inside its transaction, so the duplicates
      // arrive while the first one is still running
      sends.push(request(srv.url, {
        path: '/payments', agent, body: { amount: 100, currency: 'eur' },
        headers: { 'idempotency-key': key, 'x-sleep': '0.3' },
      }));
    }
  }
  const responses = await Promise.all(sends);
  for (const a of agents) {
    a.destroy();
  }

  assert.equal(await db.count(key), 1, 'business rows');
  assert.equal(calls.get(`payments ${key}`), 1, 'handler executions');
  const statuses = new Set(responses.map((r) => r.status));
  assert.deepEqual([...statuses], [201]);
  const bodies = new Set(responses.map((r) => r.text));
  assert.equal(bodies.size, 1, 'every body identical');
  const locations = new Set(responses.map((r) => r.headers.location));
  assert.equal(locations.size, 1, 'every Location identical');
  const replayed = responses.filter((r) => r.headers['idempotent-replayed'] === 'true');
  assert.equal(replayed.length, 99, 'replays marked');
  const [row] = await db.ledger(key);
  assert.equal(row.state, 'completed');
  assert.equal(row.attempt, 1);
});
