/*-------------------------------------------------------------------------
 *
 * sweeper.c
 *	  The per-database sweeper that deletes expired keys, its status board
 *	  in shared memory, and the SQL functions that start, stop and show it.
 *
 * A sweeper connects to one database and runs passes over its ledger: each
 * pass walks the ledger in physical order, one short batch per transaction
 * (LedgerSweepBatch), so a foreground caller never waits on the sweeper for
 * longer than one batch.  Before each batch it makes sure the extension is
 * still there and not being dropped, and that nobody needs the database to
 * itself (DROP DATABASE, ALTER DATABASE, CREATE DATABASE ... TEMPLATE); when
 * someone does, it steps aside at once instead of making them wait.
 *
 * A sweeper runs in one of two modes:
 *	- started by the launcher (see launcher.c): one pass, then it reports how
 *	  the pass ended and exits, so that it holds no connection between passes;
 *	- started by idem_sweeper_start(), when the library is not preloaded: it
 *	  stays connected and runs a pass every idempotency.sweep_interval until
 *	  idem_sweeper_stop(), SIGTERM, DROP EXTENSION or DROP DATABASE.
 *
 * After a pass that leaves a tenth of the ledger or more as dead rows, the
 * sweeper vacuums it at once.  Autovacuum would come too, but only at its
 * next visit (autovacuum_naptime, a minute by default): keys written
 * meanwhile would extend the table instead of reusing the space, and the
 * ledger would grow with every fill-and-expire cycle faster than that (see
 * bench/sweep_bloat.sh).  idempotency.sweep_vacuum = off (for the server or
 * one database) turns this off, and a ledger with autovacuum_enabled = off
 * is left alone.
 *
 * The status board is a small array in shared memory, one slot per database
 * that has a sweeper, read by idem_sweeper_status().  When the library is
 * preloaded its space is reserved at server start; otherwise it is taken on
 * first use from the spare shared memory the server keeps for that purpose,
 * as contrib/pg_prewarm does for its own worker.
 *
 * src/sweeper.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/vacuum.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "idempotency.h"
#include "ledger.h"

PG_FUNCTION_INFO_V1(idem_sweeper_start);
PG_FUNCTION_INFO_V1(idem_sweeper_stop);
PG_FUNCTION_INFO_V1(idem_sweeper_status);

#define SWEEPER_TYPE			"idempotency sweeper"

/* Status slots: one per database with a sweeper */
#define BOARD_SLOTS_PRELOADED	256
#define BOARD_SLOTS_DYNAMIC		16
#define BOARD_ERROR_LEN			160

/* A sweeper that waits between passes checks this often whether to leave */
#define IDLE_POLL_MS			1000

/* Longest back-off after failed passes */
#define MAX_BACKOFF_MS			(10 * 60 * 1000)

/*
 * After a pass, the sweeper vacuums the ledger when at least this share of it,
 * and at least this many rows, are dead
 */
#define VACUUM_DEAD_SHARE		0.1
#define VACUUM_MIN_DEAD			1000

/* How long idem_sweeper_start and idem_sweeper_stop wait for the worker */
#define CONTROL_WAIT_MS			10000

/* The status of the sweeper of one database */
typedef struct SweepSlot
{
	Oid			dboid;			/* InvalidOid when the slot is free */
	pid_t		pid;			/* sweeper connected to the database, or 0 */
	bool		sweeping;		/* a pass is in progress */
	int			failures;		/* consecutive failed passes */
	TimestampTz pass_started;	/* start of the current or last pass */
	TimestampTz pass_finished;	/* end of the last completed pass, or 0 */
	TimestampTz next_pass;		/* when the next pass is due, or 0 */
	int64		removed_last_pass;	/* keys removed by the last completed pass */
	int64		removed_total;	/* keys removed since the server started */
	int64		longest_batch_us;	/* longest batch of the last completed pass */
	char		last_error[BOARD_ERROR_LEN];	/* message of the last failure */
} SweepSlot;

typedef struct SweepBoard
{
	LWLock		lock;			/* protects everything below */
	int			nslots;
	SweepSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} SweepBoard;

/* How a pass ended, in more detail than the launcher needs */
typedef enum PassEnd
{
	PASS_DONE,					/* reached the end of the ledger */
	PASS_NO_EXTENSION,			/* the database does not have the extension */
	PASS_EXTENSION_BUSY,		/* the extension is being dropped or altered */
	PASS_DATABASE_BUSY,			/* someone needs the database to itself */
	PASS_OFF,					/* sweep_interval was set to 0 */
	PASS_CANCELED,				/* pg_cancel_backend */
	PASS_FAILED					/* an error ended the pass */
} PassEnd;

/* State of the sweeper process */
typedef struct SweeperState
{
	char		dbname[NAMEDATALEN];
	int			run;			/* launcher run slot, or -1 when dynamic */
	SweepSlot  *slot;			/* our status slot, or NULL when none free */
	MemoryContext pass_context; /* reset at the start of each pass */
	int			failures;		/* consecutive failed passes */
} SweeperState;

static SweepBoard *board = NULL;
static SweeperState sweeper;

static int
board_capacity(void)
{
	return IdemPreloaded ? BOARD_SLOTS_PRELOADED : BOARD_SLOTS_DYNAMIC;
}

/* Shared memory the status board needs, reserved when preloading */
Size
IdemSweepShmemSize(void)
{
	return add_size(offsetof(SweepBoard, slots),
					mul_size(board_capacity(), sizeof(SweepSlot)));
}

/*
 * Attach to the status board, creating it on first use.  Without preloading
 * it comes out of the server's spare shared memory.
 */
static SweepBoard *
board_attach(void)
{
	bool		found;

	if (board != NULL)
		return board;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	board = ShmemInitStruct("idempotency sweepers", IdemSweepShmemSize(),
							&found);
	if (!found)
	{
		memset(board, 0, IdemSweepShmemSize());
		LWLockInitialize(&board->lock, LWLockNewTrancheId());
		board->nslots = board_capacity();
	}
	LWLockRelease(AddinShmemInitLock);
	LWLockRegisterTranche(board->lock.tranche, "idempotency_sweepers");
	return board;
}

/* The slot of a database, or NULL; caller holds the board lock */
static SweepSlot *
board_find(Oid dboid)
{
	for (int i = 0; i < board->nslots; i++)
	{
		if (board->slots[i].dboid == dboid)
			return &board->slots[i];
	}
	return NULL;
}

/* True when pid is a live process connected to database dboid */
static bool
sweeper_alive(pid_t pid, Oid dboid)
{
	PGPROC	   *proc;

	if (pid == 0)
		return false;
	proc = BackendPidGetProc(pid);
	return proc != NULL && proc->databaseId == dboid;
}

/*
 * The slot of a database, taking a free one when it has none.  A slot whose
 * database is gone, or whose dynamic sweeper has stopped, is free to reuse
 * when nothing else is.  Caller holds the board lock exclusively.
 */
static SweepSlot *
board_find_or_take(Oid dboid)
{
	SweepSlot  *slot = board_find(dboid);

	if (slot == NULL)
		slot = board_find(InvalidOid);
	if (slot == NULL)
	{
		/*
		 * Without preloading, reuse the slot of a stopped sweeper.  When
		 * preloaded, the launcher frees the slots of dropped databases.
		 */
		for (int i = 0; i < board->nslots && !IdemPreloaded; i++)
		{
			SweepSlot  *s = &board->slots[i];

			if (!sweeper_alive(s->pid, s->dboid))
			{
				slot = s;
				break;
			}
		}
		if (slot == NULL)
			return NULL;
	}
	if (slot->dboid != dboid)
	{
		memset(slot, 0, sizeof(SweepSlot));
		slot->dboid = dboid;
	}
	return slot;
}

/* True when a sweeper of database dboid would find a status slot */
static bool
board_has_room(Oid dboid)
{
	bool		room = false;

	board_attach();
	LWLockAcquire(&board->lock, LW_SHARED);
	for (int i = 0; i < board->nslots && !room; i++)
	{
		SweepSlot  *s = &board->slots[i];

		room = (s->dboid == dboid || !OidIsValid(s->dboid) ||
				(!IdemPreloaded && !sweeper_alive(s->pid, s->dboid)));
	}
	LWLockRelease(&board->lock);
	return room;
}

/*
 * Forget the status of a database: it was dropped, or lost the extension.
 * Called by the launcher and by a sweeper that finds no extension.
 */
void
IdemSweepForget(Oid dboid)
{
	SweepSlot  *slot;

	board_attach();
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot = board_find(dboid);
	if (slot != NULL && (slot->pid == 0 || slot->pid == MyProcPid))
		memset(slot, 0, sizeof(SweepSlot));
	LWLockRelease(&board->lock);
}

/* Publish when the launcher will run the next pass in a database */
void
IdemSweepSetNextPass(Oid dboid, TimestampTz next_pass)
{
	SweepSlot  *slot;

	board_attach();
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot = board_find(dboid);
	if (slot != NULL)
		slot->next_pass = next_pass;
	LWLockRelease(&board->lock);
}

/*
 * True when another session holds or waits for a lock on the database that
 * a new connection could not get: DROP DATABASE, ALTER DATABASE RENAME or
 * SET TABLESPACE, CREATE DATABASE using it as template.  All of them give up
 * after five seconds while other sessions are connected, so a sweeper leaves
 * as soon as it sees this, and the launcher starts none meanwhile.
 */
bool
IdemDatabaseIsBusy(Oid dboid)
{
	LOCKTAG		tag;

	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, dboid, 0);
	if (LockAcquire(&tag, RowExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		return true;
	LockRelease(&tag, RowExclusiveLock, true);
	return false;
}

/*
 * The extension's row in pg_extension of the current database: its OID and
 * schema, or InvalidOid when it is not installed.  The tuple's xmin is
 * returned too, so that a caller can tell whether its own transaction
 * created it.
 */
static Oid
find_extension(Oid *nspid, TransactionId *xmin)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	Oid			extoid = InvalidOid;

	*nspid = InvalidOid;
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum(IDEM_EXTENSION_NAME));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		Form_pg_extension ext = (Form_pg_extension) GETSTRUCT(tup);

		extoid = ext->oid;
		*nspid = ext->extnamespace;
		if (xmin != NULL)
			*xmin = HeapTupleHeaderGetXmin(tup->t_data);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return extoid;
}

/*
 * The schema of the extension, locked against DROP EXTENSION until the end
 * of the transaction; InvalidOid when it is not installed, or when a DROP or
 * ALTER EXTENSION holds it (then *busy is set).  The sweeper never waits
 * for the extension's lock: it would be waiting for the extension to vanish.
 */
static Oid
lock_extension_schema(bool *busy)
{
	Oid			nspid;
	Oid			extoid = find_extension(&nspid, NULL);
	Oid			again_nspid;

	*busy = false;
	if (!OidIsValid(extoid))
		return InvalidOid;
	if (!ConditionalLockDatabaseObject(ExtensionRelationId, extoid, 0,
									   AccessShareLock))
	{
		*busy = true;
		return InvalidOid;
	}
	/* It may have been dropped between the look-up and the lock */
	if (find_extension(&again_nspid, NULL) != extoid)
		return InvalidOid;
	return again_nspid;
}

/* Keeps the database's name in errors raised while sweeping */
static void
sweep_error_context(void *arg)
{
	errcontext("idempotency sweeper of database \"%s\"", sweeper.dbname);
}

/* Report progress in pg_stat_activity */
static void
report_progress(int64 removed)
{
	char		activity[64];

	snprintf(activity, sizeof(activity),
			 "sweeping expired keys: " INT64_FORMAT " removed", removed);
	pgstat_report_activity(STATE_RUNNING, activity);
}

/*
 * CHECK_FOR_INTERRUPTS for where the sweeper runs no statement: at start,
 * between batches, between passes.  A cancel (pg_cancel_backend) ends the
 * statement at work, and a batch or the vacuum catches it and ends the pass.
 * Out here there is nothing to cancel, and raised as an error it would end
 * the process with code 1: a sweeper of idem_sweeper_start would be gone
 * for good, one of the launcher's would count as failed.  So the cancel is
 * taken off here and returned: between batches it ends the pass as a cancel
 * during a batch does; between passes it is dropped, as an idle backend
 * drops it.
 */
static bool
sweeper_take_cancel(void)
{
	bool		canceled = QueryCancelPending;

	QueryCancelPending = false;
	CHECK_FOR_INTERRUPTS();
	return canceled;
}

/*
 * Delete one batch in a transaction of its own.  Returns false when the
 * extension is gone or busy, with *end saying which.
 */
static bool
sweep_batch(ItemPointer cursor, bool *reached_end, uint64 *removed,
			PassEnd *end)
{
	Oid			nspid;
	bool		busy;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	nspid = lock_extension_schema(&busy);
	if (OidIsValid(nspid))
		*removed = LedgerSweepBatch(nspid, IdemSweepBatchSize, cursor,
									reached_end);

	PopActiveSnapshot();
	CommitTransactionCommand();

	if (!OidIsValid(nspid))
	{
		*end = busy ? PASS_EXTENSION_BUSY : PASS_NO_EXTENSION;
		return false;
	}
	return true;
}

/*
 * Whether to log a failure: the first time an error occurs, yes; the same
 * error again in the following passes, no, so that a sweeper that keeps
 * failing backs off without filling the log.
 */
static bool
failure_is_new(const ErrorData *edata)
{
	bool		repeated;

	if (sweeper.slot == NULL)
		return sweeper.failures == 0;
	LWLockAcquire(&board->lock, LW_SHARED);
	repeated = (sweeper.slot->failures > 0 && edata->message != NULL &&
				strncmp(sweeper.slot->last_error, edata->message,
						BOARD_ERROR_LEN - 1) == 0);
	LWLockRelease(&board->lock);
	return !repeated;
}

/* Count a failed pass and keep its message for idem_sweeper_status */
static void
record_failure(const ErrorData *edata)
{
	sweeper.failures++;
	if (sweeper.slot == NULL)
		return;
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	sweeper.slot->failures++;
	strlcpy(sweeper.slot->last_error,
			edata->message ? edata->message : "unknown error",
			BOARD_ERROR_LEN);
	LWLockRelease(&board->lock);
}

/*
 * In PG_CATCH: report the error the first time it occurs, leave the failed
 * transaction as autovacuum does, and say how the pass ends.
 */
static PassEnd
recover_from_error(void)
{
	ErrorData  *edata;
	bool		canceled;

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(sweeper.pass_context);
	edata = CopyErrorData();
	canceled = (edata->sqlerrcode == ERRCODE_QUERY_CANCELED);
	if (!canceled && failure_is_new(edata))
		EmitErrorReport();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	RESUME_INTERRUPTS();

	if (canceled)
		return PASS_CANCELED;
	record_failure(edata);
	return PASS_FAILED;
}

/*
 * True when the ledger has enough dead rows for the sweeper to vacuum it, as
 * the table statistics count them (the sweeper's own deletes included: they
 * are flushed at the end of each pass).
 */
static bool
ledger_needs_vacuum(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	bool		enabled = true;
	PgStat_StatTabEntry *tab;

	if (rel->rd_options != NULL)
		enabled = ((StdRdOptions *) rel->rd_options)->autovacuum.enabled;
	table_close(rel, AccessShareLock);
	if (!enabled)
		return false;

	tab = pgstat_fetch_stat_tabentry(relid);
	if (tab == NULL)
		return false;
	return IdemStatDeadTuples(tab) >= VACUUM_MIN_DEAD &&
		IdemStatDeadTuples(tab) >= VACUUM_DEAD_SHARE *
		(IdemStatLiveTuples(tab) + IdemStatDeadTuples(tab));
}

/*
 * Vacuum the ledger when the pass left it with many dead rows.  It runs as
 * VACUUM (SKIP_LOCKED) does: it takes no lock that foreground callers need,
 * and does nothing when autovacuum is at the ledger already.
 */
static void
vacuum_ledger_if_needed(void)
{
	Oid			nspid;
	Oid			relid = InvalidOid;
	bool		busy;
	bool		needed = false;
	List	   *rels;
	VacuumParams params;
	MemoryContext oldcontext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	nspid = lock_extension_schema(&busy);
	if (OidIsValid(nspid))
		relid = get_relname_relid(IDEM_LEDGER_NAME, nspid);
	if (OidIsValid(relid) && IdemSweepVacuum)
		needed = ledger_needs_vacuum(relid);
	if (!needed)
	{
		CommitTransactionCommand();
		return;
	}

	pgstat_report_activity(STATE_RUNNING, "vacuuming the ledger");

	/* vacuum() commits our transaction: what it is given must outlive it */
	oldcontext = MemoryContextSwitchTo(sweeper.pass_context);
	rels = list_make1(makeVacuumRelation(NULL, relid, NIL));
	MemoryContextSwitchTo(oldcontext);

	memset(&params, 0, sizeof(params));
	params.options = VACOPT_VACUUM | VACOPT_SKIP_LOCKED | VACOPT_PROCESS_TOAST;
	params.freeze_min_age = -1;
	params.freeze_table_age = -1;
	params.multixact_freeze_min_age = -1;
	params.multixact_freeze_table_age = -1;
	params.is_wraparound = false;
	params.log_min_duration = -1;
	params.index_cleanup = VACOPTVALUE_UNSPECIFIED;
	params.truncate = VACOPTVALUE_UNSPECIFIED;
	params.nworkers = -1;		/* no parallel workers */

	IdemVacuum(rels, &params, sweeper.pass_context);
	CommitTransactionCommand();
}

/*
 * One pass over the ledger, in batches of idempotency.sweep_batch_size, each
 * committed on its own.  Errors end the pass; the caller backs off.
 */
static PassEnd
sweep_pass(void)
{
	ItemPointerData cursor;
	volatile PassEnd end = PASS_DONE;
	volatile int64 removed = 0;
	volatile int64 longest_us = 0;
	TimestampTz started = GetCurrentTimestamp();
	ErrorContextCallback errcallback;

	MemoryContextReset(sweeper.pass_context);
	ItemPointerSet(&cursor, 0, 0);

	if (sweeper.slot != NULL)
	{
		LWLockAcquire(&board->lock, LW_EXCLUSIVE);
		sweeper.slot->sweeping = true;
		sweeper.slot->pass_started = started;
		sweeper.slot->next_pass = 0;
		LWLockRelease(&board->lock);
	}
	report_progress(0);

	errcallback.callback = sweep_error_context;
	errcallback.arg = NULL;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	for (;;)
	{
		volatile bool reached_end = false;
		volatile uint64 batch_removed = 0;
		volatile bool go_on = true;
		TimestampTz batch_start;
		long		secs;
		int			usecs;

		if (sweeper_take_cancel())
		{
			end = PASS_CANCELED;
			break;
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (IdemSweepInterval == 0)
		{
			end = PASS_OFF;
			break;
		}
		if (IdemDatabaseIsBusy(MyDatabaseId))
		{
			end = PASS_DATABASE_BUSY;
			break;
		}

		batch_start = GetCurrentTimestamp();
		PG_TRY();
		{
			PassEnd		batch_end = PASS_DONE;
			bool		at_end = false;
			uint64		n = 0;

			go_on = sweep_batch(&cursor, &at_end, &n, &batch_end);
			reached_end = at_end;
			batch_removed = n;
			if (!go_on)
				end = batch_end;
		}
		PG_CATCH();
		{
			end = recover_from_error();
			go_on = false;
		}
		PG_END_TRY();

		if (!go_on)
			break;

		TimestampDifference(batch_start, GetCurrentTimestamp(), &secs, &usecs);
		if (secs * USECS_PER_SEC + usecs > longest_us)
			longest_us = secs * USECS_PER_SEC + usecs;
		removed += batch_removed;
		if (sweeper.slot != NULL && batch_removed > 0)
		{
			LWLockAcquire(&board->lock, LW_EXCLUSIVE);
			sweeper.slot->removed_total += batch_removed;
			LWLockRelease(&board->lock);
		}
		report_progress(removed);

		/* A batch that removed nothing can only be the last one */
		if (reached_end || batch_removed == 0)
			break;
	}

	/* Let autovacuum, and the check below, see the dead rows at once */
	pgstat_report_stat(true);

	/* The deletions are over: publish the pass */
	if (end == PASS_DONE)
		sweeper.failures = 0;
	if (sweeper.slot != NULL && end == PASS_DONE)
	{
		LWLockAcquire(&board->lock, LW_EXCLUSIVE);
		sweeper.slot->pass_finished = GetCurrentTimestamp();
		sweeper.slot->removed_last_pass = removed;
		sweeper.slot->longest_batch_us = longest_us;
		sweeper.slot->failures = 0;
		sweeper.slot->last_error[0] = '\0';
		LWLockRelease(&board->lock);
	}

	/* Then vacuum the ledger, if the pass left much to vacuum */
	if (end == PASS_DONE && removed > 0)
	{
		if (IdemDatabaseIsBusy(MyDatabaseId))
			end = PASS_DATABASE_BUSY;
		else
		{
			PG_TRY();
			{
				vacuum_ledger_if_needed();
			}
			PG_CATCH();
			{
				end = recover_from_error();
			}
			PG_END_TRY();
		}
	}

	error_context_stack = errcallback.previous;

	if (sweeper.slot != NULL)
	{
		LWLockAcquire(&board->lock, LW_EXCLUSIVE);
		sweeper.slot->sweeping = false;
		LWLockRelease(&board->lock);
	}

	elog(DEBUG1, "idempotency sweeper of database \"%s\": pass removed " INT64_FORMAT " keys",
		 sweeper.dbname, (int64) removed);
	return end;
}

/* Clear our pid from the status board when the process exits */
static void
sweeper_release_slot(int code, Datum arg)
{
	if (sweeper.slot == NULL)
		return;
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	if (sweeper.slot->pid == MyProcPid)
	{
		sweeper.slot->pid = 0;
		sweeper.slot->sweeping = false;
	}
	LWLockRelease(&board->lock);
}

/*
 * Take the status slot of our database.  Returns false when another live
 * sweeper holds it: two sweepers in one database would only get in each
 * other's way.
 */
static bool
sweeper_claim_slot(bool dynamic)
{
	SweepSlot  *slot;

	board_attach();
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot = board_find_or_take(MyDatabaseId);
	if (slot != NULL && slot->pid != 0 && slot->pid != MyProcPid &&
		sweeper_alive(slot->pid, MyDatabaseId))
	{
		LWLockRelease(&board->lock);
		return false;
	}
	if (slot != NULL)
	{
		slot->pid = MyProcPid;
		slot->sweeping = false;
		slot->next_pass = 0;
	}
	LWLockRelease(&board->lock);

	sweeper.slot = slot;
	if (slot == NULL)
	{
		/*
		 * Without a slot a sweeper of idem_sweeper_start could be neither
		 * seen nor stopped, so it does not run; one of the launcher's runs,
		 * as the launcher keeps track of it.
		 */
		if (dynamic)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("idempotency sweeper of database \"%s\" cannot start: %d databases have one already",
							sweeper.dbname, board->nslots)));
		elog(DEBUG1, "idempotency sweeper of database \"%s\" runs without a status slot: all %d are taken",
			 sweeper.dbname, board->nslots);
	}
	before_shmem_exit(sweeper_release_slot, (Datum) 0);
	return true;
}

/*
 * Check, in a transaction, that the database has the extension and is not a
 * standby; remember the database's name for messages.
 */
static bool
sweeper_has_extension(void)
{
	Oid			nspid;
	Oid			extoid;
	char	   *dbname;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	dbname = get_database_name(MyDatabaseId);
	strlcpy(sweeper.dbname, dbname ? dbname : "?", NAMEDATALEN);
	extoid = RecoveryInProgress() ? InvalidOid : find_extension(&nspid, NULL);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return OidIsValid(extoid);
}

/* Milliseconds to wait after a pass, given how it ended */
static long
pause_after(PassEnd end)
{
	long		interval_ms = (long) IdemSweepInterval * 1000L;

	if (end == PASS_FAILED)
	{
		int			shift = Min(sweeper.failures - 1, 10);

		return Min(Max(interval_ms, 1000L) << shift, (long) MAX_BACKOFF_MS);
	}
	return interval_ms;
}

/*
 * A sweeper started by idem_sweeper_start: a pass every sweep_interval
 * until stopped.  Between passes it holds no lock and checks each second
 * whether it must leave the database.
 */
static void
sweeper_dynamic_loop(void)
{
	for (;;)
	{
		PassEnd		end = PASS_OFF;
		TimestampTz due;

		if (IdemSweepInterval > 0)
			end = sweep_pass();

		switch (end)
		{
			case PASS_NO_EXTENSION:
				ereport(LOG,
						(errmsg("idempotency sweeper of database \"%s\" exits: the extension was dropped",
								sweeper.dbname)));
				proc_exit(0);
				break;
			case PASS_DATABASE_BUSY:
				ereport(LOG,
						(errmsg("idempotency sweeper of database \"%s\" exits: another session needs the database to itself",
								sweeper.dbname)));
				proc_exit(0);
				break;
			default:
				break;
		}

		if (sweeper.slot != NULL)
		{
			LWLockAcquire(&board->lock, LW_EXCLUSIVE);
			sweeper.slot->next_pass = IdemSweepInterval > 0 ?
				TimestampTzPlusMilliseconds(GetCurrentTimestamp(), pause_after(end)) : 0;
			LWLockRelease(&board->lock);
		}
		pgstat_report_activity(STATE_IDLE, NULL);

		due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), pause_after(end));
		for (;;)
		{
			long		wait_ms;

			/* A cancel between passes has no pass to end */
			(void) sweeper_take_cancel();
			if (ConfigReloadPending)
			{
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
				/* A new interval counts from the end of the last pass */
				due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  pause_after(end));
			}
			if (IdemDatabaseIsBusy(MyDatabaseId))
			{
				ereport(LOG,
						(errmsg("idempotency sweeper of database \"%s\" exits: another session needs the database to itself",
								sweeper.dbname)));
				proc_exit(0);
			}
			if (IdemSweepInterval > 0 && GetCurrentTimestamp() >= due)
				break;

			wait_ms = IDLE_POLL_MS;
			if (IdemSweepInterval > 0)
			{
				long		secs;
				int			usecs;

				TimestampDifference(GetCurrentTimestamp(), due, &secs, &usecs);
				wait_ms = Min(wait_ms, secs * 1000L + usecs / 1000 + 1);
			}
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}

/*
 * Entry point of a sweeper.  main_arg is the database OID; bgw_extra holds
 * the launcher's run slot, or -1 for a sweeper of idem_sweeper_start.
 */
void
IdemSweeperMain(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	PassEnd		end;

	memcpy(&sweeper.run, MyBgworkerEntry->bgw_extra, sizeof(int));
	sweeper.slot = NULL;
	sweeper.failures = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);

	/*
	 * A cancel before the first pass waits for it (sweeper_take_cancel):
	 * raised while connecting, it would end the process.
	 */
	HOLD_CANCEL_INTERRUPTS();
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("application_name", SWEEPER_TYPE,
					PGC_USERSET, PGC_S_SESSION);

	sweeper.pass_context = AllocSetContextCreate(TopMemoryContext,
												 "idempotency sweep pass",
												 ALLOCSET_DEFAULT_SIZES);

	if (!sweeper_has_extension())
	{
		/* Nothing to sweep here: report it and let go of the database */
		IdemSweepForget(MyDatabaseId);
		if (sweeper.run >= 0)
			IdemLauncherReport(sweeper.run, IDEM_PASS_NO_EXTENSION);
		proc_exit(0);
	}

	if (!sweeper_claim_slot(sweeper.run < 0))
	{
		elog(DEBUG1, "idempotency sweeper of database \"%s\" exits: another sweeper runs there",
			 sweeper.dbname);
		if (sweeper.run >= 0)
			IdemLauncherReport(sweeper.run, IDEM_PASS_YIELDED);
		proc_exit(0);
	}

	RESUME_CANCEL_INTERRUPTS();

	if (sweeper.run < 0)
		sweeper_dynamic_loop();

	/* Started by the launcher: one pass, then report and leave */
	end = sweep_pass();
	switch (end)
	{
		case PASS_DONE:
			IdemLauncherReport(sweeper.run, IDEM_PASS_DONE);
			break;
		case PASS_FAILED:
			IdemLauncherReport(sweeper.run, IDEM_PASS_FAILED);
			break;
		case PASS_NO_EXTENSION:
			IdemSweepForget(MyDatabaseId);
			IdemLauncherReport(sweeper.run, IDEM_PASS_NO_EXTENSION);
			break;
		default:
			IdemLauncherReport(sweeper.run, IDEM_PASS_YIELDED);
			break;
	}
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}

/*
 * Register a sweeper for a database.  run is the launcher's run slot, or -1
 * for a sweeper that stays until stopped.  The launcher restarts its own
 * sweepers, so the postmaster never does: a sweeper whose database was
 * dropped must not come back.
 */
bool
IdemSweeperLaunch(Oid dboid, const char *dbname, int run,
				  BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "idempotency", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "IdemSweeperMain", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN,
			 "idempotency sweeper for database \"%s\"", dbname);
	strlcpy(worker.bgw_type, SWEEPER_TYPE, BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	memcpy(worker.bgw_extra, &run, sizeof(int));
	worker.bgw_notify_pid = MyProcPid;

	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/* Pid of the sweeper connected to the current database, or 0 */
static pid_t
current_sweeper_pid(void)
{
	SweepSlot  *slot;
	pid_t		pid = 0;

	board_attach();
	LWLockAcquire(&board->lock, LW_SHARED);
	slot = board_find(MyDatabaseId);
	if (slot != NULL && sweeper_alive(slot->pid, MyDatabaseId))
		pid = slot->pid;
	LWLockRelease(&board->lock);
	return pid;
}

/* Sleep a little while waiting for a worker, staying interruptible */
static void
control_nap(void)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 10L, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * idem_sweeper_start() returns integer
 *
 * Starts a sweeper for the current database when the library is not
 * preloaded, and returns its process id; returns the running one's when
 * there is one already.  When preloaded, the launcher runs the sweepers:
 * this only asks it to sweep the current database now.
 */
Datum
idem_sweeper_start(PG_FUNCTION_ARGS)
{
	Oid			nspid;
	TransactionId xmin = InvalidTransactionId;
	BackgroundWorkerHandle *handle;
	BgwHandleStatus status;
	pid_t		pid;
	char	   *dbname = get_database_name(MyDatabaseId);
	TimestampTz deadline;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot start a sweeper during recovery"),
				 errdetail("The ledger of a standby is a copy of its primary's, where the sweeper runs.")));

	if (IdemPreloaded)
	{
		IdemLauncherWake(MyDatabaseId);
		pid = current_sweeper_pid();
		ereport(NOTICE,
				(errmsg("the idempotency launcher runs the sweeper of database \"%s\"",
						dbname),
				 errdetail("The library is in shared_preload_libraries; the launcher was asked to sweep this database now.")));
		if (pid == 0)
			PG_RETURN_NULL();
		PG_RETURN_INT32(pid);
	}

	if (IdemSweepInterval == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sweeping is turned off"),
				 errdetail("idempotency.sweep_interval is 0."),
				 errhint("Set idempotency.sweep_interval to a positive time in postgresql.conf and reload the configuration.")));

	if (!OidIsValid(find_extension(&nspid, &xmin)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"%s\" is not installed in database \"%s\"",
						IDEM_EXTENSION_NAME, dbname)));
	if (TransactionIdIsCurrentTransactionId(xmin))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot start a sweeper in the transaction that creates the extension"),
				 errdetail("The sweeper would not see the extension until this transaction commits."),
				 errhint("Commit, then call idem_sweeper_start().")));

	pid = current_sweeper_pid();
	if (pid != 0)
	{
		ereport(NOTICE,
				(errmsg("a sweeper already runs for database \"%s\"", dbname)));
		PG_RETURN_INT32(pid);
	}
	if (!board_has_room(MyDatabaseId))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("cannot start a sweeper: %d databases have one already",
						board->nslots),
				 errhint("Stop a sweeper with idem_sweeper_stop(), or add idempotency to shared_preload_libraries.")));

	if (!IdemSweeperLaunch(MyDatabaseId, dbname, -1, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start a sweeper: no background worker slot is free"),
				 errhint("Raise max_worker_processes (this needs a restart), or stop another background worker.")));

	status = WaitForBackgroundWorkerStartup(handle, &pid);
	if (status == BGWH_POSTMASTER_DIED)
		ereport(ERROR,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("cannot start a sweeper without the postmaster")));

	/*
	 * The worker checks the extension and takes the database's status slot.
	 * Wait for that, so that the pid returned is the one of the sweeper, and
	 * a second call right after this one sees it.
	 */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CONTROL_WAIT_MS);
	for (;;)
	{
		pid_t		running = current_sweeper_pid();

		if (running != 0)
			PG_RETURN_INT32(running);
		if (GetBackgroundWorkerPid(handle, &pid) == BGWH_STOPPED ||
			GetCurrentTimestamp() >= deadline)
			break;
		control_nap();
	}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the sweeper of database \"%s\" stopped right after it started",
					dbname),
			 errhint("The server log may say why.")));
	PG_RETURN_NULL();
}

/*
 * idem_sweeper_stop() returns boolean
 *
 * Stops the sweeper that idem_sweeper_start started for the current
 * database, and waits until it is gone.  Returns false when none ran.
 */
Datum
idem_sweeper_stop(PG_FUNCTION_ARGS)
{
	pid_t		pid;
	TimestampTz deadline;

	if (IdemPreloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot stop the sweeper of one database while the idempotency launcher runs them"),
				 errdetail("The library is in shared_preload_libraries, so the launcher sweeps every database that has the extension."),
				 errhint("Set idempotency.sweep_interval to 0 and reload the configuration to turn sweeping off.")));

	pid = current_sweeper_pid();
	if (pid == 0)
		PG_RETURN_BOOL(false);

	if (kill(pid, SIGTERM) != 0 && errno != ESRCH)
		ereport(ERROR,
				(errmsg("could not signal the sweeper (process %d): %m", (int) pid)));

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CONTROL_WAIT_MS);
	while (current_sweeper_pid() == pid)
	{
		if (GetCurrentTimestamp() >= deadline)
		{
			ereport(WARNING,
					(errmsg("the sweeper (process %d) has not stopped yet", (int) pid)));
			break;
		}
		control_nap();
	}
	PG_RETURN_BOOL(true);
}

/* Number of columns of idem_sweeper_status */
#define STATUS_COLS		11

/* Interval value from microseconds */
static Datum
interval_from_us(int64 us)
{
	Interval   *span = palloc0(sizeof(Interval));

	span->time = us;
	return IntervalPGetDatum(span);
}

/*
 * Expired keys waiting in the current database's ledger, or -1 when the
 * caller may not read the ledger.
 */
static int64
expired_waiting(void)
{
	Oid			nspid;
	Oid			relid;

	if (!OidIsValid(find_extension(&nspid, NULL)))
		return -1;
	relid = get_relname_relid(IDEM_LEDGER_NAME, nspid);
	if (!OidIsValid(relid) ||
		pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		return -1;
	return LedgerCountExpired(nspid);
}

/*
 * idem_sweeper_status() returns setof record
 *
 * One row per database that has a sweeper, and one for the current
 * database in any case.  expired_waiting is counted in the current
 * database only: other databases' ledgers cannot be read from here.
 */
Datum
idem_sweeper_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SweepSlot  *copy;
	int			nslots;
	bool		seen_current = false;
	int64		waiting;

	InitMaterializedSRF(fcinfo, 0);

	board_attach();
	nslots = board->nslots;
	copy = palloc(sizeof(SweepSlot) * nslots);
	LWLockAcquire(&board->lock, LW_SHARED);
	memcpy(copy, board->slots, sizeof(SweepSlot) * nslots);
	LWLockRelease(&board->lock);

	waiting = expired_waiting();

	for (int i = 0; i <= nslots; i++)
	{
		SweepSlot	blank;
		SweepSlot  *s;
		Datum		values[STATUS_COLS];
		bool		nulls[STATUS_COLS];
		char	   *dbname;
		const char *state;
		bool		alive;

		if (i < nslots)
		{
			s = &copy[i];
			if (!OidIsValid(s->dboid))
				continue;
		}
		else
		{
			/* The current database, when no sweeper has run there */
			if (seen_current)
				break;
			memset(&blank, 0, sizeof(blank));
			blank.dboid = MyDatabaseId;
			s = &blank;
		}
		dbname = get_database_name(s->dboid);
		if (dbname == NULL)
			continue;			/* dropped meanwhile */
		if (s->dboid == MyDatabaseId)
			seen_current = true;

		alive = sweeper_alive(s->pid, s->dboid);
		if (IdemSweepInterval == 0)
			state = "off";
		else if (alive && s->sweeping)
			state = "sweeping";
		else if (s->failures > 0)
			state = "failing";
		else if (alive || IdemPreloaded)
			state = "idle";
		else
			state = "stopped";

		memset(nulls, false, sizeof(nulls));
		values[0] = CStringGetDatum(dbname);
		values[0] = DirectFunctionCall1(namein, values[0]);
		values[1] = Int32GetDatum((int32) s->pid);
		nulls[1] = !alive;
		values[2] = CStringGetTextDatum(state);
		values[3] = TimestampTzGetDatum(s->pass_started);
		nulls[3] = (s->pass_started == 0);
		values[4] = TimestampTzGetDatum(s->pass_finished);
		nulls[4] = (s->pass_finished == 0);
		values[5] = Int64GetDatum(s->removed_last_pass);
		nulls[5] = (s->pass_finished == 0);
		values[6] = Int64GetDatum(s->removed_total);
		values[7] = Int64GetDatum(waiting);
		nulls[7] = (s->dboid != MyDatabaseId || waiting < 0);
		values[8] = interval_from_us(s->longest_batch_us);
		nulls[8] = (s->pass_finished == 0);
		values[9] = TimestampTzGetDatum(s->next_pass);
		nulls[9] = (s->next_pass == 0 || IdemSweepInterval == 0);
		values[10] = CStringGetTextDatum(s->last_error);
		nulls[10] = (s->failures == 0 || s->last_error[0] == '\0');

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
							 values, nulls);
	}
	return (Datum) 0;
}
