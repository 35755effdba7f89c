/*-------------------------------------------------------------------------
 *
 * sweeper_control.c
 *	  The SQL functions that start, stop, wake and show the sweepers.
 *
 * Without preloading there is no launcher: idem_sweeper_start() registers a
 * sweeper for the current database, which stays until idem_sweeper_stop().
 * With it, the launcher runs every sweeper: idem_sweeper_start() only asks
 * it, through the status board, to sweep the current database now, and
 * idem_sweeper_wake(), which CREATE EXTENSION calls, does the same once the
 * transaction commits.  idem_sweeper_status() reads the board.
 *
 * src/sweeper_control.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "settings.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "idempotency.h"
#include "ledger.h"
#include "sweep_board.h"
#include "sweeper.h"

PG_FUNCTION_INFO_V1(idem_sweeper_start);
PG_FUNCTION_INFO_V1(idem_sweeper_stop);
PG_FUNCTION_INFO_V1(idem_sweeper_wake);
PG_FUNCTION_INFO_V1(idem_sweeper_status);

/* How long idem_sweeper_start and idem_sweeper_stop wait for the worker */
#define CONTROL_WAIT_MS			10000

/* Number of columns of idem_sweeper_status */
#define STATUS_COLS				11

/* Database to ask the launcher to sweep when the current transaction commits */
static Oid	wake_at_commit_db = InvalidOid;
static bool wake_callback_registered = false;

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
		SweepBoardRequestPass(MyDatabaseId);
		pid = SweepBoardSweeperPid(MyDatabaseId);
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

	if (!OidIsValid(SweeperFindExtension(&nspid, &xmin)))
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

	pid = SweepBoardSweeperPid(MyDatabaseId);
	if (pid != 0)
	{
		ereport(NOTICE,
				(errmsg("a sweeper already runs for database \"%s\"", dbname)));
		PG_RETURN_INT32(pid);
	}
	if (!SweepBoardHasRoom(MyDatabaseId))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("cannot start a sweeper: %d databases have one already",
						SweepBoardCapacity()),
				 errhint("Stop a sweeper with idem_sweeper_stop(), or add idempotency to shared_preload_libraries.")));

	if (!SweeperLaunch(MyDatabaseId, dbname, SWEEPER_NO_RUN, &handle))
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
		pid_t		running = SweepBoardSweeperPid(MyDatabaseId);

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

	pid = SweepBoardSweeperPid(MyDatabaseId);
	if (pid == 0)
		PG_RETURN_BOOL(false);

	if (kill(pid, SIGTERM) != 0 && errno != ESRCH)
		ereport(ERROR,
				(errmsg("could not signal the sweeper (process %d): %m", (int) pid)));

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CONTROL_WAIT_MS);
	while (SweepBoardSweeperPid(MyDatabaseId) == pid)
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

/* Ask the launcher to sweep once the transaction that created the extension commits */
static void
wake_at_commit(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (OidIsValid(wake_at_commit_db))
				SweepBoardRequestPass(wake_at_commit_db);
			wake_at_commit_db = InvalidOid;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_at_commit_db = InvalidOid;
			break;
		default:
			break;
	}
}

/*
 * idem_sweeper_wake() returns boolean
 *
 * Called at the end of CREATE EXTENSION: when the library is preloaded,
 * tells the launcher, as soon as the transaction commits, that the current
 * database has a ledger to sweep.  Returns whether a launcher will be told.
 */
Datum
idem_sweeper_wake(PG_FUNCTION_ARGS)
{
	if (!IdemPreloaded)
		PG_RETURN_BOOL(false);

	/* Attach now: the commit callback must not fail */
	SweepBoardAttach();
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_at_commit, NULL);
		wake_callback_registered = true;
	}
	wake_at_commit_db = MyDatabaseId;
	PG_RETURN_BOOL(true);
}

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

	if (!OidIsValid(SweeperFindExtension(&nspid, NULL)))
		return -1;
	relid = get_relname_relid(IDEM_LEDGER_NAME, nspid);
	if (!OidIsValid(relid) ||
		pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		return -1;
	return LedgerCountExpired(nspid);
}

/* What idem_sweeper_status says a database's sweeper is doing */
static const char *
sweeper_state(const SweepSlot *s, bool alive)
{
	if (IdemSweepInterval == 0)
		return "off";
	if (alive && s->sweeping)
		return "sweeping";
	if (s->failures > 0)
		return "failing";
	if (s->by_coordinator)
		return "by_coordinator";
	/* With a launcher a database is idle between passes, with no sweeper */
	if (alive || IdemPreloaded)
		return "idle";
	return "stopped";
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

	copy = SweepBoardCopy(&nslots);
	waiting = expired_waiting();

	for (int i = 0; i <= nslots; i++)
	{
		SweepSlot	blank;
		SweepSlot  *s;
		Datum		values[STATUS_COLS];
		bool		nulls[STATUS_COLS];
		char	   *dbname;
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

		alive = SweepBoardSweeperAlive(s);

		memset(nulls, false, sizeof(nulls));
		values[0] = CStringGetDatum(dbname);
		values[0] = DirectFunctionCall1(namein, values[0]);
		values[1] = Int32GetDatum((int32) s->pid);
		nulls[1] = !alive;
		values[2] = CStringGetTextDatum(sweeper_state(s, alive));
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
