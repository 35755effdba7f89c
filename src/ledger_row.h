/*-------------------------------------------------------------------------
 *
 * ledger_row.h
 *	  The ledger's row: its columns, as the install script creates them,
 *	  and the row as both storage paths read it.
 *
 * Shared by the ledger logic (ledger.c) and the two ways it reaches the
 * table (ledger_sql.c, ledger_direct.c); it depends on nothing of theirs.
 *
 * src/ledger_row.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_LEDGER_ROW_H
#define IDEM_LEDGER_ROW_H

#include "postgres.h"

#include "datatype/timestamp.h"

#include "idempotency.h"
#include "owner.h"

/*
 * Column numbers of the ledger, as the install script and the upgrade
 * scripts after it make it (owner is 1.1's, added last; digest, the primary
 * key, is 1.2's, added after it)
 */
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
#define Anum_ledger_owner		11
#define Anum_ledger_digest		12
#define Natts_ledger			12

/* Name, type and nullability of each column, in table order */
typedef struct LedgerColumn
{
	const char *name;
	Oid			type;
	bool		notnull;
} LedgerColumn;

extern const LedgerColumn LedgerColumns[Natts_ledger];

/* A ledger row, as read by either path */
typedef struct LedgerRow
{
	bool		is_completed;
	bool		status_null;
	int32		status;
	Datum		response;		/* in the reader's memory context, if read */
	bool		response_null;
	int32		attempt;
	bool		fingerprint_null;
	uint8		fingerprint[IDEM_FINGERPRINT_LEN];
	TimestampTz created_at;
	TimestampTz expires_at;
	bool		lease_null;
	TimestampTz lease_until;
	bool		owner_null;		/* no owner recorded: the lease alone binds */
	IdemOwner	owner;			/* the session that began the attempt */
	bool		mine;			/* written by the current transaction */
} LedgerRow;

/* What a look at a key through the primary key found */
typedef enum LedgerKeyState
{
	KEY_ABSENT,					/* no row: an insertion went in, or may */
	KEY_PRESENT,				/* a row holds the key */
	KEY_BUSY,					/* an unfinished transaction writes the row */
	KEY_UNSEEN					/* in Citus shards, which a probe cannot see */
} LedgerKeyState;

extern void LedgerRowSetFingerprint(LedgerRow *row, Datum d, bool isnull);
extern void LedgerRowSetOwner(LedgerRow *row, Datum d, bool isnull);
extern Datum LedgerFingerprintDatum(const uint8 *fingerprint);
extern void LedgerRowValues(const LedgerRow *row, Oid nspid, text *scope, text *key,
							Datum *values, bool *nulls);
extern void LedgerRowDamaged(const char *column);

#endif							/* IDEM_LEDGER_ROW_H */
