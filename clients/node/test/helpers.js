'use strict';
// test/helpers.js: a database, HTTP servers on 127.0.0.1 and a small HTTP client.
//
// The server comes from the environment (PGHOST, PGPORT, PGUSER, PGDATABASE),
// as a superuser: the tests create the extension if it is missing, make their
// own tables (names carry a random suffix), read the ledger to check it, and
// drop everything they made at the end.

const crypto = require('node:crypto');
const http = require('node:http');
const pg = require('pg');

const RUN = crypto.randomBytes(4).toString('hex');

// A fresh key for each use, so that tests never meet each other's keys.
let counter = 0;
function newKey(label = 'k') {
  counter += 1;
  return `${label}-${RUN}-${counter}`;
}

async function setupDatabase() {
  const admin = new pg.Pool({ max: 2 });
  await admin.query('CREATE EXTENSION IF NOT EXISTS idempotency');
  const t = {
    payments: `http_node_payments_${RUN}`,
    deferred: `http_node_deferred_${RUN}`,
  };
  await admin.query(`CREATE TABLE ${t.payments} (id bigserial PRIMARY KEY, key text NOT NULL, amount numeric NOT NULL)`);
  await admin.query(`CREATE TABLE ${t.deferred} (id int, CONSTRAINT ${t.deferred}_u UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`);
  await admin.query(`INSERT INTO ${t.deferred} VALUES (1)`);
  return {
    admin,
    tables: t,
    scopePrefix: `node-test-${RUN}`,
    async count(key) {
      const { rows } = await admin.query(`SELECT count(*)::int AS n FROM ${t.payments} WHERE key = $1`, [key]);
      return rows[0].n;
    },
    async ledger(key) {
      const { rows } = await admin.query(
        'SELECT scope, key, state, status, response, attempt, expires_at - created_at AS ttl FROM idem_ledger WHERE key = $1 ORDER BY scope',
        [key]);
      return rows;
    },
    async teardown() {
      await admin.query(`DROP TABLE IF EXISTS ${t.payments}, ${t.deferred}`);
      await admin.query('DELETE FROM idem_ledger WHERE key LIKE $1', [`%-${RUN}-%`]);
      await admin.end();
    },
  };
}

// Listen on 127.0.0.1 on a free port; returns { url, close }.
function listen(app) {
  return new Promise((resolve, reject) => {
    const server = http.createServer(app);
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}`,
        server,
        close: () => new Promise((done) => {
          server.closeAllConnections();
          server.close(() => done());
        }),
      });
    });
  });
}

// One HTTP request; resolves { status, headers, text, json }.
function request(url, { method = 'POST', path = '/', headers = {}, body, agent } = {}) {
  return new Promise((resolve, reject) => {
    let payload = body;
    const h = { ...headers };
    if (payload !== undefined && typeof payload !== 'string' && !Buffer.isBuffer(payload)) {
      payload = JSON.stringify(payload);
      h['content-type'] = h['content-type'] || 'application/json';
    }
    const req = http.request(url + path, { method, headers: h, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (payload !== undefined) {
      req.write(payload);
    }
    req.end();
  });
}

// Wait until fn() is truthy, checking every 20 ms, for at most ms.
async function waitFor(fn, ms = 10000, what = 'condition') {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) {
      return v;
    }
    if (Date.now() > until) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

// A promise with its resolve function, for handlers that a test holds.
function gate() {
  let open;
  const p = new Promise((r) => {
    open = r;
  });
  return { promise: p, open };
}

module.exports = { RUN, newKey, setupDatabase, listen, request, waitFor, gate };
