'use strict';
// lib/response.js: a response as the ledger stores it, and back.
//
// idem_finish stores {"headers": {...}, "body": "<text>"}: the headers the
// application chose to keep (lower-case names; an array for a repeated one)
// and the body exactly as sent, as a string when it is UTF-8 without NUL
// characters and as "body_base64" otherwise.  A replay sends those bytes, so
// it is identical to the first response.  The Python client stores the same.

// Never kept: they describe the framing of one message, not the response.
const FRAMING = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive']);

// headers (an object as res.getHeaders() returns it), body (a Buffer);
// keep: a Set of lower-case header names.  Returns the JSON text to store.
function encodeResponse(headers, body, keep) {
  const kept = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (keep.has(lower) && !FRAMING.has(lower) && value !== undefined) {
      kept[lower] = Array.isArray(value) ? value.map(String) : String(value);
    }
  }
  const doc = { headers: kept };
  const text = utf8OrNull(body);
  if (text !== null) {
    doc.body = text;
  } else {
    doc.body_base64 = body.toString('base64');
  }
  return JSON.stringify(doc);
}

function utf8OrNull(body) {
  if (body.includes(0)) {
    return null;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body);
  } catch {
    return null;
  }
}

// The stored response (jsonb, as node-postgres parses it) as { headers, body }.
// A response stored by other code (a SQL function finishing the key) is sent
// as a JSON body.
function decodeResponse(response) {
  if (response !== null && typeof response === 'object' && !Array.isArray(response) &&
      response.headers !== null && typeof response.headers === 'object' &&
      (typeof response.body === 'string' || typeof response.body_base64 === 'string')) {
    const body = typeof response.body === 'string'
      ? Buffer.from(response.body, 'utf8')
      : Buffer.from(response.body_base64, 'base64');
    return { headers: response.headers, body };
  }
  if (response === null || response === undefined) {
    return { headers: {}, body: Buffer.alloc(0) };
  }
  return {
    headers: { 'content-type': 'application/json' },
    body: Buffer.from(JSON.stringify(response), 'utf8'),
  };
}

module.exports = { encodeResponse, decodeResponse, FRAMING };
