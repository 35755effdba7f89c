'use strict';
// lib/middleware.js: the Express middleware, in transaction mode and lease mode.

const { readKey } = require('./header');
const { requestDocument, isJsonType } = require('./fingerprint');
const { Ledger } = require('./ledger');
const { encodeResponse, decodeResponse } = require('./response');
const { captureResponse, sendResponse } = require('./capture');
const { problem } = require('./problem');

const DEFAULTS = {
  pool: null,
  mode: 'transaction',
  methods: ['POST', 'PATCH'],
  required: true,
  scope: null,
  ttl: null,
  lease: null,
  wait: true,
  awaitInterval: null,
  keepHeaders: ['content-type', 'location'],
  storeClientErrors: true,
  retryAfter: 1,
  replayHeader: 'Idempotent-Replayed',
  bodyLimit: 1024 * 1024,
  schema: null,
  onError: (err) => console.error('idempotency:', err),
};

// SQLSTATEs of a request document the server would not take as jsonb.
const BAD_JSON = new Set(['22P02', '22P05', '22021', '22003', '54001']);

// idempotency(options) returns make(overrides): each call makes a middleware
// with the options, overridden per route.
function idempotency(options = {}) {
  const base = normalize({ ...DEFAULTS, ...options });
  const make = (overrides = {}) => createMiddleware(normalize({ ...base, ...overrides }));
  return make;
}

function normalize(o) {
  for (const name of Object.keys(o)) {
    if (!(name in DEFAULTS)) {
      throw new TypeError(`idempotency: unknown option "${name}"`);
    }
  }
  if (!o.pool || typeof o.pool.connect !== 'function' || typeof o.pool.query !== 'function') {
    throw new TypeError('idempotency: the pool option must be a pg.Pool');
  }
  if (o.mode !== 'transaction' && o.mode !== 'lease') {
    throw new TypeError('idempotency: mode is "transaction" or "lease"');
  }
  if (o.scope !== null && typeof o.scope !== 'function') {
    throw new TypeError('idempotency: scope is a function (req) => string');
  }
  return {
    ...o,
    methods: o.methods instanceof Set ? o.methods : new Set([...o.methods].map((m) => m.toUpperCase())),
    keepHeaders: o.keepHeaders instanceof Set
      ? o.keepHeaders : new Set([...o.keepHeaders].map((h) => h.toLowerCase())),
  };
}

function createMiddleware(o) {
  const ledger = new Ledger(o);

  return async function idempotencyMiddleware(req, res, next) {
    // A request that another instance of this middleware took already, or
    // whose method is not covered, passes through.
    if (req.idempotency !== undefined || !o.methods.has(req.method)) {
      return next();
    }
    const found = readKey(req.headersDistinct ? req.headersDistinct['idempotency-key'] : undefined);
    if (found.missing) {
      if (!o.required) {
        return next();
      }
      return sendResponse(res, problem(400, 'This operation requires an Idempotency-Key header.'));
    }
    if (found.malformed) {
      return sendResponse(res, problem(400, found.malformed + '.'));
    }

    let body;
    try {
      body = await readBody(req, o.bodyLimit);
    } catch (err) {
      if (err.status === 413) {
        return sendResponse(res, problem(413, `The request body is over ${o.bodyLimit} bytes.`));
      }
      return next(err);
    }
    const doc = requestDocument(req.method, req.originalUrl, req.headers['content-type'], body);
    if (doc.invalid) {
      return sendResponse(res, problem(400, doc.invalid + '.', {}, 'Malformed request body'));
    }
    if (doc.json !== undefined && req.body === undefined) {
      req.body = doc.json;
    }

    let scope = '';
    if (o.scope) {
      scope = (await o.scope(req)) ?? '';
    }
    const call = {
      key: found.key, request: doc.text, scope: String(scope),
      ttl: o.ttl, lease: o.mode === 'lease' ? o.lease : null, wait: o.wait, attempt: null,
    };
    if (o.mode === 'transaction') {
      return transactionMode(o, ledger, call, req, res, next);
    }
    return leaseMode(o, ledger, call, req, res, next);
  };
}

// Transaction mode: one pooled connection, one transaction for the ledger and
// the handler's writes, committed before the response leaves.
async function transactionMode(o, ledger, call, req, res, next) {
  const held = await Held.connect(o.pool);
  let r;
  try {
    await held.client.query('BEGIN');
    r = await ledger.begin(held.client, call);
  } catch (err) {
    await held.rollback();
    return answerBeginError(o, err, req, res, next);
  }
  if (r.outcome !== 'started') {
    await held.rollback();
    return answerOutcome(o, r, res);
  }
  call.attempt = r.attempt;
  req.idempotency = {
    key: call.key, scope: call.scope, attempt: r.attempt, mode: 'transaction', client: held.client,
  };
  captureResponse(res, async (captured) => {
    if (!storable(o, captured.status)) {
      await held.rollback();
      return captured;
    }
    try {
      await ledger.finish(held.client, call, encodeResponse(captured.headers, captured.body, o.keepHeaders),
        captured.status);
      await held.client.query('COMMIT');
    } catch (err) {
      await held.rollback();
      o.onError(err, req);
      return problem(500, 'The response could not be recorded, and nothing was kept: retry the request.');
    }
    held.release();
    return captured;
  }, (err) => o.onError(err, req));
  return next();
}

// Lease mode: the begin commits at once with a lease; the handler works with
// connections of its own; finish (or fail, on a 5xx) commits afterwards.
async function leaseMode(o, ledger, call, req, res, next) {
  let r;
  try {
    r = await ledger.begin(o.pool, call);
  } catch (err) {
    return answerBeginError(o, err, req, res, next);
  }
  if (r.outcome !== 'started') {
    return answerOutcome(o, r, res);
  }
  call.attempt = r.attempt;
  req.idempotency = { key: call.key, scope: call.scope, attempt: r.attempt, mode: 'lease', client: null };
  captureResponse(res, async (captured) => {
    try {
      if (storable(o, captured.status)) {
        await ledger.finish(o.pool, call, encodeResponse(captured.headers, captured.body, o.keepHeaders),
          captured.status);
      } else {
        await ledger.fail(o.pool, call);
      }
    } catch (err) {
      // The work is done and cannot be undone: the client gets its response.
      // Unrecorded, the key stays in progress until its lease lapses (or, on
      // IK003, belongs to the attempt that took it over).
      o.onError(err, req);
    }
    return captured;
  }, (err) => o.onError(err, req));
  return next();
}

// 5xx responses are never stored; 4xx ones when storeClientErrors is on.
function storable(o, status) {
  return status < 500 && (status < 400 || o.storeClientErrors);
}

function answerOutcome(o, r, res) {
  if (r.outcome === 'replayed') {
    const { headers, body } = decodeResponse(r.response);
    return sendResponse(res, { status: r.status, headers: { ...headers, [o.replayHeader]: 'true' }, body });
  }
  return sendResponse(res, problem(409,
    'A request with this Idempotency-Key is being processed: retry later.',
    { 'retry-after': String(o.retryAfter) }));
}

function answerBeginError(o, err, req, res, next) {
  if (err.code === 'IK001') {
    return sendResponse(res, problem(422,
      'This Idempotency-Key was used with a different request (method, path or body).'));
  }
  if (BAD_JSON.has(err.code)) {
    return sendResponse(res, problem(400, 'The request body is not JSON the server accepts.', {},
      'Malformed request body'));
  }
  return next(err);
}

// The request body as a Buffer.  Read here unless a body parser ran first:
// then its req.rawBody (a Buffer, from a verify hook), or the body it parsed.
async function readBody(req, limit) {
  if (req.readableEnded || (req.complete && !req.readable)) {
    if (Buffer.isBuffer(req.rawBody)) {
      return req.rawBody;
    }
    if (Buffer.isBuffer(req.body)) {
      return req.body;
    }
    if (typeof req.body === 'string') {
      return Buffer.from(req.body, 'utf8');
    }
    if (req.body !== undefined && isJsonType(req.headers['content-type'])) {
      return Buffer.from(JSON.stringify(req.body), 'utf8');
    }
    return Buffer.alloc(0);
  }
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    const cleanup = () => {
      req.removeListener('data', onData);
      req.removeListener('end', onEnd);
      req.removeListener('error', onError);
    };
    const onData = (chunk) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.resume();   // drain the rest unread, so that the 413 can be sent
        const err = new Error('request body too large');
        err.status = 413;
        reject(err);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      req.rawBody = Buffer.concat(chunks);
      resolve(req.rawBody);
    };
    const onError = (err) => {
      cleanup();
      reject(err);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

// A pooled client held for one request's transaction.  A connection error
// while held (the server ended the session) is kept instead of crashing the
// process, and such a client is destroyed rather than returned to the pool.
class Held {
  static async connect(pool) {
    const client = await pool.connect();
    return new Held(client);
  }

  constructor(client) {
    this.client = client;
    this.broken = null;
    this.onError = (err) => {
      this.broken = err;
    };
    client.on('error', this.onError);
    this.released = false;
  }

  async rollback() {
    if (this.released) {
      return;
    }
    try {
      await this.client.query('ROLLBACK');
    } catch (err) {
      this.broken = this.broken || err;
    }
    this.release();
  }

  release() {
    if (this.released) {
      return;
    }
    this.released = true;
    this.client.removeListener('error', this.onError);
    this.client.release(this.broken || undefined);
  }
}

module.exports = { idempotency, DEFAULTS };
