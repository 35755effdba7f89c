/*-------------------------------------------------------------------------
 *
 * ledger_digest.h
 *	  The ledger's primary key: a 16-byte digest of (scope, key).
 *
 * Used by the two ways the ledger is reached (ledger_direct.c,
 * ledger_sql.c) and by the row builder (ledger_row.c); pure C, no SPI.
 *
 * src/ledger_digest.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_LEDGER_DIGEST_H
#define IDEM_LEDGER_DIGEST_H

#include "postgres.h"

#include "utils/uuid.h"

extern const pg_uuid_t *LedgerKeyDigest(text *scope, text *key);
extern void LedgerKeyCollision(text *scope, text *key);

#endif							/* IDEM_LEDGER_DIGEST_H */
