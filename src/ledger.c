/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  The ledger's rules: what begin, finish, fail, once and sweep do to a
 *	  key, whichever path reaches the table.
 *
 * Each operation first tries the fast path (ledger_direct.c), which serves
 * the common cases without SPI: a first attempt, a replay or a live hold
 * read through the primary key, and finishing an attempt the current
 * transaction began.  Whatever the fast path does not decide goes through
 * SQL (ledger_sql.c).  The rules themselves, what a row means to a caller
 * (row_standing), who may finish or release an attempt (attempt_open) and
 * what a takeover writes, are written once here and used by both paths.
 *
 * Concurrent duplicates are arbitrated by the ledger's primary key, never
 * by a read before a write.  Rows that change hands (an expired key, a
 * lapsed or released lease, an attempt whose session is gone) are taken
 * over under a row lock, after re-reading the locked version.
 *
 * src/ledger.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "await.h"
#include "citus.h"
#include "ledger.h"
#include "ledger_direct.h"
#include "ledger_sql.h"
#include "settings.h"
#include "stats.h"

/* How often one call retries after a concurrent delete or update */
#define IDEM_MAX_TRIES 16

/* What a row means for a new caller, at a given time */
typedef enum RowStanding
{
	ROW_COMPLETED,				/* live completed key: replay */
	ROW_HELD,					/* live attempt under a live lease */
	ROW_LAPSED,					/* committed attempt whose lease ran out */
	ROW_OWNER_GONE,				/* committed attempt whose session is gone */
	ROW_RELEASED,				/* attempt released by idem_fail */
	ROW_EXPIRED					/* counts as absent */
} RowStanding;

/* How a begin or once settled its key */
typedef enum Settled
{
	SETTLED_STARTED,			/* this caller holds a new attempt */
	SETTLED_LIVE,				/* a live row holds the key: replay or report */
	SETTLED_BUSY				/* another transaction is writing the row and
								 * the caller will not wait */
} Settled;

typedef struct Settlement
{
	Settled		how;
	bool		has_attempt;	/* STARTED and LIVE always; BUSY when known */
	int32		attempt;
	LedgerRow	row;			/* LIVE: the row */
	RowStanding standing;		/* LIVE: what it means */
} Settlement;

/*
 * The attempt this backend inserted last through the direct path, so that
 * finishing it needs no index search.  The position is good only in the
 * storage it was taken from: a rewrite of the ledger gives it new storage.
 */
static struct
{
	TransactionId xid;
	Oid			nspid;
	Oid			storage;
	ItemPointerData tid;
}			last_insert;

/*
 * Classify a row for a caller arriving at time now.  A lease lapses, and an
 * owner is gone, only for a committed attempt: the current transaction's own
 * attempt holds its key until the transaction ends, whatever the clock says.
 * The owner is looked at last, and only under a live lease.
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
	if (row->mine)
		return ROW_HELD;
	if (row->lease_until <= now)
		return ROW_LAPSED;
	if (!row->owner_null && OwnerIsGone(&row->owner))
		return ROW_OWNER_GONE;
	return ROW_HELD;
}

/*
 * The finishing rule, for finish and fail on either path: the row holds an
 * attempt in progress that has not been released nor expired, and it is the
 * caller's attempt when the caller names one.  A lapsed lease does not
 * matter until a competitor takes over.
 */
static bool
attempt_open(const LedgerRow *row, TimestampTz now, bool has_attempt,
			 int32 attempt)
{
	return !row->is_completed && !row->lease_null && row->expires_at > now &&
		(!has_attempt || row->attempt == attempt);
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
	IdemStatsAdd(STAT_MISMATCHES, 1);
	ereport(ERROR,
			(errcode(ERRCODE_IDEM_REQUEST_MISMATCH),
			 errmsg("idempotency key \"%s\" was already used with a different request",
					text_to_cstring(args->key)),
			 errdetail("The request is not equal, as jsonb, to the one the key was first used with."),
			 errhint("Use a new key for a new request.")));
}

/*
 * Explain why finish or fail found no attempt of theirs in row (NULL: no
 * row): IK003 when a later attempt took the key over, IK002 otherwise (also
 * for an attempt number below 1, which begin never returns, so nothing can
 * have superseded it).
 */
static void
report_no_attempt(const LedgerRow *row, text *key, bool has_attempt,
				  int32 attempt, TimestampTz now, const char *verb)
{
	if (row != NULL && has_attempt && attempt >= 1 && row->attempt > attempt &&
		row_standing(row, now) != ROW_EXPIRED)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_SUPERSEDED),
				 errmsg("attempt %d of idempotency key \"%s\" was superseded",
						attempt, text_to_cstring(key)),
				 errdetail("Attempt %d took the key over after this attempt's lease lapsed, its session ended, or it was released.",
						   row->attempt),
				 errhint("Nothing was stored; the newer attempt decides the outcome.")));

	ereport(ERROR,
			(errcode(ERRCODE_IDEM_NOT_IN_PROGRESS),
			 errmsg("no attempt in progress for idempotency key \"%s\"",
					text_to_cstring(key)),
			 row == NULL ?
			 errdetail("The key was never begun, or its row expired and was swept.") :
			 row_standing(row, now) == ROW_EXPIRED ?
			 errdetail("The key expired.") :
			 row->is_completed ?
			 errdetail("The key was already completed.") :
			 row->lease_null ?
			 errdetail("The attempt was released by idem_fail.") :
			 errdetail("Attempt %d holds the key.", row->attempt),
			 errhint("Call idem_begin first and %s only an attempt it started.",
					 verb)));
}

/*
 * The row of a new attempt for args (or, for idem_once, a key completed at
 * once) in the ledger of schema nspid, as column values.
 */
static void
new_row_values(Oid nspid, const BeginArgs *args, bool completed, TimestampTz now,
			   Datum *values, bool *nulls)
{
	LedgerRow	row;

	memset(&row, 0, sizeof(row));
	row.is_completed = completed;
	row.status_null = true;
	row.response_null = true;
	row.attempt = 1;
	row.fingerprint_null = !args->has_request;
	if (args->has_request)
		memcpy(row.fingerprint, args->fingerprint, IDEM_FINGERPRINT_LEN);
	row.created_at = now;
	row.lease_null = completed;
	row.owner_null = completed || !IdemOwnerLiveness;
	if (completed)
		row.expires_at = IdemTimestampPlus(now, &args->ttl);
	else
	{
		row.lease_until = IdemTimestampPlus(now, &args->lease);
		row.expires_at = IdemTimestampPlus(row.lease_until, &args->ttl);
		if (!row.owner_null)
		{
			OwnerSelf(&row.owner);
			AwaitNoteOwner();
		}
	}
	LedgerRowValues(&row, nspid, args->scope, args->key, values, nulls);
}

/*
 * Give a locked row to a new attempt: attempt one higher after a lapsed or
 * released lease or a gone owner, a fresh key (attempt 1) after expiry.
 * Returns the attempt.
 */
static int32
take_over(Oid nspid, const BeginArgs *args, const LedgerRow *row, RowStanding standing,
		  bool completed, TimestampTz now)
{
	Datum		values[Natts_ledger];
	bool		nulls[Natts_ledger];
	int32		attempt;

	/*
	 * An expired completed key starts afresh.  Any other takeover counts on,
	 * so that a late finish by an earlier owner meets IK003.
	 */
	if (standing == ROW_EXPIRED && row->is_completed)
		attempt = 1;
	else
		attempt = row->attempt + 1;

	if (standing == ROW_LAPSED)
		IdemStatsAdd(STAT_TAKEOVERS_LEASE, 1);
	else if (standing == ROW_OWNER_GONE)
		IdemStatsAdd(STAT_TAKEOVERS_OWNER_GONE, 1);
	new_row_values(nspid, args, completed, now, values, nulls);
	values[Anum_ledger_attempt - 1] = Int32GetDatum(attempt);
	/* a key that counted as absent is born again; a takeover keeps its birth */
	nulls[Anum_ledger_created_at - 1] = (standing != ROW_EXPIRED);
	LedgerSqlReplace(values, nulls);
	/* whoever awaits the old attempt looks again once this commits */
	AwaitKeyChanged(args->scope, args->key);
	return attempt;
}

/*
 * The row an attempt becomes when it ends: completed with status and
 * response, or released.  The ttl is kept as the distance from lease end to
 * expiry, in exact time, and now counts from now.
 */
static void
end_attempt(LedgerRow *row, TimestampTz now, bool complete, int32 status,
			bool has_response, Datum response)
{
	row->expires_at = now + (row->expires_at - row->lease_until);
	row->lease_null = true;
	row->lease_until = 0;
	row->owner_null = true;
	if (complete)
	{
		row->is_completed = true;
		row->status_null = false;
		row->status = status;
		row->response_null = !has_response;
		row->response = has_response ? response : (Datum) 0;
	}
}

/*
 * The fast path of begin and once: insert the first attempt, report a row
 * that an unfinished transaction writes when the caller will not wait, or
 * read the live row that holds the key.  Returns false when the SQL path
 * must decide: a row that changes hands, a concurrent change, or a ledger
 * the fast path does not serve.
 */
static bool
settle_direct(Oid nspid, const BeginArgs *args, bool once, TimestampTz now,
			  Settlement *s)
{
	LedgerDirect ld;
	ItemPointerData tid;
	Datum		values[Natts_ledger];
	bool		nulls[Natts_ledger];
	bool		own;
	bool		decided = false;
	LedgerKeyState state;

	if (!LedgerDirectOpen(&ld, nspid, true))
		return false;
	new_row_values(nspid, args, once, now, values, nulls);
	state = LedgerDirectInsert(&ld, values, nulls, !args->wait, &tid);
	if (state == KEY_ABSENT)
	{
		last_insert.xid = GetCurrentTransactionId();
		last_insert.nspid = nspid;
		last_insert.storage = LedgerDirectStorage(&ld);
		last_insert.tid = tid;
		s->how = SETTLED_STARTED;
		s->has_attempt = true;
		s->attempt = 1;
		decided = true;
	}
	else if (state == KEY_BUSY)
	{
		s->how = SETTLED_BUSY;
		s->has_attempt = false;
		decided = true;
	}
	else if (LedgerDirectFetchTid(&ld, &tid, false, args->scope, args->key,
								  !once, &s->row, &own))
	{
		/* The committed row (or our own) that holds the key */
		s->standing = row_standing(&s->row, now);
		if (s->standing == ROW_COMPLETED || s->standing == ROW_HELD)
		{
			s->how = SETTLED_LIVE;
			s->has_attempt = true;
			s->attempt = s->row.attempt;
			decided = true;
		}
	}
	LedgerDirectClose(&ld);
	return decided;
}

/* A Settlement of the live row row */
static void
settled_live(Settlement *s, const LedgerRow *row, RowStanding standing)
{
	s->how = SETTLED_LIVE;
	s->row = *row;
	s->standing = standing;
	s->has_attempt = true;
	s->attempt = row->attempt;
}

/* A Settlement of a new attempt */
static void
settled_started(Settlement *s, int32 attempt)
{
	s->how = SETTLED_STARTED;
	s->has_attempt = true;
	s->attempt = attempt;
}

/*
 * The SQL path of begin and once, with SPI connected: insert, or read the
 * row that holds the key and take it over under a lock when it changes
 * hands.  The settle loop that both share: a row deleted or changed between
 * two statements sends it round again.
 */
static void
settle_sql(Oid nspid, const BeginArgs *args, bool once, TimestampTz now,
		   Settlement *s)
{
	LedgerRow	row;
	RowStanding standing;
	Datum		values[Natts_ledger];
	bool		nulls[Natts_ledger];

	/*
	 * A read-only transaction or a standby cannot insert, but can still
	 * replay a completed key: read before trying to write.
	 */
	if ((XactReadOnly || RecoveryInProgress()) &&
		LedgerSqlFetch(args->scope, args->key, LEDGER_READ, &row))
	{
		standing = row_standing(&row, now);
		if (standing == ROW_COMPLETED || standing == ROW_HELD)
		{
			settled_live(s, &row, standing);
			return;
		}
	}

	new_row_values(nspid, args, once, now, values, nulls);
	for (int tries = 0;; tries++)
	{
		if (tries >= IDEM_MAX_TRIES)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not settle idempotency key \"%s\" under concurrent changes",
							text_to_cstring(args->key)),
					 errhint("Retry the transaction.")));

		/*
		 * A caller that will not wait inserts only where no row is, nor is
		 * being written: the insertion would queue behind the writer.  A
		 * first insertion that lands between this look and ours, or one
		 * that no look can see (below), would still make ours queue: ours
		 * gives up after a moment's lock wait instead (LedgerSqlInsertNoWait).
		 */
		if (!args->wait)
		{
			LedgerKeyState state = LedgerKeyProbe(nspid, args->scope, args->key);
			bool		busy = false;

			/*
			 * On Citus the shard cannot be probed: a committed row is read
			 * instead, and a key that has one is settled below, under a
			 * lock that skips a row a writer holds.
			 */
			if (state == KEY_UNSEEN)
				state = LedgerSqlFetch(args->scope, args->key, LEDGER_READ, &row) ?
					KEY_PRESENT : KEY_ABSENT;
			if (state == KEY_ABSENT &&
				LedgerSqlInsertNoWait(values, nulls, &busy))
			{
				settled_started(s, 1);
				return;
			}
			if (state == KEY_BUSY || (state == KEY_ABSENT && busy))
			{
				s->how = SETTLED_BUSY;
				s->has_attempt = false;
				return;
			}
		}
		else if (LedgerSqlInsert(values, nulls))
		{
			settled_started(s, 1);
			return;
		}

		/* The key exists: read the committed row without locking it */
		if (!LedgerSqlFetch(args->scope, args->key, LEDGER_READ, &row))
			continue;			/* deleted meanwhile: try the insert again */
		standing = row_standing(&row, now);

		if (standing == ROW_EXPIRED || standing == ROW_RELEASED ||
			standing == ROW_LAPSED || standing == ROW_OWNER_GONE)
		{
			/* The row changes hands: lock it and look again */
			if (!once && (standing == ROW_LAPSED || standing == ROW_OWNER_GONE) &&
				!same_request(&row, args))
				report_request_mismatch(args);
			if (!LedgerSqlFetch(args->scope, args->key,
								args->wait ? LEDGER_LOCK : LEDGER_LOCK_SKIP, &row))
			{
				if (!args->wait &&
					LedgerSqlFetch(args->scope, args->key, LEDGER_READ, &row))
				{
					/* Someone else holds the row lock: they are taking over */
					s->how = SETTLED_BUSY;
					s->has_attempt = true;
					s->attempt = row.attempt;
					return;
				}
				continue;
			}
			standing = row_standing(&row, now);
			if (standing == ROW_EXPIRED || standing == ROW_RELEASED ||
				((standing == ROW_LAPSED || standing == ROW_OWNER_GONE) &&
				 (once || same_request(&row, args))))
			{
				settled_started(s, take_over(nspid, args, &row, standing, once, now));
				return;
			}
		}

		/* A live row: completed or held */
		settled_live(s, &row, standing);
		return;
	}
}

/*
 * Settle a key for begin (once false) or once: the fast path, else the SQL
 * path.  A live row's response is copied into the caller's memory context
 * when want_response.
 */
static void
settle(Oid nspid, const BeginArgs *args, bool once, Settlement *s)
{
	TimestampTz now = IdemNow();
	MemoryContext callercxt = CurrentMemoryContext;
	int			nestlevel;

	if (settle_direct(nspid, args, once, now, s))
		return;

	nestlevel = LedgerSqlConnect(nspid);
	settle_sql(nspid, args, once, now, s);
	if (s->how == SETTLED_LIVE && !once && !s->row.response_null)
	{
		MemoryContext spicxt = MemoryContextSwitchTo(callercxt);

		s->row.response = PointerGetDatum(PG_DETOAST_DATUM_COPY(s->row.response));
		MemoryContextSwitchTo(spicxt);
	}
	LedgerSqlDisconnect(nestlevel);
}

/*
 * True when the settlement is another transaction's committed attempt in
 * progress, for the same request: what await waits on.  (A transaction
 * waiting for its own attempt would wait for nothing; a changed request
 * is IK001 at once.)
 */
static bool
held_by_other(const Settlement *s, const BeginArgs *args)
{
	return s->how == SETTLED_LIVE && s->standing == ROW_HELD &&
		!s->row.mine && same_request(&s->row, args);
}

/*
 * Await: wait, up to args->await, for the attempt that holds the key to
 * settle, and settle the key again each time it may have (await.c wakes
 * this backend).  Ends with the settlement the last look found: started
 * (released, taken over, or its owner gone: the caller takes over),
 * completed (replay), or still held when the interval has passed.  A row
 * that another transaction is writing (seen as busy by a caller that will
 * not wait for writers) is still awaited: its commit wakes us.  The wait
 * also ends when the attempt's lease does, for the takeover.
 */
static void
await_settle(Oid nspid, const BeginArgs *args, Settlement *s)
{
	TimestampTz deadline = IdemTimestampPlus(GetCurrentTimestamp(), &args->await);
	bool		timed_out = false;
	TimestampTz lease_until = s->row.lease_until;

	IdemStatsAdd(STAT_AWAITS, 1);
	/* On Citus the attempt may settle on another node, which wakes no one here */
	AwaitPrepare(args->scope, args->key,
				 !IdemCitusTable(get_relname_relid(IDEM_LEDGER_NAME, nspid)));
	for (;;)
	{
		TimestampTz now;
		long		timeout_ms;

		/* Look first: a wake that came before AwaitPrepare is not lost */
		settle(nspid, args, false, s);
		if (s->how == SETTLED_LIVE && s->standing == ROW_HELD)
		{
			if (!held_by_other(s, args))
				break;
			lease_until = s->row.lease_until;
		}
		else if (s->how != SETTLED_BUSY)
			break;

		now = GetCurrentTimestamp();
		if (now >= deadline)
		{
			timed_out = true;
			break;
		}
		timeout_ms = (long) ((deadline - now + 999) / 1000);
		if (lease_until != 0)
		{
			TimestampTz lease_left = lease_until - IdemNow();

			timeout_ms = Min(timeout_ms,
							 Max((long) ((lease_left + 999) / 1000), 1));
		}
		AwaitSleep(timeout_ms);
	}
	AwaitDone();
	if (timed_out)
		IdemStatsAdd(STAT_AWAIT_TIMEOUTS, 1);
}

/*
 * Begin: claim the key for a new attempt (started), replay a completed one
 * (replayed) or report that another attempt holds it (in_progress), having
 * awaited it when asked to.
 */
IdemResult
LedgerBegin(Oid nspid, const BeginArgs *args)
{
	Settlement	s;
	IdemResult	result;

	settle(nspid, args, false, &s);
	if (unlikely(args->has_await) && held_by_other(&s, args))
		await_settle(nspid, args, &s);
	memset(&result, 0, sizeof(result));
	result.has_attempt = s.has_attempt;
	result.attempt = s.attempt;
	switch (s.how)
	{
		case SETTLED_STARTED:
			result.outcome = OUTCOME_STARTED;
			break;
		case SETTLED_BUSY:
			result.outcome = OUTCOME_IN_PROGRESS;
			break;
		case SETTLED_LIVE:
			if (!same_request(&s.row, args))
				report_request_mismatch(args);
			if (s.standing == ROW_COMPLETED)
			{
				result.outcome = OUTCOME_REPLAYED;
				result.has_status = !s.row.status_null;
				result.status = s.row.status;
				result.has_response = !s.row.response_null;
				result.response = s.row.response;
			}
			else
				result.outcome = OUTCOME_IN_PROGRESS;
			break;
	}
	IdemStatsAdd(result.outcome == OUTCOME_STARTED ? STAT_STARTED :
				 result.outcome == OUTCOME_REPLAYED ? STAT_REPLAYED :
				 STAT_IN_PROGRESS, 1);
	return result;
}

/*
 * Once: record the key as completed in the caller's transaction and return
 * true, or return false while a record (or an attempt) lives.
 */
bool
LedgerOnce(Oid nspid, const BeginArgs *args)
{
	Settlement	s;

	settle(nspid, args, true, &s);
	IdemStatsAdd(s.how == SETTLED_STARTED ? STAT_ONCE_TRUE : STAT_ONCE_FALSE, 1);
	return s.how == SETTLED_STARTED;
}

/*
 * The fast path of finish: complete an attempt that the current transaction
 * began, which no other transaction can see or change.  Returns false,
 * having changed nothing, when the SQL path must decide (including every
 * error case, so that errors are reported in one place).
 */
static bool
finish_direct(Oid nspid, text *scope, text *key, int32 status,
			  bool has_response, Datum response, bool has_attempt,
			  int32 attempt, TimestampTz now, int32 *finished)
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
		last_insert.storage == LedgerDirectStorage(&ld) &&
		LedgerDirectFetchTid(&ld, &last_insert.tid, true, scope, key,
							 false, &row, &own))
		tid = last_insert.tid;
	else if (!LedgerDirectFetch(&ld, scope, key, false, &row, &tid, &own))
		own = false;
	if (own && attempt_open(&row, now, has_attempt, attempt))
	{
		Datum		values[Natts_ledger];
		bool		nulls[Natts_ledger];

		end_attempt(&row, now, true, status, has_response, response);
		LedgerRowValues(&row, nspid, scope, key, values, nulls);
		done = LedgerDirectUpdate(&ld, &tid, values, nulls);
		*finished = row.attempt;
	}
	LedgerDirectClose(&ld);
	return done;
}

/*
 * End the caller's attempt on the SQL path: lock the key's row, apply the
 * finishing rule, and write the completed (complete) or released row.
 * Returns the attempt.
 */
static int32
end_attempt_sql(Oid nspid, text *scope, text *key, bool complete,
				int32 status, bool has_response, Datum response,
				bool has_attempt, int32 attempt, TimestampTz now)
{
	LedgerRow	row;
	Datum		values[Natts_ledger];
	bool		nulls[Natts_ledger];
	int			nestlevel = LedgerSqlConnect(nspid);

	if (!LedgerSqlFetch(scope, key, LEDGER_LOCK, &row))
		report_no_attempt(NULL, key, has_attempt, attempt, now,
						  complete ? "finish" : "release");
	if (!attempt_open(&row, now, has_attempt, attempt))
		report_no_attempt(&row, key, has_attempt, attempt, now,
						  complete ? "finish" : "release");
	end_attempt(&row, now, complete, status, has_response, response);
	LedgerRowValues(&row, nspid, scope, key, values, nulls);
	LedgerSqlReplace(values, nulls);
	LedgerSqlDisconnect(nestlevel);
	/* an attempt of an earlier transaction: someone may await it */
	if (!row.mine)
		AwaitKeyChanged(scope, key);
	return row.attempt;
}

/*
 * Finish: complete the attempt in progress and store what duplicates
 * replay.  The response is the caller's and is returned as it is.
 */
IdemResult
LedgerFinish(Oid nspid, text *scope, text *key, int32 status,
			 bool has_response, Datum response, bool has_attempt,
			 int32 attempt)
{
	TimestampTz now = IdemNow();
	IdemResult	result;
	int32		finished;

	if (!finish_direct(nspid, scope, key, status, has_response, response,
					   has_attempt, attempt, now, &finished))
		finished = end_attempt_sql(nspid, scope, key, true, status,
								   has_response, response, has_attempt,
								   attempt, now);
	IdemStatsAdd(STAT_FINISHES, 1);
	memset(&result, 0, sizeof(result));
	result.outcome = OUTCOME_COMPLETED;
	result.has_status = true;
	result.status = status;
	result.has_response = has_response;
	result.response = response;
	result.has_attempt = true;
	result.attempt = finished;
	return result;
}

/*
 * Release (idem_fail): end the attempt in progress without a response, so
 * that the next begin starts afresh with the attempt number one higher.
 */
void
LedgerRelease(Oid nspid, text *scope, text *key, bool has_attempt,
			  int32 attempt)
{
	(void) end_attempt_sql(nspid, scope, key, false, 0, false, (Datum) 0,
						   has_attempt, attempt, IdemNow());
	IdemStatsAdd(STAT_FAILS, 1);
}

/*
 * Delete up to batch_size expired rows whose ctid follows *cursor, never
 * waiting on a row a foreground caller holds.  Advances *cursor past the
 * rows looked at; *reached_end tells that the scan ran off the table's end.
 * The direct path does it where it can; a ledger that Citus distributes, or
 * one with triggers, rules or row security, gets the SQL statement.
 */
uint64
LedgerSweepBatch(Oid nspid, int batch_size, ItemPointer cursor,
				 bool *reached_end)
{
	TimestampTz now = IdemNow();
	uint64		deleted;

	if (!LedgerDirectSweep(nspid, now, batch_size, cursor, reached_end,
						   &deleted))
	{
		int			nestlevel = LedgerSqlConnect(nspid);

		deleted = LedgerSqlSweep(cursor, now, batch_size);
		*reached_end = (deleted < (uint64) batch_size);
		LedgerSqlDisconnect(nestlevel);
	}
	IdemStatsAdd(STAT_KEYS_SWEPT, deleted);
	return deleted;
}

/*
 * True when another node sweeps the ledger: it is a Citus table and this
 * node a worker, whose statements on it Citus would send to every shard,
 * as the coordinator's do.  So the coordinator alone sweeps.
 */
bool
LedgerSweptByCoordinator(Oid nspid)
{
	return IdemCitusTable(get_relname_relid(IDEM_LEDGER_NAME, nspid)) &&
		IdemCitusWorkerNode();
}

/* Number of rows that have expired and wait for the sweeper */
int64
LedgerCountExpired(Oid nspid)
{
	int			nestlevel = LedgerSqlConnect(nspid);
	int64		count = LedgerSqlCountExpired(IdemNow());

	LedgerSqlDisconnect(nestlevel);
	return count;
}

/* Make the ledger a logged or an UNLOGGED table */
void
LedgerSetLogged(Oid nspid, bool logged)
{
	int			nestlevel = LedgerSqlConnect(InvalidOid);

	LedgerSqlSetLogged(nspid, logged);
	LedgerSqlDisconnect(nestlevel);
}
