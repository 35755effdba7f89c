/*-------------------------------------------------------------------------
 *
 * idempotency.h
 *	  Names, limits and SQLSTATEs shared by every module of the extension.
 *
 * src/idempotency.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEMPOTENCY_H
#define IDEMPOTENCY_H

#include "postgres.h"

#define IDEM_EXTENSION_NAME		"idempotency"
#define IDEM_LEDGER_NAME		"idem_ledger"
/* The ledger's CHECK constraint (1.3): digest = idem_digest(scope, key) */
#define IDEM_DIGEST_CHECK_NAME	"idem_ledger_digest_check"

/* Longest key accepted, in bytes */
#define IDEM_MAX_KEY_BYTES		255

/* Longest ttl, lease or clock offset accepted, in years */
#define IDEM_MAX_INTERVAL_YEARS	100

/* Length of a request fingerprint, in bytes (SHA-256, first 128 bits) */
#define IDEM_FINGERPRINT_LEN	16

/*
 * The lock_timeout under which a begin with wait => false inserts on the SQL
 * path: a lock wait that long means another transaction writes the key
 */
#define IDEM_NOWAIT_LOCK_TIMEOUT	"1ms"

/* SQLSTATEs of the extension */
#define ERRCODE_IDEM_REQUEST_MISMATCH	MAKE_SQLSTATE('I','K','0','0','1')
#define ERRCODE_IDEM_NOT_IN_PROGRESS	MAKE_SQLSTATE('I','K','0','0','2')
#define ERRCODE_IDEM_SUPERSEDED			MAKE_SQLSTATE('I','K','0','0','3')

#endif							/* IDEMPOTENCY_H */
