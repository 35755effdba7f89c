'use strict';
// idempotency-express: Idempotency-Key middleware for Express on the
// idempotency PostgreSQL extension.  See README.md.

const { idempotency } = require('./lib/middleware');

module.exports = { idempotency };
