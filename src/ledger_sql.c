/*-------------------------------------------------------------------------
 *
 * ledger_sql.c
 *	  The ledger through SQL: kept SPI plans for the statements that the
 *	  fast path does not serve.
 *
 * Every statement is prepared once per backend (and per extension schema)
 * with SPI_prepare + SPI_keepplan, schema-qualified, with qualified
 * operators, and says ONLY: a table that inherits from the ledger is not
 * part of it.  Concurrent duplicates are arbitrated by the ledger's primary
 * key through INSERT ... ON CONFLICT DO NOTHING: a duplicate of an
 * uncommitted insertion waits for its transaction inside the speculative
 * insertion, then sees the committed row (or inserts its own if the first
 * one aborted).  What a row may become is decided in ledger.c; this file
 * only reads, locks, inserts, replaces and sweeps rows.
 *
 * src/ledger_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "citus.h"
#include "compat.h"
#include "ledger_digest.h"
#include "ledger_sql.h"

/*
 * Statements, with the first %s standing for the schema-qualified ledger.
 * Operators are qualified too, so no search_path can change what they mean.
 * A ledger of 1.0 that ALTER EXTENSION has not updated yet has no owner
 * column, and one of 1.0 or 1.1 no digest: the statements leave them out
 * there (the other %s).  A key's row is found through the primary key's
 * columns, whichever they are (digest; on Citus digest and the distribution
 * column; before 1.2 key and scope): the conflict target and the WHERE
 * clause are made from them (the last %s), and the row's scope and key are
 * compared with the caller's after it is read, so that a row of another key
 * under the same digest is reported, never used.
 */
/* Both take the ledger's columns in table order as $1 ... $12 */
static const char *insert_sql =
"INSERT INTO %s AS l (created_at, expires_at, lease_until, status, attempt,"
"                     scope, key, state, response, fingerprint%s)"
" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10%s)"
" ON CONFLICT (%s) DO NOTHING"
" RETURNING l.attempt";

/* A takeover keeps the row's birth when $1 is NULL */
static const char *replace_sql =
"UPDATE ONLY %s SET created_at = COALESCE($1, created_at), expires_at = $2,"
"       lease_until = $3, status = $4, attempt = $5, state = $8,"
"       response = $9, fingerprint = $10%s"
" WHERE %s";

/*
 * %s: xmin (or, on Citus, NULL), then the owner (or NULL before 1.1); the
 * statements take the scope as $1, the key as $2 and the digest as $3
 */
#define LEDGER_ROW_COLUMNS \
	"state, status, response, attempt, fingerprint, created_at, expires_at," \
	" lease_until, %s, %s, scope, key"

static const char *select_sql =
"SELECT " LEDGER_ROW_COLUMNS " FROM ONLY %s WHERE %s";

static const char *lock_sql =
"SELECT " LEDGER_ROW_COLUMNS " FROM ONLY %s WHERE %s FOR UPDATE";

static const char *lock_skip_sql =
"SELECT " LEDGER_ROW_COLUMNS " FROM ONLY %s WHERE %s FOR UPDATE SKIP LOCKED";

static const char *sweep_sql =
"DELETE FROM ONLY %s WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
"  SELECT ctid FROM ONLY %s"
"   WHERE ctid OPERATOR(pg_catalog.>) $1"
"     AND expires_at OPERATOR(pg_catalog.<=) $2"
"   LIMIT $3 FOR UPDATE SKIP LOCKED))"
" RETURNING ctid";

/*
 * On a ledger that Citus distributes, Citus plans every statement and sends
 * it to the shards.  Two things need another form there: a shard's xmin is
 * a transaction id of another server, meaningless here (a row of the
 * caller's own transaction is not recognised as such: its lease lapses on
 * time like any other), so the row readers read NULL in its place; and a
 * ctid names a position in one shard only, so a sweep deletes every expired
 * row of every shard in one statement (Citus sends it to all shards at
 * once), waiting for a row a caller holds locked.  $1 (the cursor) and $3
 * (the batch size) are not used.
 */
static const char *sweep_citus_sql =
"DELETE FROM ONLY %s WHERE expires_at OPERATOR(pg_catalog.<=) $2"
" AND $1 IS NOT NULL AND $3 IS NOT NULL"
" RETURNING NULL::pg_catalog.tid";

static const char *count_expired_sql =
"SELECT pg_catalog.count(*) FROM ONLY %s"
" WHERE expires_at OPERATOR(pg_catalog.<=) $1";

/*
 * Kept plans, valid for the extension schema nspid, whose name is written
 * into their text.  A change to that schema's row in pg_namespace (ALTER
 * SCHEMA ... RENAME; a schema dropped and its OID given to another) would
 * leave them naming a schema that is not there: the plan cache re-analyses
 * a kept plan from its text after any such change.  So the change marks
 * them, and the next call compares the schema's name with the one they were
 * prepared with, preparing them afresh when it differs.
 */
typedef struct LedgerPlans
{
	Oid			nspid;
	NameData	nspname;		/* the name written into the statements */
	bool		citus;			/* prepared for a ledger Citus distributes */
	uint32		nsphash;		/* hash of nspid in the pg_namespace cache */
	bool		recheck;		/* pg_namespace changed: check nspname */
	bool		has_owner;		/* the ledger has 1.1's owner column */
	bool		has_digest;		/* the ledger has 1.2's digest column */
	SPIPlanPtr	insert;
	SPIPlanPtr	select;
	SPIPlanPtr	lock;
	SPIPlanPtr	lock_skip;
	SPIPlanPtr	replace;
	SPIPlanPtr	sweep;
	SPIPlanPtr	count_expired;
} LedgerPlans;

static LedgerPlans plans = {InvalidOid};

/*
 * Plans replaced during a transaction, freed when it ends: a call further up
 * the stack (a trigger on the ledger calling the API) may still be running
 * one of them.
 */
static List *retired_plans = NIL;

/* Mark the kept plans for a check when their schema's row may have changed */
static void
ledger_plans_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	/* hashvalue 0: the whole cache was reset */
	if (hashvalue == 0 || hashvalue == plans.nsphash)
		plans.recheck = true;
}

/* At the end of a transaction, free the plans it replaced */
static void
ledger_plans_free_retired(XactEvent event, void *arg)
{
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			foreach(lc, retired_plans)
				SPI_freeplan((SPIPlanPtr) lfirst(lc));
			list_free(retired_plans);
			retired_plans = NIL;
			break;
		default:
			break;
	}
}

/*
 * Prepare one statement on the ledger and keep it for the backend's life;
 * sql is palloc'd, and freed.
 */
static SPIPlanPtr
prepare_kept(char *sql, int nargs, Oid *argtypes)
{
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
 * True when the ledger of schema nspid has the owner column of version 1.1:
 * ALTER EXTENSION ... UPDATE adds it while sessions that prepared their
 * statements without it run on.
 */
static bool
ledger_has_owner(Oid nspid)
{
	Oid			relid = get_relname_relid(IDEM_LEDGER_NAME, nspid);

	return OidIsValid(relid) &&
		get_attnum(relid, LedgerColumns[Anum_ledger_owner - 1].name) != InvalidAttrNumber;
}

/*
 * True when the ledger of schema nspid has the digest column of version 1.2
 * (see ledger_has_owner)
 */
static bool
ledger_has_digest(Oid nspid)
{
	Oid			relid = get_relname_relid(IDEM_LEDGER_NAME, nspid);

	return OidIsValid(relid) &&
		get_attnum(relid, LedgerColumns[Anum_ledger_digest - 1].name) != InvalidAttrNumber;
}

/*
 * The columns of the primary key of the ledger relid, for a conflict target
 * ("digest, scope") into *target, and as a WHERE clause into *where with
 * the scope as $scope_arg, the key as $key_arg and the digest as
 * $digest_arg.  Before 1.2 the primary key is (key, scope).
 *
 * On a Citus ledger the shards' primary key is (digest, the distribution
 * column), which idem_distribute made on the coordinator; but a worker's
 * own copy of the ledger, made by CREATE EXTENSION there, keeps the
 * primary key of the install script, and a call inside a distributed
 * function plans on the worker.  So there the columns are taken from the
 * distribution column, the same on every node, not from the local index.
 */
static void
ledger_pkey_clauses(Oid relid, bool citus, int scope_arg, int key_arg,
					int digest_arg, char **target, char **where)
{
	Relation	rel;
	Oid			pkey;
	HeapTuple	tup;
	Form_pg_index index;
	AttrNumber	cols[INDEX_MAX_KEYS];
	int			ncols = 0;
	AttrNumber	distcol = InvalidAttrNumber;
	StringInfoData t;
	StringInfoData w;

	if (!OidIsValid(relid))
		elog(ERROR, "ledger table of the idempotency extension is missing");
	rel = table_open(relid, AccessShareLock);
	if (citus && get_attnum(relid, LedgerColumns[Anum_ledger_digest - 1].name) ==
		Anum_ledger_digest)
		distcol = IdemCitusDistributionColumn(relid);
	if (distcol != InvalidAttrNumber)
	{
		cols[ncols++] = Anum_ledger_digest;
		cols[ncols++] = distcol;
	}
	else
	{
		pkey = IdemPrimaryKeyIndex(rel);
		if (!OidIsValid(pkey))
			elog(ERROR, "ledger table of the idempotency extension has no primary key");
		tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pkey));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for index %u", pkey);
		index = (Form_pg_index) GETSTRUCT(tup);
		for (int i = 0; i < index->indnkeyatts; i++)
			cols[ncols++] = index->indkey.values[i];
		ReleaseSysCache(tup);
	}
	table_close(rel, AccessShareLock);

	initStringInfo(&t);
	initStringInfo(&w);
	for (int i = 0; i < ncols; i++)
	{
		AttrNumber	attno = cols[i];
		int			arg;

		if (attno == Anum_ledger_digest)
			arg = digest_arg;
		else if (attno == Anum_ledger_scope)
			arg = scope_arg;
		else if (attno == Anum_ledger_key)
			arg = key_arg;
		else
			elog(ERROR, "primary key of the ledger is not on its digest, scope or key");
		appendStringInfo(&t, "%s%s", i > 0 ? ", " : "",
						 LedgerColumns[attno - 1].name);
		appendStringInfo(&w, "%s%s OPERATOR(pg_catalog.=) $%d",
						 i > 0 ? " AND " : "", LedgerColumns[attno - 1].name, arg);
	}
	*target = t.data;
	*where = w.data;
}

/*
 * Make sure the kept plans refer to the ledger in schema nspid, under the
 * name the schema has now.  Must be called with SPI connected.
 */
static void
ledger_prepare(Oid nspid)
{
	static bool callbacks_registered = false;
	char	   *nspname;
	char	   *ledger;
	Oid			key_args[3] = {TEXTOID, TEXTOID, UUIDOID};
	Oid			row_args[Natts_ledger];
	Oid			sweep_args[3] = {TIDOID, TIMESTAMPTZOID, INT4OID};
	Oid			count_args[1] = {TIMESTAMPTZOID};
	bool		has_owner;
	bool		has_digest;
	int			natts;
	char	   *target;
	char	   *key_where;
	char	   *row_where;
	const char *owner_select;
	SPIPlanPtr *all[] = {&plans.insert, &plans.select, &plans.lock,
		&plans.lock_skip, &plans.replace, &plans.sweep, &plans.count_expired};
	MemoryContext oldcxt;

	bool		citus;
	const char *xmin_select;

	/* The ledger became (or stopped being) a Citus table: prepare afresh */
	citus = OidIsValid(nspid) &&
		IdemCitusTable(get_relname_relid(IDEM_LEDGER_NAME, nspid));
	if (citus != plans.citus)
		plans.nspid = InvalidOid;
	if (plans.nspid == nspid && OidIsValid(nspid) && !plans.recheck &&
		(plans.has_owner || !ledger_has_owner(nspid)) &&
		(plans.has_digest || !ledger_has_digest(nspid)))
		return;

	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(NAMESPACEOID, ledger_plans_invalidate,
									  (Datum) 0);
		RegisterXactCallback(ledger_plans_free_retired, NULL);
		callbacks_registered = true;
	}

	/* A change from now on, even during the look-up, marks the plans again */
	plans.recheck = false;
	plans.nsphash = GetSysCacheHashValue1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	nspname = get_namespace_name(nspid);
	if (nspname == NULL)
		elog(ERROR, "schema with OID %u does not exist", nspid);
	has_owner = ledger_has_owner(nspid);
	has_digest = ledger_has_digest(nspid);
	if (plans.nspid == nspid && OidIsValid(nspid) &&
		strcmp(nspname, NameStr(plans.nspname)) == 0 &&
		plans.has_owner == has_owner && plans.has_digest == has_digest)
		return;

	/* A different or renamed schema: retire the old plans first */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	for (int i = 0; i < lengthof(all); i++)
	{
		if (*all[i] != NULL)
		{
			retired_plans = lappend(retired_plans, *all[i]);
			*all[i] = NULL;
		}
	}
	MemoryContextSwitchTo(oldcxt);
	plans.nspid = InvalidOid;

	for (int i = 0; i < Natts_ledger; i++)
		row_args[i] = LedgerColumns[i].type;

	ledger = psprintf("%s.%s", quote_identifier(nspname),
					  quote_identifier(IDEM_LEDGER_NAME));

	natts = has_digest ? Natts_ledger :
		has_owner ? Anum_ledger_owner : Anum_ledger_owner - 1;
	/*
	 * On Citus, an owner names a backend of one node, but the key is judged
	 * on whichever node the call runs: the coordinator, another node, or
	 * the worker holding the shard, inside a distributed function, and after
	 * a rebalance the row lives on another worker.  Another node's owner
	 * would look gone (another server's start time) while its session still
	 * works, and its attempt would be taken over: a second execution.  So
	 * on a Citus ledger no owner is recorded nor read, and the lease alone
	 * binds an attempt, as with idempotency.owner_liveness off.
	 */
	owner_select = has_owner && !citus ? "owner" : "NULL::pg_catalog.bytea";
	xmin_select = citus ? "NULL::pg_catalog.xid" : "xmin";
	ledger_pkey_clauses(get_relname_relid(IDEM_LEDGER_NAME, nspid), citus,
						1, 2, 3, &target, &key_where);
	pfree(target);
	ledger_pkey_clauses(get_relname_relid(IDEM_LEDGER_NAME, nspid), citus,
						Anum_ledger_scope, Anum_ledger_key, Anum_ledger_digest,
						&target, &row_where);
	plans.insert = prepare_kept(psprintf(insert_sql, ledger,
										 has_digest ? ", owner, digest" :
										 has_owner ? ", owner" : "",
										 has_digest ? ", $11, $12" :
										 has_owner ? ", $11" : "",
										 target),
								natts, row_args);
	plans.select = prepare_kept(psprintf(select_sql, xmin_select, owner_select,
										 ledger, key_where),
								3, key_args);
	plans.lock = prepare_kept(psprintf(lock_sql, xmin_select, owner_select,
									   ledger, key_where),
							  3, key_args);
	plans.lock_skip = prepare_kept(psprintf(lock_skip_sql, xmin_select,
											owner_select, ledger, key_where),
								   3, key_args);
	plans.replace = prepare_kept(psprintf(replace_sql, ledger,
										  has_owner ? ", owner = $11" : "",
										  row_where),
								 natts, row_args);
	plans.sweep = prepare_kept(citus ? psprintf(sweep_citus_sql, ledger) :
							   psprintf(sweep_sql, ledger, ledger), 3, sweep_args);
	plans.count_expired = prepare_kept(psprintf(count_expired_sql, ledger),
									   1, count_args);
	plans.has_owner = has_owner;
	plans.has_digest = has_digest;
	plans.citus = citus;
	namestrcpy(&plans.nspname, nspname);
	plans.nspid = nspid;
	pfree(ledger);
	pfree(target);
	pfree(key_where);
	pfree(row_where);
}

/*
 * Connect to SPI with search_path set to "pg_catalog, pg_temp" in a GUC nest
 * level of its own, as PostgreSQL's maintenance commands restrict it, so that
 * no caller's search_path can change what a statement means (the statements
 * are schema-qualified anyway), and make sure the kept plans name the ledger
 * of schema nspid.  The ledger is locked first (ACCESS SHARE, as a read
 * takes; the statements take what they need), before anything reads how
 * it is made: which columns it has, which digest it uses (an update of the
 * extension that changes either holds an exclusive lock until it commits).
 * Returns the nest level for LedgerSqlDisconnect; an error unwinds both at
 * (sub)transaction abort.
 */
int
LedgerSqlConnect(Oid nspid)
{
	int			rc = SPI_connect();
	int			nestlevel;

	if (rc != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	if (OidIsValid(nspid))
	{
		Oid			relid = get_relname_relid(IDEM_LEDGER_NAME, nspid);

		if (OidIsValid(relid))
			LockRelationOid(relid, AccessShareLock);
		ledger_prepare(nspid);
	}
	return nestlevel;
}

/* Undo LedgerSqlConnect */
void
LedgerSqlDisconnect(int nestlevel)
{
	int			rc;

	AtEOXact_GUC(false, nestlevel);
	rc = SPI_finish();
	if (rc != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed: %s", SPI_result_code_string(rc));
}

/* True when a text column of the current row of SPI_tuptable equals t */
static bool
column_equals(int col, text *t)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  col, &isnull);
	text	   *v;

	if (isnull)
		return false;
	v = DatumGetTextPP(d);
	return VARSIZE_ANY_EXHDR(v) == VARSIZE_ANY_EXHDR(t) &&
		memcmp(VARDATA_ANY(v), VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)) == 0;
}

/*
 * Read the current row of SPI_tuptable, the row of (scope, key), into *row.
 * A row of another key under the same digest raises the collision error.
 */
static void
read_row(text *scope, text *key, LedgerRow *row)
{
	HeapTuple	tup = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	Datum		d;

	if (!column_equals(11, scope) || !column_equals(12, key))
		LedgerKeyCollision(scope, key);

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
	d = SPI_getbinval(tup, desc, 6, &isnull);
	if (isnull)
		LedgerRowDamaged("created_at");
	row->created_at = DatumGetTimestampTz(d);
	d = SPI_getbinval(tup, desc, 7, &isnull);
	if (isnull)
		LedgerRowDamaged("expires_at");
	row->expires_at = DatumGetTimestampTz(d);
	d = SPI_getbinval(tup, desc, 8, &row->lease_null);
	row->lease_until = row->lease_null ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(tup, desc, 9, &isnull);
	row->mine = !isnull &&
		TransactionIdIsCurrentTransactionId(DatumGetTransactionId(d));
	d = SPI_getbinval(tup, desc, 10, &isnull);
	LedgerRowSetOwner(row, d, isnull);
}

/*
 * Read the row of (scope, key): as the statement's snapshot sees it, or
 * locked (waiting for a transaction that holds it, or, with
 * LEDGER_LOCK_SKIP, passing it by).  True if a row was found.  The response
 * is valid until LedgerSqlDisconnect.  A row of another key under the same
 * digest raises the collision error (a locked one stays locked until the
 * transaction or subtransaction ends).
 */
bool
LedgerSqlFetch(text *scope, text *key, LedgerLock lock, LedgerRow *row)
{
	pg_uuid_t	digest = *LedgerKeyDigest(plans.nspid, scope, key);
	Datum		values[3] = {PointerGetDatum(scope), PointerGetDatum(key),
	UUIDPGetDatum(&digest)};
	SPIPlanPtr	plan = lock == LEDGER_LOCK ? plans.lock :
		lock == LEDGER_LOCK_SKIP ? plans.lock_skip : plans.select;
	int			rc;

	rc = SPI_execute_plan(plan, values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	read_row(scope, key, row);
	return true;
}

/* Run a kept statement with the ledger's columns as parameters */
static int
execute_row(SPIPlanPtr plan, Datum *values, bool *nulls)
{
	char		flags[Natts_ledger];

	for (int i = 0; i < Natts_ledger; i++)
		flags[i] = nulls[i] ? 'n' : ' ';
	/* On Citus no owner is recorded: see ledger_prepare */
	if (plans.citus)
		flags[Anum_ledger_owner - 1] = 'n';
	return SPI_execute_plan(plan, values, flags, false, 1);
}

/*
 * Insert a new row unless the key exists.  Waits behind an uncommitted
 * insertion of the same key (the primary key decides).  True if ours went in.
 */
bool
LedgerSqlInsert(Datum *values, bool *nulls)
{
	int			rc = execute_row(plans.insert, values, nulls);

	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return SPI_processed == 1;
}

/*
 * SET LOCAL statements that Citus sends on to the nodes in the transaction
 * (and to those it joins later): Citus forwards SET LOCAL only from a
 * transaction block, a DO block or a procedure, and a call in a single
 * statement is none of those, hence the DO block.  The restoring one is
 * kept for the last value restored, which is nearly always the same.
 */
static const char *set_lock_timeout_sql =
"DO $$BEGIN SET LOCAL lock_timeout = %s; END$$";

static struct
{
	SPIPlanPtr	nowait;			/* lock_timeout = IDEM_NOWAIT_LOCK_TIMEOUT */
	SPIPlanPtr	restore;		/* lock_timeout = restore_value */
	char	   *restore_value;	/* in TopMemoryContext */
}			citus_set;

/* A kept SET LOCAL lock_timeout to value, forwarded by Citus */
static SPIPlanPtr
prepare_set_lock_timeout(const char *value)
{
	return prepare_kept(psprintf(set_lock_timeout_sql,
								 quote_literal_cstr(value)), 0, NULL);
}

/* Run a kept utility statement */
static void
execute_utility(SPIPlanPtr plan)
{
	int			rc = SPI_execute_plan(plan, NULL, NULL, false, 0);

	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
}

/*
 * Make sure citus_set holds both statements, the restoring one for the
 * caller's lock_timeout as it is now
 */
static void
citus_set_prepare(void)
{
	const char *value = GetConfigOption("lock_timeout", false, false);

	if (citus_set.nowait == NULL)
		citus_set.nowait = prepare_set_lock_timeout(IDEM_NOWAIT_LOCK_TIMEOUT);
	if (citus_set.restore != NULL && strcmp(citus_set.restore_value, value) == 0)
		return;
	if (citus_set.restore != NULL)
	{
		SPI_freeplan(citus_set.restore);
		pfree(citus_set.restore_value);
		citus_set.restore = NULL;
	}
	citus_set.restore_value = MemoryContextStrdup(TopMemoryContext, value);
	citus_set.restore = prepare_set_lock_timeout(value);
}

/*
 * Insert like LedgerSqlInsert, but never queue behind another transaction
 * that is writing the key: *busy is set, and nothing inserted, when the
 * insertion would have waited.  The insertion runs in a subtransaction
 * under a lock_timeout of IDEM_NOWAIT_LOCK_TIMEOUT, and a lock timeout
 * (55P03) rolls it back.  On a ledger that Citus distributes the timeout
 * is sent to the shard's node too, where the wait happens, and the
 * caller's own value sent after it; locally the caller's value is back when
 * this returns.  Any other error is raised as it was.
 *
 * The timeout is for the key's writer alone: the ledger's own lock is
 * taken first, waited for as any write waits for it (a CREATE INDEX, a
 * LOCK TABLE), as the direct path does, so that a lock on the whole table
 * is not answered as a key in progress.
 */
bool
LedgerSqlInsertNoWait(Datum *values, bool *nulls, bool *busy)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool inserted = false;
	Oid			relid = get_relname_relid(IDEM_LEDGER_NAME, plans.nspid);

	*busy = false;
	if (OidIsValid(relid))
		LockRelationOid(relid, RowExclusiveLock);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		int			level = NewGUCNestLevel();

		if (plans.citus)
			citus_set_prepare();
		/* saved at this level, so that leaving it restores the caller's */
		(void) set_config_option("lock_timeout", IDEM_NOWAIT_LOCK_TIMEOUT,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
		if (plans.citus)
		{
			(void) set_config_option("citus.propagate_set_commands", "local",
									 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
									 true, 0, false);
			execute_utility(citus_set.nowait);
		}
		inserted = LedgerSqlInsert(values, nulls);
		if (plans.citus)
			execute_utility(citus_set.restore);
		AtEOXact_GUC(true, level);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ReThrowError(edata);
		FreeErrorData(edata);
		*busy = true;
	}
	PG_END_TRY();
	return inserted;
}

/*
 * Give the row of the key in values every column of values; a NULL
 * created_at keeps the row's.  The caller holds the row's lock.
 */
void
LedgerSqlReplace(Datum *values, bool *nulls)
{
	int			rc = execute_row(plans.replace, values, nulls);

	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	if (SPI_processed != 1)
		elog(ERROR, "locked ledger row vanished");
}

/*
 * Delete up to batch_size rows expired at now whose ctid follows *cursor,
 * never waiting on a row a foreground caller holds.  Advances *cursor to the
 * last row deleted; returns how many were.
 */
uint64
LedgerSqlSweep(ItemPointer cursor, TimestampTz now, int batch_size)
{
	Datum		values[3];
	int			rc;
	uint64		deleted;

	values[0] = PointerGetDatum(cursor);
	values[1] = TimestampTzGetDatum(now);
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

		/* no position on a Citus ledger: the sweep took every shard's rows */
		if (!isnull && ItemPointerCompare(tid, cursor) > 0)
			ItemPointerCopy(tid, cursor);
	}
	return deleted;
}

/* Number of rows expired at now */
int64
LedgerSqlCountExpired(TimestampTz now)
{
	Datum		values[1];
	int			rc;
	bool		isnull;

	values[0] = TimestampTzGetDatum(now);
	rc = SPI_execute_plan(plans.count_expired, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Make the ledger of schema nspid a logged or an UNLOGGED table.  ALTER
 * TABLE rewrites it under an exclusive lock; the caller must own it.
 */
void
LedgerSqlSetLogged(Oid nspid, bool logged)
{
	char	   *sql;
	int			rc;

	sql = psprintf("ALTER TABLE %s.%s SET %s",
				   quote_identifier(get_namespace_name(nspid)),
				   quote_identifier(IDEM_LEDGER_NAME),
				   logged ? "LOGGED" : "UNLOGGED");
	rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	pfree(sql);
}
