/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  All access to the ledger: begin, finish, fail, once, sweep.
 *
 * Every statement is prepared once per backend (and per extension schema)
 * with SPI_prepare + SPI_keepplan.  The plan cache re-analyses a kept plan
 * when the ledger is dropped and created again; a change of the extension's
 * schema makes us prepare the plans afresh.
 *
 * Concurrent duplicates are arbitrated by the ledger's primary key through
 * INSERT ... ON CONFLICT DO NOTHING: a duplicate of an uncommitted insertion
 * waits for its transaction inside the speculative insertion, then sees the
 * committed row (or inserts its own if the first one aborted).  Rows that
 * must change hands (an expired key, a lapsed or released lease) are taken
 * over under a row lock, after re-reading the locked version.
 *
 * src/ledger.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "idempotency.h"
#include "ledger.h"
#include "scope_guard.h"

PG_FUNCTION_INFO_V1(idem_begin);
PG_FUNCTION_INFO_V1(idem_finish);
PG_FUNCTION_INFO_V1(idem_fail);
PG_FUNCTION_INFO_V1(idem_once);
PG_FUNCTION_INFO_V1(idem_sweep);
PG_FUNCTION_INFO_V1(idem_set_logged);

/* How often one call retries after a concurrent delete or update */
#define IDEM_MAX_TRIES 16

/*
 * Statements, with %s standing for the schema-qualified ledger.  Operators
 * are qualified too, so no search_path can change what they mean.
 */
/* Both take the ledger's columns in table order as $1 ... $10 */
static const char *insert_sql =
"INSERT INTO %s AS l (created_at, expires_at, lease_until, status, attempt,"
"                     scope, key, state, response, fingerprint)"
" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
" ON CONFLICT (scope, key) DO NOTHING"
" RETURNING l.attempt";

#define LEDGER_ROW_COLUMNS \
	"state, status, response, attempt, fingerprint, expires_at, lease_until, xmin"

static const char *select_sql =
"SELECT " LEDGER_ROW_COLUMNS " FROM ONLY %s"
" WHERE scope OPERATOR(pg_catalog.=) $1 AND key OPERATOR(pg_catalog.=) $2";

static const char *lock_sql =
"SELECT " LEDGER_ROW_COLUMNS " FROM ONLY %s"
" WHERE scope OPERATOR(pg_catalog.=) $1 AND key OPERATOR(pg_catalog.=) $2"
" FOR UPDATE";

static const char *lock_skip_sql =
"SELECT " LEDGER_ROW_COLUMNS " FROM ONLY %s"
" WHERE scope OPERATOR(pg_catalog.=) $1 AND key OPERATOR(pg_catalog.=) $2"
" FOR UPDATE SKIP LOCKED";

static const char *replace_sql =
"UPDATE ONLY %s SET created_at = COALESCE($1, created_at), expires_at = $2,"
"       lease_until = $3, status = $4, attempt = $5, state = $8,"
"       response = $9, fingerprint = $10"
" WHERE scope OPERATOR(pg_catalog.=) $6 AND key OPERATOR(pg_catalog.=) $7";

/*
 * The ttl given to begin is kept as the distance from lease end to expiry.
 * It is turned back into an interval of exact seconds: the difference of two
 * timestamps comes back in days, and adding days would follow the session's
 * daylight-saving changes (a 24-hour ttl kept 23 or 25 hours).
 */
#define TTL_OF_ATTEMPT \
	"pg_catalog.make_interval(secs => pg_catalog.date_part('epoch'," \
	" expires_at OPERATOR(pg_catalog.-) lease_until))"

static const char *finish_sql =
"UPDATE ONLY %s SET state = 'completed', status = $3, response = $4,"
"       expires_at = $5 OPERATOR(pg_catalog.+) " TTL_OF_ATTEMPT ","
"       lease_until = NULL"
" WHERE scope OPERATOR(pg_catalog.=) $1 AND key OPERATOR(pg_catalog.=) $2"
"   AND state OPERATOR(pg_catalog.=) 'in_progress'"
"   AND lease_until IS NOT NULL"
"   AND expires_at OPERATOR(pg_catalog.>) $5"
"   AND ($6::pg_catalog.int4 IS NULL OR attempt OPERATOR(pg_catalog.=) $6)"
" RETURNING attempt";

static const char *release_sql =
"UPDATE ONLY %s SET lease_until = NULL,"
"       expires_at = $3 OPERATOR(pg_catalog.+) " TTL_OF_ATTEMPT
" WHERE scope OPERATOR(pg_catalog.=) $1 AND key OPERATOR(pg_catalog.=) $2"
"   AND state OPERATOR(pg_catalog.=) 'in_progress'"
"   AND lease_until IS NOT NULL"
"   AND expires_at OPERATOR(pg_catalog.>) $3"
"   AND ($4::pg_catalog.int4 IS NULL OR attempt OPERATOR(pg_catalog.=) $4)"
" RETURNING attempt";

static const char *sweep_sql =
"DELETE FROM ONLY %s WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
"  SELECT ctid FROM ONLY %s"
"   WHERE ctid OPERATOR(pg_catalog.>) $1"
"     AND expires_at OPERATOR(pg_catalog.<=) $2"
"   LIMIT $3 FOR UPDATE SKIP LOCKED))"
" RETURNING ctid";

static const char *count_expired_sql =
"SELECT pg_catalog.count(*) FROM ONLY %s"
" WHERE expires_at OPERATOR(pg_catalog.<=) $1";

/* Kept plans, valid for the extension schema in plans_nspid */
typedef struct LedgerPlans
{
	Oid			nspid;
	SPIPlanPtr	insert;
	SPIPlanPtr	select;
	SPIPlanPtr	lock;
	SPIPlanPtr	lock_skip;
	SPIPlanPtr	replace;
	SPIPlanPtr	finish;
	SPIPlanPtr	release;
	SPIPlanPtr	sweep;
	SPIPlanPtr	count_expired;
} LedgerPlans;

static LedgerPlans plans = {InvalidOid};

/*
 * Prepare one statement on the ledger and keep it for the backend's life.
 */
static SPIPlanPtr
prepare_kept(const char *fmt, const char *ledger, int nargs, Oid *argtypes)
{
	char	   *sql = psprintf(fmt, ledger, ledger);
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	pfree(sql);
	return plan;
}

/*
 * Make sure the kept plans refer to the ledger in schema nspid.  Must be
 * called with SPI connected.
 */
static void
ledger_prepare(Oid nspid)
{
	char	   *nspname;
	char	   *ledger;
	Oid			key_args[2] = {TEXTOID, TEXTOID};
	Oid			row_args[Natts_ledger];
	Oid			finish_args[6] = {TEXTOID, TEXTOID, INT4OID, JSONBOID,
	TIMESTAMPTZOID, INT4OID};
	Oid			release_args[4] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID};
	Oid			sweep_args[3] = {TIDOID, TIMESTAMPTZOID, INT4OID};
	Oid			count_args[1] = {TIMESTAMPTZOID};
	SPIPlanPtr *all[] = {&plans.insert, &plans.select, &plans.lock,
		&plans.lock_skip, &plans.replace, &plans.finish, &plans.release,
	&plans.sweep, &plans.count_expired};

	if (plans.nspid == nspid && OidIsValid(nspid))
		return;

	/* A different schema: let go of the old plans first */
	for (int i = 0; i < lengthof(all); i++)
	{
		if (*all[i] != NULL)
		{
			SPI_freeplan(*all[i]);
			*all[i] = NULL;
		}
	}
	plans.nspid = InvalidOid;

	for (int i = 0; i < Natts_ledger; i++)
		row_args[i] = LedgerColumns[i].type;

	nspname = get_namespace_name(nspid);
	if (nspname == NULL)
		elog(ERROR, "schema with OID %u does not exist", nspid);
	ledger = psprintf("%s.%s", quote_identifier(nspname),
					  quote_identifier(IDEM_LEDGER_NAME));

	plans.insert = prepare_kept(insert_sql, ledger, Natts_ledger, row_args);
	plans.select = prepare_kept(select_sql, ledger, 2, key_args);
	plans.lock = prepare_kept(lock_sql, ledger, 2, key_args);
	plans.lock_skip = prepare_kept(lock_skip_sql, ledger, 2, key_args);
	plans.replace = prepare_kept(replace_sql, ledger, Natts_ledger, row_args);
	plans.finish = prepare_kept(finish_sql, ledger, 6, finish_args);
	plans.release = prepare_kept(release_sql, ledger, 4, release_args);
	plans.sweep = prepare_kept(sweep_sql, ledger, 3, sweep_args);
	plans.count_expired = prepare_kept(count_expired_sql, ledger, 1, count_args);
	plans.nspid = nspid;
	pfree(ledger);
}

/*
 * Connect to SPI with search_path set to "pg_catalog, pg_temp" in a GUC nest
 * level of its own, as PostgreSQL's maintenance commands restrict it, so that
 * no caller's search_path can change what a statement means.  (The
 * statements are schema-qualified anyway.)  Returns the nest level for
 * ledger_disconnect; an error unwinds both at (sub)transaction abort.
 */
static int
ledger_connect(void)
{
	int			rc = SPI_connect();
	int			nestlevel;

	if (rc != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	return nestlevel;
}

/* Undo ledger_connect */
static void
ledger_disconnect(int nestlevel)
{
	int			rc;

	AtEOXact_GUC(false, nestlevel);
	rc = SPI_finish();
	if (rc != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed: %s", SPI_result_code_string(rc));
}

/*
 * What a call site looks up once: the function's schema (the extension's)
 * and, for functions returning idem_result, its blessed tuple descriptor.
 * Kept in fn_extra, which lives as long as the call site's FmgrInfo.
 */
typedef struct CallSiteCache
{
	Oid			nspid;
	TupleDesc	result_desc;
} CallSiteCache;

static CallSiteCache *
call_site(FunctionCallInfo fcinfo)
{
	CallSiteCache *cache = (CallSiteCache *) fcinfo->flinfo->fn_extra;

	if (cache == NULL)
	{
		Oid			nspid = get_func_namespace(fcinfo->flinfo->fn_oid);

		if (!OidIsValid(nspid))
			elog(ERROR, "could not find the schema of function %u",
				 fcinfo->flinfo->fn_oid);
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt,
									   sizeof(CallSiteCache));
		cache->nspid = nspid;
		fcinfo->flinfo->fn_extra = cache;
	}
	return cache;
}

/* The schema of the extension, as the schema of the function called */
static Oid
caller_namespace(FunctionCallInfo fcinfo)
{
	return call_site(fcinfo)->nspid;
}

/* Raise 22004 when a required argument is NULL */
static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
}

/* Check a key: not empty, at most IDEM_MAX_KEY_BYTES bytes */
static text *
validated_key(FunctionCallInfo fcinfo, int argno)
{
	text	   *key;
	int			len;

	require_arg(fcinfo, argno, "key");
	key = PG_GETARG_TEXT_PP(argno);
	len = VARSIZE_ANY_EXHDR(key);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key must not be empty")));
	if (len > IDEM_MAX_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key is too long"),
				 errdetail("The key is %d bytes long; the limit is %d bytes.",
						   len, IDEM_MAX_KEY_BYTES),
				 errhint("Derive a shorter key, for example with idem_key().")));
	return key;
}

/* Check a scope: not NULL; it may be empty (the default scope) */
static text *
validated_scope(FunctionCallInfo fcinfo, int argno)
{
	text	   *scope;
	int			len;

	require_arg(fcinfo, argno, "scope");
	scope = PG_GETARG_TEXT_PP(argno);
	len = VARSIZE_ANY_EXHDR(scope);
	if (len > IDEM_MAX_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scope is too long"),
				 errdetail("The scope is %d bytes long; the limit is %d bytes.",
						   len, IDEM_MAX_KEY_BYTES)));
	return scope;
}

/*
 * A ttl or lease argument: the GUC default when NULL, else what
 * IdemCheckInterval accepts (positive, no negative field, at most
 * IDEM_MAX_INTERVAL_YEARS years): the same rule as the GUCs'.
 */
static Interval
validated_interval(FunctionCallInfo fcinfo, int argno, const char *name,
				   const Interval *dflt)
{
	Interval	span;

	if (PG_ARGISNULL(argno))
		return *dflt;
	span = *PG_GETARG_INTERVAL_P(argno);
	switch (IdemCheckInterval(&span, true))
	{
		case INTERVAL_OK:
			break;
		case INTERVAL_TOO_LONG:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s is too long", name),
					 errdetail("The limit is %d years.", IDEM_MAX_INTERVAL_YEARS)));
			break;
		case INTERVAL_NEGATIVE_PART:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not have a negative part", name),
					 errdetail("The %s given was %s.", name,
							   DatumGetCString(DirectFunctionCall1(interval_out,
																   IntervalPGetDatum(&span)))),
					 errhint("Months and days are calendar units: an interval with parts of both signs can end before it starts.")));
			break;
		case INTERVAL_NOT_POSITIVE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be longer than zero", name),
					 errdetail("The %s given was %s.", name,
							   DatumGetCString(DirectFunctionCall1(interval_out,
																   IntervalPGetDatum(&span))))));
			break;
	}
	return span;
}

/* Read the current row of SPI_tuptable into *row */
static void
read_row(LedgerRow *row)
{
	HeapTuple	tup = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	Datum		d;

	d = SPI_getbinval(tup, desc, 1, &isnull);
	if (isnull)
		LedgerRowDamaged("state");
	row->is_completed = (strcmp(TextDatumGetCString(d), "completed") == 0);
	d = SPI_getbinval(tup, desc, 2, &row->status_null);
	row->status = row->status_null ? 0 : DatumGetInt32(d);
	row->response = SPI_getbinval(tup, desc, 3, &row->response_null);
	d = SPI_getbinval(tup, desc, 4, &isnull);
	if (isnull)
		LedgerRowDamaged("attempt");
	row->attempt = DatumGetInt32(d);
	d = SPI_getbinval(tup, desc, 5, &isnull);
	LedgerRowSetFingerprint(row, d, isnull);
	row->created_at = 0;			/* not read on the SQL path */
	d = SPI_getbinval(tup, desc, 6, &isnull);
	if (isnull)
		LedgerRowDamaged("expires_at");
	row->expires_at = DatumGetTimestampTz(d);
	d = SPI_getbinval(tup, desc, 7, &row->lease_null);
	row->lease_until = row->lease_null ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(tup, desc, 8, &isnull);
	row->mine = TransactionIdIsCurrentTransactionId(DatumGetTransactionId(d));
}

/* Run a key-only statement (select or lock); true if it found the row */
static bool
fetch_row(SPIPlanPtr plan, text *scope, text *key, LedgerRow *row)
{
	Datum		values[2] = {PointerGetDatum(scope), PointerGetDatum(key)};
	int			rc;

	rc = SPI_execute_plan(plan, values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	read_row(row);
	return true;
}

/*
 * Classify a row for a caller arriving at time now.  A lease lapses only
 * for a committed attempt: the current transaction's own attempt holds its
 * key until the transaction ends, whatever the clock says.
 */
static RowStanding
row_standing(const LedgerRow *row, TimestampTz now)
{
	if (row->expires_at <= now)
		return ROW_EXPIRED;
	if (row->is_completed)
		return ROW_COMPLETED;
	if (row->lease_null)
		return ROW_RELEASED;
	if (row->lease_until <= now && !row->mine)
		return ROW_LAPSED;
	return ROW_HELD;
}

/* True when the row was begun with the same request as args */
static bool
same_request(const LedgerRow *row, const BeginArgs *args)
{
	if (row->fingerprint_null || !args->has_request)
		return row->fingerprint_null && !args->has_request;
	return memcmp(row->fingerprint, args->fingerprint, IDEM_FINGERPRINT_LEN) == 0;
}

/* IK001: the key was used before for a different request */
static void
report_request_mismatch(const BeginArgs *args)
{
	ereport(ERROR,
			(errcode(ERRCODE_IDEM_REQUEST_MISMATCH),
			 errmsg("idempotency key \"%s\" was already used with a different request",
					text_to_cstring(args->key)),
			 errdetail("The request is not equal, as jsonb, to the one the key was first used with."),
			 errhint("Use a new key for a new request.")));
}

/* Build an idem_result tuple in the caller's memory context */
static Datum
make_result(FunctionCallInfo fcinfo, const char *outcome,
			bool status_null, int32 status,
			bool response_null, Datum response,
			bool attempt_null, int32 attempt)
{
	CallSiteCache *cache = call_site(fcinfo);
	Datum		values[4];
	bool		nulls[4];

	if (cache->result_desc == NULL)
	{
		TupleDesc	tupdesc;
		MemoryContext oldcxt;

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		oldcxt = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		cache->result_desc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		MemoryContextSwitchTo(oldcxt);
	}
	values[0] = CStringGetTextDatum(outcome);
	nulls[0] = false;
	values[1] = Int32GetDatum(status);
	nulls[1] = status_null;
	values[2] = response;
	nulls[2] = response_null;
	values[3] = Int32GetDatum(attempt);
	nulls[3] = attempt_null;
	return HeapTupleGetDatum(heap_form_tuple(cache->result_desc, values, nulls));
}

/* A fingerprint as the ledger's bytea */
static Datum
fingerprint_bytea(const uint8 *fingerprint)
{
	bytea	   *fp = (bytea *) palloc(VARHDRSZ + IDEM_FINGERPRINT_LEN);

	SET_VARSIZE(fp, VARHDRSZ + IDEM_FINGERPRINT_LEN);
	memcpy(VARDATA(fp), fingerprint, IDEM_FINGERPRINT_LEN);
	return PointerGetDatum(fp);
}

/* Bytea datum of a fingerprint, or NULL when there is no request */
static Datum
fingerprint_datum(const BeginArgs *args, char *nullflag)
{
	if (!args->has_request)
	{
		*nullflag = 'n';
		return (Datum) 0;
	}
	*nullflag = ' ';
	return fingerprint_bytea(args->fingerprint);
}

/*
 * The columns of a new row for args: an attempt in progress, or (for
 * idem_once) a key completed at once.
 */
static void
new_row_values(const BeginArgs *args, bool completed, TimestampTz now,
			   Datum *values, bool *nulls)
{
	char		fpnull;

	memset(nulls, 0, sizeof(bool) * Natts_ledger);
	values[Anum_ledger_scope - 1] = PointerGetDatum(args->scope);
	values[Anum_ledger_key - 1] = PointerGetDatum(args->key);
	values[Anum_ledger_state - 1] =
		CStringGetTextDatum(completed ? "completed" : "in_progress");
	nulls[Anum_ledger_status - 1] = true;
	values[Anum_ledger_status - 1] = (Datum) 0;
	nulls[Anum_ledger_response - 1] = true;
	values[Anum_ledger_response - 1] = (Datum) 0;
	values[Anum_ledger_attempt - 1] = Int32GetDatum(1);
	values[Anum_ledger_created_at - 1] = TimestampTzGetDatum(now);
	if (completed)
	{
		values[Anum_ledger_expires_at - 1] =
			TimestampTzGetDatum(IdemTimestampPlus(now, &args->ttl));
		nulls[Anum_ledger_lease_until - 1] = true;
		values[Anum_ledger_lease_until - 1] = (Datum) 0;
	}
	else
	{
		TimestampTz lease_until = IdemTimestampPlus(now, &args->lease);

		values[Anum_ledger_lease_until - 1] = TimestampTzGetDatum(lease_until);
		values[Anum_ledger_expires_at - 1] =
			TimestampTzGetDatum(IdemTimestampPlus(lease_until, &args->ttl));
	}
	values[Anum_ledger_fingerprint - 1] = fingerprint_datum(args, &fpnull);
	nulls[Anum_ledger_fingerprint - 1] = (fpnull == 'n');
}

/* Run a kept statement with the ledger's columns as parameters */
static int
execute_row(SPIPlanPtr plan, Datum *values, bool *nulls)
{
	char		flags[Natts_ledger];

	for (int i = 0; i < Natts_ledger; i++)
		flags[i] = nulls[i] ? 'n' : ' ';
	return SPI_execute_plan(plan, values, flags, false, 1);
}

/*
 * Try to insert a new row for the key.  Waits behind an uncommitted insert
 * of the same key (the primary key decides).  True if our row went in.
 */
static bool
insert_attempt(const BeginArgs *args, bool completed, TimestampTz now)
{
	Datum		values[Natts_ledger];
	bool		nulls[Natts_ledger];
	int			rc;

	new_row_values(args, completed, now, values, nulls);
	rc = execute_row(plans.insert, values, nulls);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return SPI_processed == 1;
}

/*
 * Give a locked row to a new attempt: attempt one higher after a lapsed or
 * released lease, a fresh key (attempt 1) after expiry.
 */
static int32
take_over(const BeginArgs *args, const LedgerRow *row, RowStanding standing,
		  bool completed, TimestampTz now)
{
	Datum		values[Natts_ledger];
	bool		nulls[Natts_ledger];
	int32		attempt;
	int			rc;

	/*
	 * An expired completed key starts afresh.  Any other takeover counts on,
	 * so that a late finish by an earlier owner meets IK003.
	 */
	if (standing == ROW_EXPIRED && row->is_completed)
		attempt = 1;
	else
		attempt = row->attempt + 1;

	new_row_values(args, completed, now, values, nulls);
	values[Anum_ledger_attempt - 1] = Int32GetDatum(attempt);
	/* a key that counted as absent is born again; a takeover keeps its birth */
	nulls[Anum_ledger_created_at - 1] = (standing != ROW_EXPIRED);

	rc = execute_row(plans.replace, values, nulls);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	if (SPI_processed != 1)
		elog(ERROR, "locked ledger row vanished during takeover");
	return attempt;
}

/*
 * The attempt this backend inserted last through the direct path, so that
 * finishing it needs no index search.
 */
static struct
{
	TransactionId xid;
	Oid			nspid;
	Oid			relfilenode;	/* the storage the tid points into */
	ItemPointerData tid;
}			last_insert;

/*
 * The direct path of begin and once (ledger_direct.c): insert the first
 * attempt (*state KEY_ABSENT), report a row that an unfinished transaction
 * writes when the caller will not wait (KEY_BUSY), or read the live row that
 * holds the key, to replay or report it (KEY_PRESENT, *row and *standing).
 * Returns false when the SQL path must decide: a row that changes hands, a
 * concurrent change, or a ledger the direct path does not serve.
 */
static bool
begin_direct(const BeginArgs *args, Oid nspid, TimestampTz now, bool once,
			 LedgerRow *row, RowStanding *standing, LedgerKeyState *state)
{
	LedgerDirect ld;
	ItemPointerData tid;
	Datum		values[Natts_ledger];
	bool		nulls[Natts_ledger];
	bool		own;
	bool		decided = false;

	if (!LedgerDirectOpen(&ld, nspid, true))
		return false;
	new_row_values(args, once, now, values, nulls);
	*state = LedgerDirectInsert(&ld, values, nulls, !args->wait, &tid);
	if (*state == KEY_ABSENT)
	{
		last_insert.xid = GetCurrentTransactionId();
		last_insert.nspid = nspid;
		last_insert.relfilenode = ld.rel->rd_rel->relfilenode;
		last_insert.tid = tid;
		decided = true;
	}
	else if (*state == KEY_BUSY)
		decided = true;
	else if (LedgerDirectFetchTid(&ld, &tid, false, args->scope, args->key,
								  !once, row, &own))
	{
		/* The committed row (or our own) that holds the key */
		*standing = row_standing(row, now);
		decided = (*standing == ROW_COMPLETED || *standing == ROW_HELD);
	}
	LedgerDirectClose(&ld);
	return decided;
}

/*
 * The result for a live row read on the SQL path (completed: replayed, held:
 * in_progress), after checking the request.  Disconnects from SPI.
 */
static Datum
live_row_result(FunctionCallInfo fcinfo, MemoryContext callercxt, int nestlevel,
				const BeginArgs *args, const LedgerRow *row, RowStanding standing)
{
	Datum		response = (Datum) 0;

	if (!same_request(row, args))
		report_request_mismatch(args);
	if (standing == ROW_COMPLETED)
	{
		MemoryContext spicxt = MemoryContextSwitchTo(callercxt);

		if (!row->response_null)
			response = PointerGetDatum(PG_DETOAST_DATUM_COPY(row->response));
		MemoryContextSwitchTo(spicxt);
		ledger_disconnect(nestlevel);
		return make_result(fcinfo, "replayed", row->status_null, row->status,
						   row->response_null, response, false, row->attempt);
	}
	ledger_disconnect(nestlevel);
	return make_result(fcinfo, "in_progress", true, 0, true, 0,
					   false, row->attempt);
}

/*
 * idem_begin(key, request, scope, ttl, lease, wait) returns idem_result
 *
 * Claims the key for a new attempt ('started'), replays a completed one
 * ('replayed') or reports that another attempt holds it ('in_progress').
 */
Datum
idem_begin(PG_FUNCTION_ARGS)
{
	int			nestlevel;
	BeginArgs	args;
	MemoryContext callercxt = CurrentMemoryContext;
	Oid			nspid;
	TimestampTz now;
	Datum		result = (Datum) 0;
	bool		done = false;

	/* Validate everything before touching the ledger */
	args.key = validated_key(fcinfo, 0);
	args.scope = validated_scope(fcinfo, 2);
	args.ttl = validated_interval(fcinfo, 3, "ttl", &IdemDefaultTtl);
	args.lease = validated_interval(fcinfo, 4, "lease", &IdemDefaultLease);
	require_arg(fcinfo, 5, "wait");
	args.wait = PG_GETARG_BOOL(5);
	args.has_request = !PG_ARGISNULL(1);
	if (args.has_request)
		IdemFingerprint(PG_GETARG_JSONB_P(1), args.fingerprint);

	nspid = caller_namespace(fcinfo);
	ScopeGuardCheck(nspid, args.scope);
	ScopeGuardCheckLease(&args.lease, !PG_ARGISNULL(4));
	now = IdemNow();

	/* The common cases, without SPI: a first attempt, a replay, a live hold */
	{
		LedgerRow	row;
		RowStanding standing;
		LedgerKeyState state;

		if (begin_direct(&args, nspid, now, false, &row, &standing, &state))
		{
			if (state == KEY_ABSENT)
				PG_RETURN_DATUM(make_result(fcinfo, "started", true, 0, true, 0,
											false, 1));
			if (state == KEY_BUSY)
				PG_RETURN_DATUM(make_result(fcinfo, "in_progress", true, 0, true, 0,
											true, 0));
			if (!same_request(&row, &args))
				report_request_mismatch(&args);
			if (standing == ROW_COMPLETED)
				PG_RETURN_DATUM(make_result(fcinfo, "replayed",
											row.status_null, row.status,
											row.response_null, row.response,
											false, row.attempt));
			PG_RETURN_DATUM(make_result(fcinfo, "in_progress", true, 0, true, 0,
										false, row.attempt));
		}
	}

	nestlevel = ledger_connect();
	ledger_prepare(nspid);

	/*
	 * A read-only transaction or a standby cannot insert, but can still
	 * replay a completed key: read before trying to write.
	 */
	if (XactReadOnly || RecoveryInProgress())
	{
		LedgerRow	row;
		RowStanding standing;

		if (fetch_row(plans.select, args.scope, args.key, &row))
		{
			standing = row_standing(&row, now);
			if (standing == ROW_COMPLETED || standing == ROW_HELD)
				PG_RETURN_DATUM(live_row_result(fcinfo, callercxt, nestlevel, &args, &row,
												standing));
		}
	}

	for (int tries = 0; !done; tries++)
	{
		LedgerRow	row;
		RowStanding standing;

		if (tries >= IDEM_MAX_TRIES)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not settle idempotency key \"%s\" under concurrent changes",
							text_to_cstring(args.key)),
					 errhint("Retry the transaction.")));

		/*
		 * A caller that will not wait inserts only where no row is, nor is
		 * being written: the insertion would queue behind the writer.  (A
		 * first insertion that lands between this look and ours still makes
		 * ours wait; only on the SQL path, see the README.)
		 */
		if (!args.wait)
		{
			LedgerKeyState state = LedgerKeyProbe(nspid, args.scope, args.key);

			if (state == KEY_BUSY)
			{
				ledger_disconnect(nestlevel);
				result = make_result(fcinfo, "in_progress", true, 0, true, 0,
									 true, 0);
				break;
			}
			if (state == KEY_ABSENT && insert_attempt(&args, false, now))
			{
				ledger_disconnect(nestlevel);
				result = make_result(fcinfo, "started", true, 0, true, 0, false, 1);
				break;
			}
		}
		else if (insert_attempt(&args, false, now))
		{
			ledger_disconnect(nestlevel);
			result = make_result(fcinfo, "started", true, 0, true, 0, false, 1);
			break;
		}

		/* The key exists: read the committed row without locking it */
		if (!fetch_row(plans.select, args.scope, args.key, &row))
			continue;			/* deleted meanwhile: try the insert again */
		standing = row_standing(&row, now);

		if (standing == ROW_EXPIRED || standing == ROW_RELEASED ||
			standing == ROW_LAPSED)
		{
			/* The row changes hands: lock it and look again */
			if (standing == ROW_LAPSED && !same_request(&row, &args))
				report_request_mismatch(&args);
			if (!fetch_row(args.wait ? plans.lock : plans.lock_skip,
						   args.scope, args.key, &row))
			{
				if (!args.wait &&
					fetch_row(plans.select, args.scope, args.key, &row))
				{
					/* Someone else holds the row lock: they are taking over */
					ledger_disconnect(nestlevel);
					result = make_result(fcinfo, "in_progress", true, 0, true, 0,
										 false, row.attempt);
					done = true;
					break;
				}
				continue;
			}
			standing = row_standing(&row, now);
			if (standing == ROW_EXPIRED || standing == ROW_RELEASED ||
				(standing == ROW_LAPSED && same_request(&row, &args)))
			{
				int32		attempt = take_over(&args, &row, standing, false, now);

				ledger_disconnect(nestlevel);
				result = make_result(fcinfo, "started", true, 0, true, 0,
									 false, attempt);
				done = true;
				break;
			}
		}

		/* A live row: completed or held */
		result = live_row_result(fcinfo, callercxt, nestlevel, &args, &row, standing);
		done = true;
	}

	PG_RETURN_DATUM(result);
}

/*
 * Explain why finish or fail found no attempt of theirs: IK003 when a later
 * attempt took the key over, IK002 otherwise.
 */
static void
report_no_attempt(text *scope, text *key, bool attempt_given, int32 attempt,
				  TimestampTz now, const char *verb)
{
	LedgerRow	row;
	bool		found = fetch_row(plans.select, scope, key, &row);

	if (found && attempt_given && row.attempt > attempt &&
		row_standing(&row, now) != ROW_EXPIRED)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_SUPERSEDED),
				 errmsg("attempt %d of idempotency key \"%s\" was superseded",
						attempt, text_to_cstring(key)),
				 errdetail("Attempt %d took the key over after this attempt's lease lapsed or it was released.",
						   row.attempt),
				 errhint("Nothing was stored; the newer attempt decides the outcome.")));

	ereport(ERROR,
			(errcode(ERRCODE_IDEM_NOT_IN_PROGRESS),
			 errmsg("no attempt in progress for idempotency key \"%s\"",
					text_to_cstring(key)),
			 !found ?
			 errdetail("The key was never begun, or its row expired and was swept.") :
			 row_standing(&row, now) == ROW_EXPIRED ?
			 errdetail("The key expired.") :
			 row.is_completed ?
			 errdetail("The key was already completed.") :
			 row.lease_null ?
			 errdetail("The attempt was released by idem_fail.") :
			 errdetail("Attempt %d holds the key.", row.attempt),
			 errhint("Call idem_begin first and %s only an attempt it started.",
					 verb)));
}

/*
 * The direct path of finish: complete an attempt that the current
 * transaction began, which no other transaction can see or change.  Returns
 * false, having changed nothing, when the SQL path must decide (including
 * every error case, so that errors are reported in one place).
 */
static bool
finish_direct(Oid nspid, text *scope, text *key, int32 status,
			  bool response_null, Datum response,
			  bool attempt_given, int32 attempt, TimestampTz now,
			  int32 *done_attempt)
{
	LedgerDirect ld;
	LedgerRow	row;
	ItemPointerData tid;
	bool		own;
	bool		done = false;

	if (!LedgerDirectOpen(&ld, nspid, false))
		return false;
	if (TransactionIdIsValid(last_insert.xid) &&
		TransactionIdIsCurrentTransactionId(last_insert.xid) &&
		last_insert.nspid == nspid &&
		last_insert.relfilenode == ld.rel->rd_rel->relfilenode &&
		LedgerDirectFetchTid(&ld, &last_insert.tid, true, scope, key,
							 false, &row, &own))
		tid = last_insert.tid;
	else if (!LedgerDirectFetch(&ld, scope, key, false, &row, &tid, &own))
		own = false;
	if (own && !row.is_completed && !row.lease_null && row.expires_at > now &&
		(!attempt_given || row.attempt == attempt))
	{
		Datum		values[Natts_ledger];
		bool		nulls[Natts_ledger];

		memset(nulls, 0, sizeof(nulls));
		values[Anum_ledger_scope - 1] = PointerGetDatum(scope);
		values[Anum_ledger_key - 1] = PointerGetDatum(key);
		values[Anum_ledger_state - 1] = CStringGetTextDatum("completed");
		values[Anum_ledger_status - 1] = Int32GetDatum(status);
		values[Anum_ledger_response - 1] = response;
		nulls[Anum_ledger_response - 1] = response_null;
		values[Anum_ledger_attempt - 1] = Int32GetDatum(row.attempt);
		values[Anum_ledger_created_at - 1] = TimestampTzGetDatum(row.created_at);
		/* the ttl is the distance from lease end to expiry, in exact time */
		values[Anum_ledger_expires_at - 1] =
			TimestampTzGetDatum(now + (row.expires_at - row.lease_until));
		nulls[Anum_ledger_lease_until - 1] = true;
		values[Anum_ledger_lease_until - 1] = (Datum) 0;
		nulls[Anum_ledger_fingerprint - 1] = row.fingerprint_null;
		values[Anum_ledger_fingerprint - 1] = row.fingerprint_null ?
			(Datum) 0 : fingerprint_bytea(row.fingerprint);
		done = LedgerDirectUpdate(&ld, &tid, values, nulls);
		*done_attempt = row.attempt;
	}
	LedgerDirectClose(&ld);
	return done;
}

/*
 * idem_finish(key, response, status, scope, attempt) returns idem_result
 *
 * Completes the attempt in progress and stores what duplicates replay.
 */
Datum
idem_finish(PG_FUNCTION_ARGS)
{
	int			nestlevel;
	text	   *key;
	text	   *scope;
	Datum		response;
	int32		status;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	Oid			nspid;
	TimestampTz now;
	int32		attempt;
	bool		isnull;
	int			rc;

	key = validated_key(fcinfo, 0);
	require_arg(fcinfo, 2, "status");
	status = PG_GETARG_INT32(2);
	scope = validated_scope(fcinfo, 3);
	response = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);

	nspid = caller_namespace(fcinfo);
	ScopeGuardCheck(nspid, scope);
	now = IdemNow();

	/* The common case, without SPI: finishing an attempt begun in this transaction */
	if (finish_direct(nspid, scope, key, status, PG_ARGISNULL(1), response,
					  !PG_ARGISNULL(4), PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4),
					  now, &attempt))
		PG_RETURN_DATUM(make_result(fcinfo, "completed", false, status,
									PG_ARGISNULL(1), response, false, attempt));

	nestlevel = ledger_connect();
	ledger_prepare(nspid);

	values[0] = PointerGetDatum(scope);
	values[1] = PointerGetDatum(key);
	values[2] = Int32GetDatum(status);
	values[3] = response;
	if (PG_ARGISNULL(1))
		nulls[3] = 'n';
	values[4] = TimestampTzGetDatum(now);
	values[5] = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	if (PG_ARGISNULL(4))
		nulls[5] = 'n';

	rc = SPI_execute_plan(plans.finish, values, nulls, false, 1);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	if (SPI_processed != 1)
		report_no_attempt(scope, key, !PG_ARGISNULL(4),
						  PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4), now,
						  "finish");
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	ledger_disconnect(nestlevel);

	PG_RETURN_DATUM(make_result(fcinfo, "completed", false, status,
								PG_ARGISNULL(1), response, false, attempt));
}

/*
 * idem_fail(key, scope, attempt) returns void
 *
 * Releases the attempt in progress: the next begin starts afresh, with the
 * attempt number one higher.
 */
Datum
idem_fail(PG_FUNCTION_ARGS)
{
	int			nestlevel;
	text	   *key;
	text	   *scope;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	TimestampTz now;
	int			rc;

	key = validated_key(fcinfo, 0);
	scope = validated_scope(fcinfo, 1);
	ScopeGuardCheck(caller_namespace(fcinfo), scope);

	now = IdemNow();
	nestlevel = ledger_connect();
	ledger_prepare(caller_namespace(fcinfo));

	values[0] = PointerGetDatum(scope);
	values[1] = PointerGetDatum(key);
	values[2] = TimestampTzGetDatum(now);
	values[3] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	if (PG_ARGISNULL(2))
		nulls[3] = 'n';

	rc = SPI_execute_plan(plans.release, values, nulls, false, 1);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	if (SPI_processed != 1)
		report_no_attempt(scope, key, !PG_ARGISNULL(2),
						  PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2), now,
						  "release");
	ledger_disconnect(nestlevel);
	PG_RETURN_VOID();
}

/*
 * idem_once(key, scope, ttl) returns boolean
 *
 * Consumer de-duplication: records the key as completed in the caller's
 * transaction and returns true, or returns false while a record lives.
 */
Datum
idem_once(PG_FUNCTION_ARGS)
{
	int			nestlevel;
	BeginArgs	args;
	Oid			nspid;
	TimestampTz now;
	bool		first = false;

	args.key = validated_key(fcinfo, 0);
	args.scope = validated_scope(fcinfo, 1);
	args.ttl = validated_interval(fcinfo, 2, "ttl", &IdemDefaultTtl);
	args.lease = IdemDefaultLease;
	args.wait = true;
	args.has_request = false;

	nspid = caller_namespace(fcinfo);
	ScopeGuardCheck(nspid, args.scope);
	now = IdemNow();

	/* The common cases, without SPI: a first delivery or a live record */
	{
		LedgerRow	row;
		RowStanding standing;
		LedgerKeyState state;

		if (begin_direct(&args, nspid, now, true, &row, &standing, &state))
			PG_RETURN_BOOL(state == KEY_ABSENT);
	}

	nestlevel = ledger_connect();
	ledger_prepare(nspid);

	for (int tries = 0;; tries++)
	{
		LedgerRow	row;
		RowStanding standing;

		if (tries >= IDEM_MAX_TRIES)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not settle idempotency key \"%s\" under concurrent changes",
							text_to_cstring(args.key)),
					 errhint("Retry the transaction.")));

		if (insert_attempt(&args, true, now))
		{
			first = true;
			break;
		}
		if (!fetch_row(plans.select, args.scope, args.key, &row))
			continue;
		standing = row_standing(&row, now);
		if (standing == ROW_COMPLETED || standing == ROW_HELD)
			break;

		/* Expired, released or lapsed: take it over under a lock */
		if (!fetch_row(plans.lock, args.scope, args.key, &row))
			continue;
		standing = row_standing(&row, now);
		if (standing == ROW_COMPLETED || standing == ROW_HELD)
			break;
		take_over(&args, &row, standing, true, now);
		first = true;
		break;
	}

	ledger_disconnect(nestlevel);
	PG_RETURN_BOOL(first);
}

/*
 * Delete up to batch_size expired rows whose ctid follows *cursor, never
 * waiting on a row a foreground caller holds.  Advances *cursor to the last
 * row deleted; *reached_end tells that the scan ran off the table's end.
 */
uint64
LedgerSweepBatch(Oid nspid, int batch_size, ItemPointer cursor,
				 bool *reached_end)
{
	int			nestlevel;
	Datum		values[3];
	int			rc;
	uint64		deleted;

	nestlevel = ledger_connect();
	ledger_prepare(nspid);

	values[0] = PointerGetDatum(cursor);
	values[1] = TimestampTzGetDatum(IdemNow());
	values[2] = Int32GetDatum(batch_size);
	rc = SPI_execute_plan(plans.sweep, values, NULL, false, 0);
	if (rc != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	deleted = SPI_processed;
	for (uint64 i = 0; i < deleted; i++)
	{
		bool		isnull;
		ItemPointer tid = (ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[i],
															SPI_tuptable->tupdesc,
															1, &isnull));

		if (ItemPointerCompare(tid, cursor) > 0)
			ItemPointerCopy(tid, cursor);
	}
	*reached_end = (deleted < (uint64) batch_size);
	ledger_disconnect(nestlevel);
	return deleted;
}

/* Number of rows that have expired and wait for the sweeper */
int64
LedgerCountExpired(Oid nspid)
{
	int			nestlevel;
	Datum		values[1];
	int			rc;
	bool		isnull;
	int64		count;

	nestlevel = ledger_connect();
	ledger_prepare(nspid);
	values[0] = TimestampTzGetDatum(IdemNow());
	rc = SPI_execute_plan(plans.count_expired, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
	ledger_disconnect(nestlevel);
	return count;
}

/*
 * idem_sweep(batch_size) returns bigint
 *
 * One short batch of the sweeper, on demand: deletes up to batch_size
 * expired keys and returns how many it removed.
 */
Datum
idem_sweep(PG_FUNCTION_ARGS)
{
	int			batch_size = IdemSweepBatchSize;
	ItemPointerData cursor;
	bool		reached_end;

	if (!PG_ARGISNULL(0))
	{
		batch_size = PG_GETARG_INT32(0);
		if (batch_size <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("batch_size must be greater than zero"),
					 errdetail("The batch_size given was %d.", batch_size)));
	}
	ItemPointerSet(&cursor, 0, 0);
	PG_RETURN_INT64((int64) LedgerSweepBatch(caller_namespace(fcinfo),
											 batch_size, &cursor,
											 &reached_end));
}

/*
 * idem_set_logged(logged) returns void
 *
 * Switches the ledger between a logged and an UNLOGGED table.  ALTER TABLE
 * rewrites it under an exclusive lock; the caller must own the ledger.
 */
Datum
idem_set_logged(PG_FUNCTION_ARGS)
{
	int			nestlevel;
	char	   *nspname;
	char	   *sql;
	int			rc;

	require_arg(fcinfo, 0, "logged");
	nspname = get_namespace_name(caller_namespace(fcinfo));
	sql = psprintf("ALTER TABLE %s.%s SET %s",
				   quote_identifier(nspname),
				   quote_identifier(IDEM_LEDGER_NAME),
				   PG_GETARG_BOOL(0) ? "LOGGED" : "UNLOGGED");

	nestlevel = ledger_connect();
	rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	ledger_disconnect(nestlevel);
	pfree(sql);
	PG_RETURN_VOID();
}
