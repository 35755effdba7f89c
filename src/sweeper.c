/*-------------------------------------------------------------------------
 *
 * sweeper.c
 *	  The sweeper: a background worker that deletes a database's expired keys.
 *
 * A sweeper connects to one database and runs passes over its ledger: each
 * pass walks the ledger in physical order, one short batch per transaction
 * (LedgerSweepBatch), so a foreground caller never waits on the sweeper for
 * longer than one batch.  After each batch it sleeps, outside any
 * transaction, as long as idempotency.sweep_rate_limit asks: unthrottled, a
 * sweep takes a whole core and much WAL from the foreground while it runs
 * (bench/sweep.sh).  Before each batch it makes sure the extension is
 * still there and not being dropped, and that nobody needs the database to
 * itself (DROP DATABASE, ALTER DATABASE, CREATE DATABASE ... TEMPLATE); when
 * someone does, it steps aside at once instead of making them wait.
 *
 * A sweeper is one of two kinds:
 *	- started by the launcher (launcher.c) in one of its run slots: it runs
 *	  one pass, leaves how the pass ended on the status board and exits, so
 *	  that it holds no connection between passes;
 *	- started by idem_sweeper_start() (sweeper_control.c), when the library
 *	  is not preloaded: it stays connected and runs a pass whenever its
 *	  schedule says one is due, until idem_sweeper_stop(), SIGTERM, DROP
 *	  EXTENSION or DROP DATABASE.
 * Both are scheduled by the same rules (sweep_schedule.c): the launcher for
 * the first kind, the sweeper itself for the second.
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
 * The sweeper publishes its progress on the status board (sweep_board.c)
 * and calls nothing above it.
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
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "settings.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
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
#include "sweep_board.h"
#include "sweep_schedule.h"
#include "sweeper.h"

#define SWEEPER_TYPE			"idempotency sweeper"

/* A sweeper that waits between passes checks this often whether to leave */
#define IDLE_POLL_MS			1000

/*
 * After a pass, the sweeper vacuums the ledger when at least this share of it,
 * and at least this many rows, are dead
 */
#define VACUUM_DEAD_SHARE		0.1
#define VACUUM_MIN_DEAD			1000

/* How a pass ended, in more detail than its schedule needs */
typedef enum PassEnd
{
	PASS_DONE,					/* reached the end of the ledger */
	PASS_NO_EXTENSION,			/* the database does not have the extension */
	PASS_EXTENSION_BUSY,		/* the extension is being dropped or altered */
	PASS_DATABASE_BUSY,			/* someone needs the database to itself */
	PASS_OFF,					/* sweep_interval was set to 0 */
	PASS_CANCELED,				/* pg_cancel_backend */
	PASS_OTHER_SWEEPER,			/* another sweeper runs in the database */
	PASS_FAILED					/* an error ended the pass */
} PassEnd;

/* State of the sweeper process */
typedef struct SweeperState
{
	char		dbname[NAMEDATALEN];
	int			run;			/* launcher run slot, or SWEEPER_NO_RUN */
	SweepSlot  *slot;			/* our status slot, or NULL when none free */
	MemoryContext pass_context; /* reset at the start of each pass */
	SweepSchedule schedule;		/* our passes, when we schedule them */
} SweeperState;

static SweeperState sweeper;

/*
 * True when another session holds or waits for a lock on the database that
 * a new connection could not get: DROP DATABASE, ALTER DATABASE RENAME or
 * SET TABLESPACE, CREATE DATABASE using it as template.  All of them give up
 * after five seconds while other sessions are connected, so a sweeper leaves
 * as soon as it sees this, and the launcher starts none meanwhile.
 */
bool
SweeperDatabaseIsBusy(Oid dboid)
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
 * returned too, when xmin is not NULL, so that a caller can tell whether
 * its own transaction created it.
 */
Oid
SweeperFindExtension(Oid *nspid, TransactionId *xmin)
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
	Oid			extoid = SweeperFindExtension(&nspid, NULL);
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
	if (SweeperFindExtension(&again_nspid, NULL) != extoid)
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
 * extension is gone or busy, with *end saying which.  On a Citus worker
 * whose ledger is distributed, deletes nothing and sets *by_coordinator:
 * the coordinator's sweeper sweeps every shard.
 */
static bool
sweep_batch(ItemPointer cursor, bool *reached_end, uint64 *removed,
			bool *by_coordinator, PassEnd *end)
{
	Oid			nspid;
	bool		busy;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	nspid = lock_extension_schema(&busy);
	if (OidIsValid(nspid))
	{
		*by_coordinator = LedgerSweptByCoordinator(nspid);
		if (*by_coordinator)
		{
			*removed = 0;
			*reached_end = true;
		}
		else
			*removed = LedgerSweepBatch(nspid, IdemSweepBatchSize, cursor,
										reached_end);
	}

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
 * Hold the sweep to idempotency.sweep_rate_limit keys per second: after a
 * batch that began at batch_start and removed n keys, sleep until n keys'
 * worth of time at that rate has passed since it began, so that a pass of
 * M keys lasts at least M / limit seconds.  The sleep holds no transaction,
 * lock or snapshot.  A signal wakes it at once: SIGTERM ends the process, a
 * cancel ends the pass, and a reload applies the new limit to the rest of
 * the wait.  It also looks each second whether someone needs the database.
 * Returns false when the pass must end, with *end saying why.
 */
static bool
sweep_throttle(TimestampTz batch_start, uint64 n, PassEnd *end)
{
	for (;;)
	{
		TimestampTz due;
		long		wait_ms;

		if (IdemSweepRateLimit == 0 || n == 0)
			return true;
		due = batch_start +
			(TimestampTz) ((double) n * USECS_PER_SEC / IdemSweepRateLimit);
		wait_ms = Min(SweepScheduleMsUntil(due), IDLE_POLL_MS);
		if (wait_ms == 0)
			return true;

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);

		if (sweeper_take_cancel())
		{
			*end = PASS_CANCELED;
			return false;
		}
		(void) SweepScheduleReload();
		if (IdemSweepInterval == 0)
		{
			*end = PASS_OFF;
			return false;
		}
		if (SweeperDatabaseIsBusy(MyDatabaseId))
		{
			*end = PASS_DATABASE_BUSY;
			return false;
		}
	}
}

/*
 * In PG_CATCH: report the error unless the last pass failed the same way
 * (a sweeper that keeps failing backs off without filling the log), leave
 * the failed transaction as autovacuum does, and say how the pass ends.
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
	if (!canceled &&
		(sweeper.slot != NULL ?
		 SweepBoardFailureIsNew(sweeper.slot, edata->message) :
		 sweeper.schedule.streak == 0))
		EmitErrorReport();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	RESUME_INTERRUPTS();

	if (canceled)
		return PASS_CANCELED;
	SweepBoardPassFailed(sweeper.slot, edata->message);
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
 * committed on its own and held to idempotency.sweep_rate_limit.  Errors end
 * the pass; its schedule backs off.
 */
static PassEnd
sweep_pass(void)
{
	ItemPointerData cursor;
	volatile PassEnd end = PASS_DONE;
	volatile int64 removed = 0;
	volatile int64 longest_us = 0;
	volatile bool by_coordinator = false;
	ErrorContextCallback errcallback;

	MemoryContextReset(sweeper.pass_context);
	ItemPointerSet(&cursor, 0, 0);
	SweepBoardPassStarted(sweeper.slot, GetCurrentTimestamp());
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
		PassEnd		throttled_end = PASS_DONE;

		if (sweeper_take_cancel())
		{
			end = PASS_CANCELED;
			break;
		}
		(void) SweepScheduleReload();
		if (IdemSweepInterval == 0)
		{
			end = PASS_OFF;
			break;
		}
		if (SweeperDatabaseIsBusy(MyDatabaseId))
		{
			end = PASS_DATABASE_BUSY;
			break;
		}

		batch_start = GetCurrentTimestamp();
		PG_TRY();
		{
			PassEnd		batch_end = PASS_DONE;
			bool		at_end = false;
			bool		elsewhere = false;
			uint64		n = 0;

			go_on = sweep_batch(&cursor, &at_end, &n, &elsewhere, &batch_end);
			reached_end = at_end;
			by_coordinator = elsewhere;
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
		SweepBoardBatchDone(sweeper.slot, batch_removed);
		report_progress(removed);

		/* The last batch is held to the limit too, as the pass is */
		if (!sweep_throttle(batch_start, batch_removed, &throttled_end))
		{
			end = throttled_end;
			break;
		}

		/* A batch that removed nothing can only be the last one */
		if (reached_end || batch_removed == 0)
			break;
	}

	/* Let autovacuum, and the check below, see the dead rows at once */
	pgstat_report_stat(true);

	/* The deletions are over: publish the pass */
	if (end == PASS_DONE)
		SweepBoardPassDone(sweeper.slot, removed, longest_us, by_coordinator);

	/* Then vacuum the ledger, if the pass left much to vacuum */
	if (end == PASS_DONE && removed > 0)
	{
		if (SweeperDatabaseIsBusy(MyDatabaseId))
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
	SweepBoardPassOver(sweeper.slot);

	elog(DEBUG1, "idempotency sweeper of database \"%s\": pass removed " INT64_FORMAT " keys",
		 sweeper.dbname, (int64) removed);
	return end;
}

/* What the schedule makes of how a pass ended */
static SweepOutcome
outcome_of(PassEnd end)
{
	switch (end)
	{
		case PASS_DONE:
			return SWEEP_DONE;
		case PASS_FAILED:
			return SWEEP_FAILED;
		case PASS_NO_EXTENSION:
			return SWEEP_NO_EXTENSION;
		case PASS_EXTENSION_BUSY:
		case PASS_DATABASE_BUSY:
		case PASS_OFF:
		case PASS_CANCELED:
		case PASS_OTHER_SWEEPER:
			return SWEEP_YIELDED;
	}
	return SWEEP_UNKNOWN;
}

/*
 * Exit after a pass, or instead of one; never returns.  A database without
 * the extension has no status to keep, and the launcher, if it started us,
 * reads on the board how the pass ended.  The connection goes with the
 * process.
 */
static void
sweeper_leave(PassEnd end)
{
	if (end == PASS_NO_EXTENSION)
		SweepBoardForget(MyDatabaseId);
	SweepBoardRunEnded(sweeper.run, outcome_of(end));
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
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
	extoid = RecoveryInProgress() ? InvalidOid :
		SweeperFindExtension(&nspid, NULL);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return OidIsValid(extoid);
}

/*
 * Take the status slot of our database; leave when another sweeper has it.
 * Without a slot a sweeper of idem_sweeper_start could be neither seen nor
 * stopped, so it does not run; one of the launcher's runs, as the launcher
 * keeps track of it.
 */
static void
sweeper_claim_slot(void)
{
	bool		taken;

	sweeper.slot = SweepBoardClaim(MyDatabaseId, &taken);
	if (taken)
	{
		elog(DEBUG1, "idempotency sweeper of database \"%s\" exits: another sweeper runs there",
			 sweeper.dbname);
		sweeper_leave(PASS_OTHER_SWEEPER);
	}
	if (sweeper.slot != NULL)
		return;
	if (sweeper.run == SWEEPER_NO_RUN)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("idempotency sweeper of database \"%s\" cannot start: %d databases have one already",
						sweeper.dbname, SweepBoardCapacity())));
	elog(DEBUG1, "idempotency sweeper of database \"%s\" runs without a status slot: all %d are taken",
		 sweeper.dbname, SweepBoardCapacity());
}

/*
 * Between two passes of a sweeper of idem_sweeper_start: wait until its
 * schedule says the next is due, publishing when that is, holding no lock,
 * and checking each second whether it must leave the database.  A pass
 * that ended so leaves at once.
 */
static void
wait_for_next_pass(PassEnd end)
{
	TimestampTz published = -1;

	switch (end)
	{
		case PASS_NO_EXTENSION:
			ereport(LOG,
					(errmsg("idempotency sweeper of database \"%s\" exits: the extension was dropped",
							sweeper.dbname)));
			sweeper_leave(end);
			break;
		case PASS_DATABASE_BUSY:
			ereport(LOG,
					(errmsg("idempotency sweeper of database \"%s\" exits: another session needs the database to itself",
							sweeper.dbname)));
			sweeper_leave(end);
			break;
		default:
			break;
	}
	SweepScheduleRecord(&sweeper.schedule, outcome_of(end));
	pgstat_report_activity(STATE_IDLE, NULL);

	for (;;)
	{
		TimestampTz due = 0;
		long		wait_ms = IDLE_POLL_MS;

		/* A cancel between passes has no pass to end */
		(void) sweeper_take_cancel();
		(void) SweepScheduleReload();
		if (SweeperDatabaseIsBusy(MyDatabaseId))
		{
			ereport(LOG,
					(errmsg("idempotency sweeper of database \"%s\" exits: another session needs the database to itself",
							sweeper.dbname)));
			sweeper_leave(PASS_DATABASE_BUSY);
		}
		if (IdemSweepInterval > 0)
			due = SweepScheduleDue(&sweeper.schedule);
		if (due != published)
		{
			SweepBoardSetNextPass(MyDatabaseId, due);
			published = due;
		}
		if (IdemSweepInterval > 0)
		{
			wait_ms = Min(wait_ms, SweepScheduleMsUntil(due));
			if (wait_ms == 0)
				return;
		}

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Entry point of a sweeper.  main_arg is the database OID; bgw_extra holds
 * the launcher's run slot, or SWEEPER_NO_RUN for a sweeper of
 * idem_sweeper_start.
 */
void
IdemSweeperMain(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);

	memcpy(&sweeper.run, MyBgworkerEntry->bgw_extra, sizeof(int));
	sweeper.slot = NULL;
	SweepScheduleNow(&sweeper.schedule);

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

	/* Nothing to sweep here: let go of the database */
	if (!sweeper_has_extension())
		sweeper_leave(PASS_NO_EXTENSION);
	sweeper_claim_slot();

	RESUME_CANCEL_INTERRUPTS();

	/* Started by the launcher: one pass, then report and leave */
	if (sweeper.run != SWEEPER_NO_RUN)
		sweeper_leave(sweep_pass());

	/* Started by idem_sweeper_start: passes as they fall due, until stopped */
	for (;;)
		wait_for_next_pass(IdemSweepInterval > 0 ? sweep_pass() : PASS_OFF);
}

/*
 * Register a sweeper for a database.  run is the launcher's run slot, or
 * SWEEPER_NO_RUN for a sweeper that stays until stopped.  The launcher
 * restarts its own sweepers, so the postmaster never does: a sweeper whose
 * database was dropped must not come back.
 */
bool
SweeperLaunch(Oid dboid, const char *dbname, int run,
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
