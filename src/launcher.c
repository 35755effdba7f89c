/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: runs a sweeper in every database that has the extension.
 *
 * Design
 * ------
 * With shared_preload_libraries = 'idempotency' the postmaster starts one
 * launcher.  It is connected to no database: it reads pg_database (a shared
 * catalog) and keeps a schedule, in its own memory, of every database that
 * accepts connections and is not a template.
 *
 * The launcher does not keep a worker connected to each database.  Like the
 * autovacuum launcher, it starts a sweeper for one pass when a database's
 * pass is due; the sweeper connects, sweeps, leaves how the pass ended in
 * a run slot of the status board (sweep_board.c), and exits.  Between
 * passes no process is connected to the database, so:
 *	- DROP DATABASE, ALTER DATABASE ... RENAME and CREATE DATABASE ...
 *	  TEMPLATE never find a sweeper in their way.  One that arrives during a
 *	  pass finds the sweeper gone within one batch: the sweeper checks before
 *	  each batch whether someone waits for the database's lock, and leaves;
 *	  the launcher checks that lock before it starts a sweeper, and every
 *	  WATCH_MS while one runs, and stops a sweeper caught in a longer step;
 *	- DROP EXTENSION needs nothing: the next pass finds no extension, says
 *	  so, and exits with code 0;
 *	- sweepers use background worker slots only while they sweep, and at
 *	  most SWEEP_BOARD_RUNS at a time, so they never crowd out parallel
 *	  query however many databases there are.
 *
 * The schedule of a database follows the outcome of its last pass, by the
 * rules of sweep_schedule.c, which a sweeper of idem_sweeper_start follows
 * too: one idempotency.sweep_interval after a pass that swept or stepped
 * aside; after failures (an error, logged once by the sweeper, or a sweeper
 * that died or could not connect) and after finding no extension, a wait
 * that doubles from one interval up to ten minutes or the interval,
 * whichever is longer.  CREATE EXTENSION cuts the wait short, see below.
 * A new database is probed at once.  Sweepers are never restarted by the
 * postmaster (BGW_NEVER_RESTART): the launcher decides, so a sweeper of a
 * dropped database cannot come back in a loop.  The launcher itself is
 * restarted by the postmaster after a crash or SIGTERM; it terminates its
 * sweepers when it exits.
 *
 * CREATE EXTENSION ends with idem_sweeper_wake(), which queues the database
 * in the launcher's mailbox on the status board when the transaction
 * commits and sets the latch the launcher left there, so the new ledger
 * gets its sweeper right away rather than after the back-off.  A database created from a template that has the
 * extension is seen when pg_database is next read, at most RESCAN_MS later.
 *
 * Settings are read again on SIGHUP: a new sweep_interval moves every
 * pending pass at once, retries included, and 0 stops launching passes
 * (running sweepers stop after their current batch).  Without preloading
 * there is no launcher; idem_sweeper_start() runs a sweeper for one
 * database (see sweeper_control.c).
 *
 * The launcher calls down into the sweeper (to register one), the
 * schedule and the board; nothing calls into the launcher.
 *
 * src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "settings.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "idempotency.h"
#include "launcher.h"
#include "sweep_board.h"
#include "sweep_schedule.h"
#include "sweeper.h"

#define LAUNCHER_TYPE			"idempotency launcher"

/* Seconds before the postmaster restarts a launcher that died */
#define LAUNCHER_RESTART_SECS	5

/* pg_database is read at least this often, to see new and dropped databases */
#define RESCAN_MS				10000

/* While sweepers run, the launcher checks this often that nobody waits for them */
#define WATCH_MS				500

/* Longest nap of the launcher */
#define MAX_NAP_MS				60000

/* The launcher's schedule of one database */
typedef struct LauncherDb
{
	Oid			dboid;			/* hash key */
	NameData	dbname;
	bool		seen;			/* found in the last read of pg_database */
	bool		has_extension;	/* the last pass found the extension */
	SweepSchedule schedule;		/* when its next pass is due */
	TimestampTz published;		/* next pass as last shown in the status */
	int			run;			/* run slot of its running sweeper, or -1 */
	BackgroundWorkerHandle *handle;
	bool		terminating;	/* we asked that sweeper to stop */
} LauncherDb;

static HTAB *databases = NULL;
static bool run_busy[SWEEP_BOARD_RUNS];

/*
 * Register the launcher with the postmaster; called from _PG_init while the
 * library is being preloaded.
 */
void
IdemRegisterLauncher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = LAUNCHER_RESTART_SECS;
	strlcpy(worker.bgw_library_name, "idempotency", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "IdemLauncherMain", BGW_MAXLEN);
	strlcpy(worker.bgw_name, LAUNCHER_TYPE, BGW_MAXLEN);
	strlcpy(worker.bgw_type, LAUNCHER_TYPE, BGW_MAXLEN);
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;

	RegisterBackgroundWorker(&worker);
}

/* True when a pass is due in a database that has no sweeper running */
static bool
any_due(void)
{
	HASH_SEQ_STATUS seq;
	LauncherDb *db;
	TimestampTz now = GetCurrentTimestamp();

	if (IdemSweepInterval == 0)
		return false;
	hash_seq_init(&seq, databases);
	while ((db = hash_seq_search(&seq)) != NULL)
	{
		if (db->handle == NULL && db->seen && SweepScheduleDue(&db->schedule) <= now)
		{
			hash_seq_term(&seq);
			return true;
		}
	}
	return false;
}

/* Forget a database that is gone: its schedule and its status */
static void
forget_database(LauncherDb *db)
{
	Oid			dboid = db->dboid;

	if (db->handle != NULL)
		pfree(db->handle);
	hash_search(databases, &dboid, HASH_REMOVE, NULL);
	SweepBoardForget(dboid);
}

/*
 * Read pg_database: add new databases (due at once), and drop the schedule
 * of databases that were dropped, refuse connections now, or became
 * templates.  A sweeper still running in one of them is terminated.
 */
static void
scan_databases(void)
{
	HASH_SEQ_STATUS seq;
	LauncherDb *db;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	hash_seq_init(&seq, databases);
	while ((db = hash_seq_search(&seq)) != NULL)
		db->seen = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();

	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database pgdb = (Form_pg_database) GETSTRUCT(tup);
		bool		found;

		if (!pgdb->datallowconn || pgdb->datistemplate ||
			database_is_invalid_form(pgdb))
			continue;

		db = hash_search(databases, &pgdb->oid, HASH_ENTER, &found);
		if (!found)
		{
			db->has_extension = false;
			SweepScheduleNow(&db->schedule);
			db->published = 0;
			db->run = -1;
			db->handle = NULL;
			db->terminating = false;
		}
		db->dbname = pgdb->datname;
		db->seen = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	hash_seq_init(&seq, databases);
	while ((db = hash_seq_search(&seq)) != NULL)
	{
		if (db->seen)
			continue;
		if (db->handle == NULL)
			forget_database(db);
		else if (!db->terminating)
		{
			/* forgotten once it has stopped */
			TerminateBackgroundWorker(db->handle);
			db->terminating = true;
		}
	}
}

/* Take the wake-up requests: those databases are due now */
static bool
take_wake_requests(void)
{
	Oid			wake[SWEEP_BOARD_REQUESTS];
	int			nwake;
	bool		wake_all;
	LauncherDb *db;

	nwake = SweepBoardTakeRequests(wake, &wake_all);
	if (nwake == 0 && !wake_all)
		return false;

	/* A database created a moment ago may not be known yet */
	scan_databases();

	if (wake_all)
	{
		HASH_SEQ_STATUS seq;

		hash_seq_init(&seq, databases);
		while ((db = hash_seq_search(&seq)) != NULL)
		{
			if (!db->has_extension)
				SweepScheduleNow(&db->schedule);
		}
	}
	for (int i = 0; i < nwake; i++)
	{
		db = hash_search(databases, &wake[i], HASH_FIND, NULL);
		if (db != NULL)
			SweepScheduleNow(&db->schedule);
	}
	return true;
}

/* Schedule the next pass of a database from how its sweeper's pass ended */
static void
pass_ended(LauncherDb *db, SweepOutcome outcome)
{
	if (outcome == SWEEP_DONE)
		db->has_extension = true;
	else if (outcome == SWEEP_NO_EXTENSION)
		db->has_extension = false;
	SweepScheduleRecord(&db->schedule, outcome);
}

/* Notice the sweepers that have exited, and read how their pass ended */
static void
reap_sweepers(void)
{
	HASH_SEQ_STATUS seq;
	LauncherDb *db;

	hash_seq_init(&seq, databases);
	while ((db = hash_seq_search(&seq)) != NULL)
	{
		pid_t		pid;
		BgwHandleStatus status;
		SweepOutcome outcome;

		if (db->handle == NULL)
			continue;
		status = GetBackgroundWorkerPid(db->handle, &pid);
		if (status == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		if (status != BGWH_STOPPED)
			continue;

		outcome = SweepBoardRunOutcome(db->run);

		run_busy[db->run] = false;
		db->run = -1;
		pfree(db->handle);
		db->handle = NULL;
		db->terminating = false;

		if (!db->seen)
			forget_database(db);
		else
			pass_ended(db, outcome);
	}
}

/*
 * A sweeper steps aside by itself between two batches when someone needs its
 * database (DROP DATABASE and the like, which give up after five seconds);
 * this covers the longer steps, a slow batch or the vacuum after a pass: the
 * sweeper is told to stop.  Returns whether any sweeper is running.
 */
static bool
watch_sweepers(void)
{
	HASH_SEQ_STATUS seq;
	LauncherDb *db;
	bool		running = false;

	hash_seq_init(&seq, databases);
	while ((db = hash_seq_search(&seq)) != NULL)
	{
		if (db->handle == NULL)
			continue;
		running = true;
		if (!db->terminating && SweeperDatabaseIsBusy(db->dboid))
		{
			TerminateBackgroundWorker(db->handle);
			db->terminating = true;
		}
	}
	return running;
}

/*
 * Start the sweepers whose pass is due, earliest first, while run slots are
 * free.  Returns the time until the next due pass, in milliseconds.
 */
static long
launch_due_sweepers(void)
{
	static bool warned_no_worker = false;
	TimestampTz now = GetCurrentTimestamp();
	long		nap = MAX_NAP_MS;

	if (IdemSweepInterval == 0)
		return MAX_NAP_MS;

	for (;;)
	{
		HASH_SEQ_STATUS seq;
		LauncherDb *db;
		LauncherDb *earliest = NULL;
		int			run = -1;

		for (int i = 0; i < SWEEP_BOARD_RUNS; i++)
		{
			if (!run_busy[i])
			{
				run = i;
				break;
			}
		}

		hash_seq_init(&seq, databases);
		while ((db = hash_seq_search(&seq)) != NULL)
		{
			if (db->handle != NULL || !db->seen)
				continue;
			if (earliest == NULL ||
				SweepScheduleDue(&db->schedule) <
				SweepScheduleDue(&earliest->schedule))
				earliest = db;
		}
		if (earliest == NULL)
			break;
		if (SweepScheduleDue(&earliest->schedule) > now || run < 0)
		{
			if (run >= 0)
				nap = Min(nap, SweepScheduleMsUntil(SweepScheduleDue(&earliest->schedule)));
			break;
		}

		db = earliest;
		if (SweeperDatabaseIsBusy(db->dboid))
		{
			/* DROP DATABASE or the like is under way: stay out of its way */
			SweepScheduleRecord(&db->schedule, SWEEP_YIELDED);
			continue;
		}

		SweepBoardRunStarting(run);
		if (!SweeperLaunch(db->dboid, NameStr(db->dbname), run, &db->handle))
		{
			db->handle = NULL;
			if (!warned_no_worker)
				ereport(LOG,
						(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
						 errmsg("idempotency launcher could not start a sweeper: no background worker slot is free"),
						 errhint("Raise max_worker_processes.")));
			warned_no_worker = true;
			SweepScheduleRecord(&db->schedule, SWEEP_YIELDED);
			continue;
		}
		warned_no_worker = false;
		db->run = run;
		run_busy[run] = true;
		/* The sweeper clears the next pass it shows; publish it again after */
		db->published = 0;
	}
	return nap;
}

/*
 * Show in idem_sweeper_status when each database's next pass is due; the
 * board keeps it for the databases whose sweepers took a status slot, and
 * ignores the others.
 */
static void
publish_schedule(void)
{
	HASH_SEQ_STATUS seq;
	LauncherDb *db;

	hash_seq_init(&seq, databases);
	while ((db = hash_seq_search(&seq)) != NULL)
	{
		TimestampTz due;

		if (db->handle != NULL)
			continue;
		due = SweepScheduleDue(&db->schedule);
		if (due != db->published)
		{
			SweepBoardSetNextPass(db->dboid, due);
			db->published = due;
		}
	}
}

/* On exit, stop our sweepers and tell backends nobody listens any more */
static void
launcher_on_exit(int code, Datum arg)
{
	if (databases != NULL)
	{
		HASH_SEQ_STATUS seq;
		LauncherDb *db;

		hash_seq_init(&seq, databases);
		while ((db = hash_seq_search(&seq)) != NULL)
		{
			if (db->handle != NULL)
				TerminateBackgroundWorker(db->handle);
		}
	}
	SweepBoardSetLauncher(NULL);
}

/*
 * Entry point of the launcher.
 */
void
IdemLauncherMain(Datum main_arg)
{
	HASHCTL		ctl;
	TimestampTz last_scan;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);

	/*
	 * The launcher runs no statement that a cancel (pg_cancel_backend) could
	 * end.  Raised as an error it would end the launcher, and its exit would
	 * stop every running sweeper: ignore it, as background workers without a
	 * database connection do.
	 */
	pqsignal(SIGINT, SIG_IGN);
	BackgroundWorkerUnblockSignals();

	/* No database: pg_database is a shared catalog */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	SetConfigOption("application_name", LAUNCHER_TYPE,
					PGC_USERSET, PGC_S_SESSION);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(LauncherDb);
	databases = hash_create("idempotency launcher databases", 64, &ctl,
							HASH_ELEM | HASH_BLOBS);
	memset(run_busy, 0, sizeof(run_busy));

	SweepBoardSetLauncher(MyLatch);
	before_shmem_exit(launcher_on_exit, (Datum) 0);

	ereport(LOG, (errmsg("idempotency launcher started")));

	scan_databases();
	last_scan = GetCurrentTimestamp();

	for (;;)
	{
		long		nap;

		CHECK_FOR_INTERRUPTS();
		(void) SweepScheduleReload();

		reap_sweepers();

		/*
		 * Read pg_database again before starting sweepers, so as not to
		 * start one for a database dropped a moment ago, and now and then
		 * to see new databases.
		 */
		if (take_wake_requests())
			last_scan = GetCurrentTimestamp();
		else if (any_due() ||
				 TimestampDifferenceExceeds(last_scan, GetCurrentTimestamp(),
											RESCAN_MS))
		{
			scan_databases();
			last_scan = GetCurrentTimestamp();
		}
		nap = launch_due_sweepers();
		publish_schedule();

		nap = Min(nap, RESCAN_MS);
		if (watch_sweepers())
			nap = Min(nap, WATCH_MS);
		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(nap, 1L), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
