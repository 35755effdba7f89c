'use strict';
// lib/capture.js: hold a response back until the ledger has it.
//
// The handler writes its response as usual (res.json, res.send, res.write,
// res.end ...).  Nothing reaches the socket: status, headers and body are
// collected, and when the handler ends the response, decide(captured) runs
// and returns what to send (the captured response, or a replacement such as a
// 500 when the commit failed).  Only then is it written.  So a client never
// sees a response whose transaction did not commit.

const METHODS = ['writeHead', 'write', 'end', 'flushHeaders'];

// Send { status, headers, body } on a response whose headers are not sent yet.
// With replace, every header set so far is dropped first.
function sendResponse(res, { status, headers, body }, replace = false) {
  if (replace) {
    for (const name of res.getHeaderNames()) {
      res.removeHeader(name);
    }
  }
  res.statusCode = status;
  for (const [name, value] of Object.entries(headers || {})) {
    res.setHeader(name, value);
  }
  if (status === 204 || status === 304 || status < 200) {
    res.removeHeader('content-length');   // a response that never has a body
    res.end();
  } else {
    res.setHeader('content-length', body.length);
    res.end(body);
  }
}

function toBuffer(chunk, encoding) {
  if (Buffer.isBuffer(chunk)) {
    return chunk;
  }
  if (chunk instanceof Uint8Array) {
    return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  }
  return Buffer.from(String(chunk), typeof encoding === 'string' ? encoding : 'utf8');
}

// decide: async ({ status, headers, body }) => { status, headers, body } | the same object.
// onFailure(err): decide threw; the socket is destroyed.
function captureResponse(res, decide, onFailure) {
  const saved = {};
  for (const m of METHODS) {
    saved[m] = Object.prototype.hasOwnProperty.call(res, m) ? res[m] : undefined;
  }
  const restore = () => {
    for (const m of METHODS) {
      if (saved[m] === undefined) {
        delete res[m];
      } else {
        res[m] = saved[m];
      }
    }
  };

  const chunks = [];
  const callbacks = [];
  let ended = false;

  res.writeHead = function writeHead(status, reason, headers) {
    if (typeof reason !== 'string') {
      headers = reason;
      reason = undefined;
    }
    res.statusCode = status;
    if (reason !== undefined) {
      res.statusMessage = reason;
    }
    if (Array.isArray(headers)) {
      // [[name, value], ...] or [name, value, name, value, ...]
      const pairs = Array.isArray(headers[0]) ? headers : [];
      if (!Array.isArray(headers[0])) {
        for (let i = 0; i + 1 < headers.length; i += 2) {
          pairs.push([headers[i], headers[i + 1]]);
        }
      }
      for (const [name, value] of pairs) {
        res.setHeader(name, value);
      }
    } else if (headers) {
      for (const [name, value] of Object.entries(headers)) {
        res.setHeader(name, value);
      }
    }
    return res;
  };

  res.write = function write(chunk, encoding, cb) {
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (ended) {
      return false;
    }
    if (chunk !== undefined && chunk !== null) {
      chunks.push(toBuffer(chunk, encoding));
    }
    if (cb) {
      callbacks.push(cb);
    }
    return true;
  };

  res.flushHeaders = function flushHeaders() {};

  res.end = function end(chunk, encoding, cb) {
    if (typeof chunk === 'function') {
      cb = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (ended) {
      return res;
    }
    ended = true;
    if (chunk !== undefined && chunk !== null) {
      chunks.push(toBuffer(chunk, encoding));
    }
    if (cb) {
      callbacks.push(cb);
    }
    restore();
    const captured = { status: res.statusCode, headers: res.getHeaders(), body: Buffer.concat(chunks) };
    Promise.resolve()
      .then(() => decide(captured))
      .then((out) => {
        sendResponse(res, out, out !== captured);
        for (const f of callbacks) {
          f();
        }
      })
      .catch((err) => {
        onFailure(err);
        res.destroy(err);
      });
    return res;
  };
}

module.exports = { captureResponse, sendResponse };
