/*-------------------------------------------------------------------------
 *
 * ledger_row.c
 *	  The ledger's columns, and a row turned into column values and back.
 *
 * src/ledger_row.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "ledger_digest.h"
#include "ledger_row.h"

/* The ledger's columns, as the install and upgrade scripts make them */
const LedgerColumn LedgerColumns[Natts_ledger] =
{
	{"created_at", TIMESTAMPTZOID, true},
	{"expires_at", TIMESTAMPTZOID, true},
	{"lease_until", TIMESTAMPTZOID, false},
	{"status", INT4OID, false},
	{"attempt", INT4OID, true},
	{"scope", TEXTOID, true},
	{"key", TEXTOID, true},
	{"state", TEXTOID, true},
	{"response", JSONBOID, false},
	{"fingerprint", BYTEAOID, false},
	{"owner", BYTEAOID, false},
	{"digest", UUIDOID, true},
};

/*
 * Set row's fingerprint from the ledger's bytea; a value of the wrong length
 * counts as NULL, so that it matches no request.
 */
void
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
 * Set row's owner from the ledger's bytea; a value of the wrong length
 * counts as NULL (no owner: the lease alone binds the attempt).
 */
void
LedgerRowSetOwner(LedgerRow *row, Datum d, bool isnull)
{
	row->owner_null = isnull || !OwnerFromDatum(d, &row->owner);
}

/* A fingerprint as the ledger's bytea */
Datum
LedgerFingerprintDatum(const uint8 *fingerprint)
{
	bytea	   *fp = (bytea *) palloc(VARHDRSZ + IDEM_FINGERPRINT_LEN);

	SET_VARSIZE(fp, VARHDRSZ + IDEM_FINGERPRINT_LEN);
	memcpy(VARDATA(fp), fingerprint, IDEM_FINGERPRINT_LEN);
	return PointerGetDatum(fp);
}

/*
 * The column values of row, the row of (scope, key) in the ledger of schema
 * nspid (locked by the caller), in table order; the digest is the one
 * LedgerKeyDigest remembers for the pair, hashed once
 */
void
LedgerRowValues(const LedgerRow *row, Oid nspid, text *scope, text *key,
				Datum *values, bool *nulls)
{
	pg_uuid_t  *digest;

	memset(nulls, 0, sizeof(bool) * Natts_ledger);
	values[Anum_ledger_created_at - 1] = TimestampTzGetDatum(row->created_at);
	values[Anum_ledger_expires_at - 1] = TimestampTzGetDatum(row->expires_at);
	values[Anum_ledger_lease_until - 1] = TimestampTzGetDatum(row->lease_until);
	nulls[Anum_ledger_lease_until - 1] = row->lease_null;
	values[Anum_ledger_status - 1] = Int32GetDatum(row->status);
	nulls[Anum_ledger_status - 1] = row->status_null;
	values[Anum_ledger_attempt - 1] = Int32GetDatum(row->attempt);
	values[Anum_ledger_scope - 1] = PointerGetDatum(scope);
	values[Anum_ledger_key - 1] = PointerGetDatum(key);
	values[Anum_ledger_state - 1] =
		CStringGetTextDatum(row->is_completed ? "completed" : "in_progress");
	values[Anum_ledger_response - 1] = row->response;
	nulls[Anum_ledger_response - 1] = row->response_null;
	values[Anum_ledger_fingerprint - 1] = row->fingerprint_null ?
		(Datum) 0 : LedgerFingerprintDatum(row->fingerprint);
	nulls[Anum_ledger_fingerprint - 1] = row->fingerprint_null;
	values[Anum_ledger_owner - 1] = row->owner_null ?
		(Datum) 0 : OwnerDatum(&row->owner);
	nulls[Anum_ledger_owner - 1] = row->owner_null;
	digest = (pg_uuid_t *) palloc(sizeof(pg_uuid_t));
	*digest = *LedgerKeyDigest(nspid, scope, key);
	values[Anum_ledger_digest - 1] = UUIDPGetDatum(digest);
}

/*
 * Raise an error for a ledger row whose required column is NULL, as only a
 * superuser's change to the table could leave it.
 */
void
LedgerRowDamaged(const char *column)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("ledger row has no %s", column),
			 errdetail("Column \"%s\" of idem_ledger is NULL; the extension never writes that.",
					   column),
			 errhint("Restore the column's NOT NULL constraint and repair or delete the row.")));
}
