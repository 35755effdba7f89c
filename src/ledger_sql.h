/*-------------------------------------------------------------------------
 *
 * ledger_sql.h
 *	  The ledger through SQL: kept SPI plans for what the fast path does
 *	  not serve.
 *
 * Calls between LedgerSqlConnect and LedgerSqlDisconnect run in SPI's
 * memory context; what must outlive the call is copied out before the
 * disconnect.
 *
 * src/ledger_sql.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_LEDGER_SQL_H
#define IDEM_LEDGER_SQL_H

#include "postgres.h"

#include "storage/itemptr.h"

#include "ledger_row.h"

/* How LedgerSqlFetch reads a row */
typedef enum LedgerLock
{
	LEDGER_READ,				/* as the statement's snapshot sees it */
	LEDGER_LOCK,				/* FOR UPDATE, waiting for a holder */
	LEDGER_LOCK_SKIP			/* FOR UPDATE SKIP LOCKED */
} LedgerLock;

extern int	LedgerSqlConnect(Oid nspid);
extern void LedgerSqlDisconnect(int nestlevel);
extern bool LedgerSqlFetch(text *scope, text *key, LedgerLock lock,
						   LedgerRow *row);
extern bool LedgerSqlInsert(Datum *values, bool *nulls);
extern bool LedgerSqlInsertNoWait(Datum *values, bool *nulls, bool *busy);
extern void LedgerSqlReplace(Datum *values, bool *nulls);
extern uint64 LedgerSqlSweep(ItemPointer cursor, TimestampTz now,
							 int batch_size);
extern int64 LedgerSqlCountExpired(TimestampTz now);
extern void LedgerSqlSetLogged(Oid nspid, bool logged);

#endif							/* IDEM_LEDGER_SQL_H */
