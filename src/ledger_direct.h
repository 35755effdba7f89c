/*-------------------------------------------------------------------------
 *
 * ledger_direct.h
 *	  Direct heap and index access to the ledger, for the hot paths.
 *
 * src/ledger_direct.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_LEDGER_DIRECT_H
#define IDEM_LEDGER_DIRECT_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "nodes/execnodes.h"
#include "storage/itemptr.h"
#include "utils/rel.h"

#include "ledger_row.h"

/* The ledger opened for direct heap and index access */
typedef struct LedgerDirect
{
	Relation	rel;
	Oid			pkey;
	EState	   *estate;			/* NULL until an index is needed */
	ResultRelInfo *rri;
	List	   *arbiters;		/* the primary key, for speculative insertion */
	TupleTableSlot *rslot;		/* rows read through the primary key */
	TupleTableSlot *wslot;		/* rows written */
	Snapshot	snapshot;		/* taken when first needed */
} LedgerDirect;

extern bool LedgerDirectOpen(LedgerDirect *ld, Oid nspid, bool for_insert);
extern void LedgerDirectClose(LedgerDirect *ld);
extern Oid	LedgerDirectStorage(LedgerDirect *ld);
extern bool LedgerDirectFetch(LedgerDirect *ld, text *scope, text *key,
							  bool want_response, LedgerRow *row,
							  ItemPointer tid, bool *own_insert);
extern bool LedgerDirectFetchTid(LedgerDirect *ld, ItemPointer tid,
								 bool visible_only, text *scope, text *key,
								 bool want_response, LedgerRow *row,
								 bool *own_insert);
extern LedgerKeyState LedgerDirectInsert(LedgerDirect *ld, Datum *values,
										 bool *nulls, bool nowait, ItemPointer tid);
extern bool LedgerDirectUpdate(LedgerDirect *ld, ItemPointer tid,
							   Datum *values, bool *nulls);
extern LedgerKeyState LedgerKeyProbe(Oid nspid, text *scope, text *key);
extern bool LedgerDirectSweep(Oid nspid, TimestampTz now, int batch_size,
							  ItemPointer cursor, bool *reached_end,
							  uint64 *deleted);

#endif							/* IDEM_LEDGER_DIRECT_H */
