/*-------------------------------------------------------------------------
 *
 * ledger_digest.h
 *	  The ledger's primary key: a 16-byte digest of (scope, key).
 *
 * Used by the two ways the ledger is reached (ledger_direct.c,
 * ledger_sql.c) and by the row builder (ledger_row.c); no SPI.  Which of
 * the two digests a ledger uses (1.2's, or 1.3's that keeps UUIDv7 keys in
 * order) is read from the catalog: the caller must hold a lock on the
 * ledger, so that an ALTER EXTENSION ... UPDATE that rewrites the digests
 * cannot commit between the look and the use.
 *
 * src/ledger_digest.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_LEDGER_DIGEST_H
#define IDEM_LEDGER_DIGEST_H

#include "postgres.h"

#include "utils/uuid.h"

extern bool LedgerDigestOrdered(Oid nspid);
extern const pg_uuid_t *LedgerKeyDigest(Oid nspid, text *scope, text *key);
extern void LedgerKeyCollision(text *scope, text *key);

#endif							/* IDEM_LEDGER_DIGEST_H */
