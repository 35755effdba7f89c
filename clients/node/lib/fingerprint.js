'use strict';
// lib/fingerprint.js: the request document that idem_begin compares.
//
// {"method": "POST", "path": "/payments?x=1"}               no body
// {"method": ..., "path": ..., "body": <the JSON body>}      a JSON body
// {"method": ..., "path": ..., "body_sha256": "<hex>"}       any other body
//
// The JSON body goes to the server as the text the client sent, cast to jsonb
// there, so jsonb equality decides what counts as the same body (key order,
// white space, 1.0 against 1) and no number loses digits on the way.  The
// Python client builds the same document, so the two can share a ledger.

const crypto = require('node:crypto');

// Deeper documents are hashed as bytes: every client and the server accept them then.
const MAX_JSON_DEPTH = 512;

function isJsonType(contentType) {
  if (!contentType) {
    return false;
  }
  const media = String(contentType).split(';')[0].trim().toLowerCase();
  return media === 'application/json' || /^application\/[!#$%&'*+.^_`|~0-9a-z-]+\+json$/.test(media);
}

// True when jsonb takes every string of the value as it is: no \u0000 and no
// unpaired surrogate (both legal JSON, both refused by jsonb), and the nesting
// is not too deep.
function jsonbSafe(value) {
  const stack = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop();
    if (typeof v === 'string') {
      if (v.includes('\u0000') || !v.isWellFormed()) {
        return false;
      }
    } else if (v !== null && typeof v === 'object') {
      if (depth > MAX_JSON_DEPTH) {
        return false;
      }
      const entries = Array.isArray(v) ? v : Object.keys(v);
      for (const item of entries) {
        stack.push([item, depth + 1]);
      }
      if (!Array.isArray(v)) {
        for (const k of entries) {
          stack.push([v[k], depth + 1]);
        }
      }
    }
  }
  return true;
}

// method, target (path and query as sent), the Content-Type header and the
// body as a Buffer.  Returns { text } (the document as JSON text) or
// { invalid: 'why' } for a JSON content type whose body is not JSON.
function requestDocument(method, target, contentType, body) {
  const head = '{"method": ' + JSON.stringify(method) + ', "path": ' + JSON.stringify(target);
  if (body.length === 0) {
    return { text: head + '}' };
  }
  if (isJsonType(contentType)) {
    let text;
    let value;
    try {
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body);
      value = JSON.parse(text);
    } catch {
      return { invalid: 'the request body is not valid JSON' };
    }
    if (jsonbSafe(value)) {
      return { text: head + ', "body": ' + text + '}', json: value };
    }
    return { text: head + ', "body_sha256": "' + sha256(body) + '"}', json: value };
  }
  return { text: head + ', "body_sha256": "' + sha256(body) + '"}' };
}

function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

module.exports = { requestDocument, isJsonType };
