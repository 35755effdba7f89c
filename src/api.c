/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The SQL-callable ledger functions: idem_begin, idem_finish, idem_fail,
 *	  idem_once, idem_sweep and idem_set_logged.
 *
 * Each checks its arguments (a clear ERROR with the documented SQLSTATE
 * before anything is touched), checks the scope against the scope grants,
 * hands the work to the ledger's rules (ledger.c), and turns what they
 * return into the function's result.
 *
 * src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fingerprint.h"
#include "fmgr.h"
#include "funcapi.h"
#include "settings.h"
#include "utils/builtins.h"
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

/*
 * Check a key or a scope argument: not NULL, at most IDEM_MAX_KEY_BYTES
 * bytes, and not empty unless it may be (the default scope is '').
 */
static text *
validated_name(FunctionCallInfo fcinfo, int argno, const char *what,
			   bool may_be_empty)
{
	text	   *name;
	int			len;

	require_arg(fcinfo, argno, what);
	name = PG_GETARG_TEXT_PP(argno);
	len = VARSIZE_ANY_EXHDR(name);
	if (len == 0 && !may_be_empty)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (len > IDEM_MAX_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long", what),
				 errdetail("The %s is %d bytes long; the limit is %d bytes.",
						   what, len, IDEM_MAX_KEY_BYTES),
				 may_be_empty ? 0 :
				 errhint("Derive a shorter key, for example with idem_key().")));
	return name;
}

static text *
validated_key(FunctionCallInfo fcinfo, int argno)
{
	return validated_name(fcinfo, argno, "key", false);
}

/* The default scope is the empty one */
static text *
validated_scope(FunctionCallInfo fcinfo, int argno)
{
	return validated_name(fcinfo, argno, "scope", true);
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

/*
 * The await argument: the interval rule of ttl and lease, except that zero
 * is accepted and means not to wait.  Returns false for zero.  Waiting
 * needs READ COMMITTED: a transaction that reads one snapshot throughout
 * could never see the attempt it waits for settle.
 */
static bool
validated_await(FunctionCallInfo fcinfo, int argno, Interval *await)
{
	Interval	span = *PG_GETARG_INTERVAL_P(argno);

	if (span.month == 0 && span.day == 0 && span.time == 0)
		return false;
	*await = validated_interval(fcinfo, argno, "await", NULL);
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("idem_begin cannot await in a %s transaction",
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("The transaction's snapshot would never show the awaited attempt settle."),
				 errhint("Await in a READ COMMITTED transaction, or leave await NULL.")));
	return true;
}

/* The outcome column's text */
static const char *
outcome_text(IdemOutcome outcome)
{
	switch (outcome)
	{
		case OUTCOME_STARTED:
			return "started";
		case OUTCOME_REPLAYED:
			return "replayed";
		case OUTCOME_IN_PROGRESS:
			return "in_progress";
		case OUTCOME_COMPLETED:
			return "completed";
	}
	return NULL;				/* keep compiler quiet */
}

/* An idem_result tuple of result, in the caller's memory context */
static Datum
result_datum(FunctionCallInfo fcinfo, const IdemResult *result)
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
	values[0] = CStringGetTextDatum(outcome_text(result->outcome));
	nulls[0] = false;
	values[1] = Int32GetDatum(result->status);
	nulls[1] = !result->has_status;
	values[2] = result->response;
	nulls[2] = !result->has_response;
	values[3] = Int32GetDatum(result->attempt);
	nulls[3] = !result->has_attempt;
	return HeapTupleGetDatum(heap_form_tuple(cache->result_desc, values, nulls));
}

/*
 * idem_begin(key, request, scope, ttl, lease, wait, await) returns idem_result
 *
 * Claims the key for a new attempt ('started'), replays a completed one
 * ('replayed') or reports that another attempt holds it ('in_progress'),
 * having waited up to await for that attempt to settle.
 */
Datum
idem_begin(PG_FUNCTION_ARGS)
{
	BeginArgs	args;
	Oid			nspid;
	IdemResult	result;

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
	/* await is 1.2's: a function of 1.1 not updated yet has six arguments */
	args.has_await = PG_NARGS() > 6 && !PG_ARGISNULL(6) &&
		validated_await(fcinfo, 6, &args.await);

	nspid = caller_namespace(fcinfo);
	ScopeGuardCheck(nspid, args.scope);
	ScopeGuardCheckLease(&args.lease, !PG_ARGISNULL(4));

	result = LedgerBegin(nspid, &args);
	PG_RETURN_DATUM(result_datum(fcinfo, &result));
}

/*
 * idem_finish(key, response, status, scope, attempt) returns idem_result
 *
 * Completes the attempt in progress and stores what duplicates replay.
 */
Datum
idem_finish(PG_FUNCTION_ARGS)
{
	text	   *key;
	text	   *scope;
	int32		status;
	Oid			nspid;
	IdemResult	result;

	key = validated_key(fcinfo, 0);
	require_arg(fcinfo, 2, "status");
	status = PG_GETARG_INT32(2);
	scope = validated_scope(fcinfo, 3);

	nspid = caller_namespace(fcinfo);
	ScopeGuardCheck(nspid, scope);

	result = LedgerFinish(nspid, scope, key, status,
						  !PG_ARGISNULL(1), PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1),
						  !PG_ARGISNULL(4), PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4));
	PG_RETURN_DATUM(result_datum(fcinfo, &result));
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
	text	   *key;
	text	   *scope;
	Oid			nspid;

	key = validated_key(fcinfo, 0);
	scope = validated_scope(fcinfo, 1);

	nspid = caller_namespace(fcinfo);
	ScopeGuardCheck(nspid, scope);

	LedgerRelease(nspid, scope, key,
				  !PG_ARGISNULL(2), PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2));
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
	BeginArgs	args;
	Oid			nspid;

	args.key = validated_key(fcinfo, 0);
	args.scope = validated_scope(fcinfo, 1);
	args.ttl = validated_interval(fcinfo, 2, "ttl", &IdemDefaultTtl);
	args.lease = IdemDefaultLease;
	args.wait = true;
	args.has_await = false;
	args.has_request = false;

	nspid = caller_namespace(fcinfo);
	ScopeGuardCheck(nspid, args.scope);

	PG_RETURN_BOOL(LedgerOnce(nspid, &args));
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
	require_arg(fcinfo, 0, "logged");
	LedgerSetLogged(caller_namespace(fcinfo), PG_GETARG_BOOL(0));
	PG_RETURN_VOID();
}
