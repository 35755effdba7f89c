'use strict';
// test/readme.test.js: the Express example of clients/README.md ("From HTTP"), run as written.
//
// Its require('idempotency-express') is this package, its pool gets a schema
// of the test's own first in its search_path, and app.listen(3000) is
// replaced by a listener on a free port of 127.0.0.1.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { RUN, newKey, setupDatabase, listen, request } = require('./helpers');

const README = path.join(__dirname, '..', '..', 'README.md');
const SCHEMA = `http_node_readme_${RUN}`;

let db;
let savedOptions;

before(async () => {
  db = await setupDatabase();
  await db.admin.query(`CREATE SCHEMA ${SCHEMA}`);
  await db.admin.query(`CREATE TABLE ${SCHEMA}.payments (id bigserial PRIMARY KEY, customer text, amount numeric)`);
  savedOptions = process.env.PGOPTIONS;
  process.env.PGOPTIONS = `${savedOptions || ''} -c search_path=${SCHEMA},public`.trim();
});

after(async () => {
  if (savedOptions === undefined) {
    delete process.env.PGOPTIONS;
  } else {
    process.env.PGOPTIONS = savedOptions;
  }
  await db.admin.query(`DROP SCHEMA ${SCHEMA} CASCADE`);
  await db.teardown();
});

function exampleCode() {
  const text = fs.readFileSync(README, 'utf8');
  const section = text.slice(text.indexOf('## From HTTP'));
  const m = /```js\n([\s\S]*?)```/.exec(section);
  assert.ok(m, 'a js block in the From HTTP section');
  return m[1];
}

test('the README\'s Express example: one payment, the retry replayed', async () => {
  const code = exampleCode();
  assert.ok(code.split('\n').length - 1 <= 15, 'fifteen lines at most');

  const realExpress = require('express');
  let app = null;
  const express = Object.assign(() => {
    const a = realExpress();
    a.listen = () => {
      app = a;
    };
    return a;
  }, realExpress);
  const modules = { express, 'idempotency-express': require('..') };
  const { pool } = new Function('require', code + '\nreturn { pool };')((name) => modules[name] ?? require(name));
  assert.ok(app, 'the example listens');

  const srv = await listen(app);
  try {
    const key = newKey('readme');
    const send = () => request(srv.url, {
      path: '/payments', body: { customer: 'ann', amount: 42 }, headers: { 'idempotency-key': key },
    });
    const first = await send();
    assert.equal(first.status, 201);
    const again = await send();
    assert.equal(again.status, 201);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(again.text, first.text);
    const { rows } = await db.admin.query(`SELECT customer, amount FROM ${SCHEMA}.payments`);
    assert.deepEqual(rows, [{ customer: 'ann', amount: '42' }]);
    assert.equal((await request(srv.url, { path: '/payments', body: { customer: 'ann', amount: 42 } })).status, 400);
  } finally {
    await srv.close();
    await pool.end();
  }
});
