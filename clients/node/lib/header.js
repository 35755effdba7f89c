'use strict';
// lib/header.js: read the Idempotency-Key request header.
//
// The header is a Structured Field string ("...") in the IETF draft and a bare
// token at Stripe; both are accepted and mean the same key.  A key is 1 to 255
// printable ASCII characters, the extension's limit in bytes.

const MAX_KEY_BYTES = 255;

// values: every value the request carried for the header (undefined if none).
// Returns { key } or { missing: true } or { malformed: 'why' }.
function readKey(values) {
  if (values === undefined || values.length === 0) {
    return { missing: true };
  }
  if (values.length > 1) {
    return { malformed: 'the request has more than one Idempotency-Key header' };
  }
  let value = String(values[0]).replace(/^[ \t]+|[ \t]+$/g, '');
  if (value.startsWith('"')) {
    const unquoted = parseSfString(value);
    if (unquoted === null) {
      return { malformed: 'the Idempotency-Key header is not a valid quoted string' };
    }
    value = unquoted;
  }
  if (value.length === 0) {
    return { malformed: 'the Idempotency-Key header is empty' };
  }
  if (!/^[\x20-\x7e]+$/.test(value)) {
    return { malformed: 'an Idempotency-Key must be printable ASCII' };
  }
  if (value.length > MAX_KEY_BYTES) {
    return { malformed: `an Idempotency-Key is at most ${MAX_KEY_BYTES} bytes` };
  }
  return { key: value };
}

// An RFC 8941 sf-string: "..." with \" and \\ as its only escapes and nothing
// after the closing quote.  Returns the unquoted text, or null.
function parseSfString(s) {
  let out = '';
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') {
      i++;
      if (i >= s.length || (s[i] !== '"' && s[i] !== '\\')) {
        return null;
      }
      out += s[i];
    } else if (c === '"') {
      return i === s.length - 1 ? out : null;
    } else if (c < '\x20' || c > '\x7e') {
      return null;
    } else {
      out += c;
    }
  }
  return null;
}

module.exports = { readKey, MAX_KEY_BYTES };
