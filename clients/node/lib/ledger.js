'use strict';
// lib/ledger.js: the extension's calls, one SQL statement each.
//
// `db` is anything with node-postgres's query(text, values): a client inside
// the middleware's transaction, or the pool (one statement, committed at once).

function quoteIdent(name) {
  return '"' + String(name).replace(/"/g, '""') + '"';
}

// Turns a ttl or lease given as seconds into interval text; strings pass as they are.
function intervalText(value) {
  if (value === null || value === undefined) {
    return null;
  }
  if (typeof value === 'number') {
    return `${value} seconds`;
  }
  return String(value);
}

class Ledger {
  // schema: where CREATE EXTENSION put the functions (null: the search_path).
  // awaitInterval: passed to idem_begin as `await` (when the server supports await).
  constructor({ schema = null, awaitInterval = null } = {}) {
    const q = schema ? quoteIdent(schema) + '.' : '';
    this.awaitInterval = intervalText(awaitInterval);
    const awaitArg = this.awaitInterval === null ? '' : ', await => $7::interval';
    this.beginSql = 'SELECT outcome, status, response, attempt FROM ' + q + 'idem_begin(' +
      'key => $1, request => $2::jsonb, scope => $3, ttl => $4::interval, lease => $5::interval, ' +
      'wait => $6' + awaitArg + ')';
    this.finishSql = 'SELECT outcome FROM ' + q + 'idem_finish(' +
      'key => $1, response => $2::jsonb, status => $3, scope => $4, attempt => $5)';
    this.failSql = 'SELECT ' + q + 'idem_fail(key => $1, scope => $2, attempt => $3)';
  }

  // Returns { outcome, status, response, attempt }.
  async begin(db, { key, request, scope, ttl, lease, wait }) {
    const values = [key, request, scope, intervalText(ttl), intervalText(lease), wait];
    if (this.awaitInterval !== null) {
      values.push(this.awaitInterval);
    }
    const { rows } = await db.query(this.beginSql, values);
    return rows[0];
  }

  async finish(db, { key, scope, attempt }, responseJson, status) {
    await db.query(this.finishSql, [key, responseJson, status, scope, attempt]);
  }

  async fail(db, { key, scope, attempt }) {
    await db.query(this.failSql, [key, scope, attempt]);
  }
}

module.exports = { Ledger, intervalText };
