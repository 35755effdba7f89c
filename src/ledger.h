/*-------------------------------------------------------------------------
 *
 * ledger.h
 *	  Declarations shared by the ledger's SQL and direct access paths.
 *
 * src/ledger.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_LEDGER_H
#define IDEM_LEDGER_H

#include "idempotency.h"

#include "nodes/execnodes.h"
#include "utils/rel.h"

/* A ledger row as read by select_sql / lock_sql */
typedef struct LedgerRow
{
	bool		is_completed;
	bool		status_null;
	int32		status;
	Datum		response;		/* valid while SPI is connected, or copied */
	bool		response_null;
	int32		attempt;
	bool		fingerprint_null;
	uint8		fingerprint[IDEM_FINGERPRINT_LEN];
	TimestampTz created_at;
	TimestampTz expires_at;
	bool		lease_null;
	TimestampTz lease_until;
	bool		mine;			/* written by the current transaction */
} LedgerRow;

/* What a row means for a new caller, at a given time */
typedef enum RowStanding
{
	ROW_COMPLETED,				/* live completed key: replay */
	ROW_HELD,					/* live attempt under a live lease */
	ROW_LAPSED,					/* attempt whose lease ran out */
	ROW_RELEASED,				/* attempt released by idem_fail */
	ROW_EXPIRED					/* counts as absent */
} RowStanding;

/* What a look at a key through the primary key found */
typedef enum LedgerKeyState
{
	KEY_ABSENT,					/* no row: an insertion went in, or may */
	KEY_PRESENT,				/* a row holds the key */
	KEY_BUSY					/* an unfinished transaction writes the row */
} LedgerKeyState;

/* The arguments of idem_begin and idem_once, validated */
typedef struct BeginArgs
{
	text	   *key;
	text	   *scope;
	bool		has_request;
	uint8		fingerprint[IDEM_FINGERPRINT_LEN];
	Interval	ttl;
	Interval	lease;
	bool		wait;
} BeginArgs;

/* Column numbers of the ledger, as the install script creates it */
#define Anum_ledger_created_at	1
#define Anum_ledger_expires_at	2
#define Anum_ledger_lease_until	3
#define Anum_ledger_status		4
#define Anum_ledger_attempt		5
#define Anum_ledger_scope		6
#define Anum_ledger_key			7
#define Anum_ledger_state		8
#define Anum_ledger_response	9
#define Anum_ledger_fingerprint	10
#define Natts_ledger			10

/* Name and type of each column, in table order (ledger_direct.c) */
typedef struct LedgerColumn
{
	const char *name;
	Oid			type;
	bool		notnull;
} LedgerColumn;

extern const LedgerColumn LedgerColumns[Natts_ledger];

/*
 * Set row's fingerprint from the ledger's bytea; a value of the wrong length
 * counts as NULL, so that it matches no request.
 */
static inline void
LedgerRowSetFingerprint(LedgerRow *row, Datum d, bool isnull)
{
	bytea	   *fp;

	row->fingerprint_null = isnull;
	if (isnull)
		return;
	fp = DatumGetByteaPP(d);
	if (VARSIZE_ANY_EXHDR(fp) != IDEM_FINGERPRINT_LEN)
		row->fingerprint_null = true;
	else
		memcpy(row->fingerprint, VARDATA_ANY(fp), IDEM_FINGERPRINT_LEN);
}

/*
 * Raise an error for a ledger row whose required column is NULL, as only a
 * superuser's change to the table could leave it.
 */
static inline void
LedgerRowDamaged(const char *column)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("ledger row has no %s", column),
			 errdetail("Column \"%s\" of idem_ledger is NULL; the extension never writes that.",
					   column),
			 errhint("Restore the column's NOT NULL constraint and repair or delete the row.")));
}

/* The ledger opened for direct heap and index access (ledger_direct.c) */
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

#endif							/* IDEM_LEDGER_H */
