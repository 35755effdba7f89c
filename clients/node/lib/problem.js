'use strict';
// lib/problem.js: the problem+json answers (RFC 9457) the middleware gives itself.

const TITLES = {
  400: 'Idempotency-Key is missing or malformed',
  409: 'A request is outstanding for this Idempotency-Key',
  413: 'Request body too large',
  422: 'Idempotency-Key is already used',
  500: 'The response could not be recorded',
};

// A response object { status, headers, body } for the given status and detail.
function problem(status, detail, extraHeaders = {}, title = TITLES[status]) {
  const body = Buffer.from(JSON.stringify({ title, status, detail }), 'utf8');
  return {
    status,
    headers: { 'content-type': 'application/problem+json', ...extraHeaders },
    body,
  };
}

module.exports = { problem };
