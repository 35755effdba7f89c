/*-------------------------------------------------------------------------
 *
 * sweep_board.c
 *	  The sweepers' status board and the launcher's mailbox, in shared memory.
 *
 * The board holds one slot per database that has a sweeper: whether a pass
 * runs, what the last one removed, how it failed, when the next is due.
 * Sweepers write their own slot, the launcher writes when each database's
 * next pass is due, and idem_sweeper_status reads them all.
 *
 * It also holds the launcher's mailbox, so that nobody calls into the
 * launcher: the launcher leaves its latch here; a backend that wants a
 * database swept now (CREATE EXTENSION, idem_sweeper_start) queues the
 * database and sets that latch; a sweeper started by the launcher leaves
 * how its pass ended in its run slot, where the launcher reads it once the
 * sweeper has exited.
 *
 * When the library is preloaded the board's space is reserved at server
 * start; otherwise it is taken on first use from the spare shared memory
 * the server keeps for that purpose, as contrib/pg_prewarm does for its
 * own worker.
 *
 * src/sweep_board.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "settings.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "idempotency.h"
#include "sweep_board.h"

/* Status slots: one per database with a sweeper */
#define BOARD_SLOTS_PRELOADED	256
#define BOARD_SLOTS_DYNAMIC		16

typedef struct SweepBoard
{
	/* The launcher's mailbox */
	slock_t		mutex;			/* protects the mailbox */
	Latch	   *launcher;		/* the running launcher's latch, or NULL */
	bool		request_all;	/* the queue overflowed: probe every database */
	int			nrequests;
	Oid			requests[SWEEP_BOARD_REQUESTS]; /* databases to sweep now */
	SweepOutcome outcome[SWEEP_BOARD_RUNS]; /* per run slot, set by the
											 * sweeper */

	/* The status slots */
	LWLock		lock;			/* protects the slots */
	int			nslots;
	SweepSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} SweepBoard;

static SweepBoard *board = NULL;

/* Slots of the board: more when a launcher may sweep every database */
int
SweepBoardCapacity(void)
{
	return IdemPreloaded ? BOARD_SLOTS_PRELOADED : BOARD_SLOTS_DYNAMIC;
}

/* Shared memory the board needs, reserved when preloading */
Size
SweepBoardShmemSize(void)
{
	return add_size(offsetof(SweepBoard, slots),
					mul_size(SweepBoardCapacity(), sizeof(SweepSlot)));
}

/*
 * Attach to the board, creating it on first use.  Without preloading it
 * comes out of the server's spare shared memory.  Every function below
 * attaches by itself; this is for callers that must not fail later, in a
 * commit callback.
 */
void
SweepBoardAttach(void)
{
	bool		found;

	if (board != NULL)
		return;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	board = ShmemInitStruct("idempotency sweep board", SweepBoardShmemSize(),
							&found);
	if (!found)
	{
		memset(board, 0, SweepBoardShmemSize());
		SpinLockInit(&board->mutex);
		LWLockInitialize(&board->lock, LWLockNewTrancheId());
		board->nslots = SweepBoardCapacity();
	}
	LWLockRelease(AddinShmemInitLock);
	LWLockRegisterTranche(board->lock.tranche, "idempotency_sweepers");
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

/* True when the sweeper a copied slot names is still connected */
bool
SweepBoardSweeperAlive(const SweepSlot *slot)
{
	return sweeper_alive(slot->pid, slot->dboid);
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

/*
 * The slot a sweeper of database dboid would get: its own, else a free
 * one, else (without preloading) one whose sweeper has stopped.  When
 * preloaded the launcher frees the slots of dropped databases; without it
 * nobody does, and a stopped sweeper's slot is the only room left.  NULL
 * when there is no room.  Caller holds the board lock.
 */
static SweepSlot *
board_pick(Oid dboid)
{
	SweepSlot  *slot = board_find(dboid);

	if (slot == NULL)
		slot = board_find(InvalidOid);
	for (int i = 0; slot == NULL && !IdemPreloaded && i < board->nslots; i++)
	{
		if (!sweeper_alive(board->slots[i].pid, board->slots[i].dboid))
			slot = &board->slots[i];
	}
	return slot;
}

/* True when a sweeper of database dboid would find a status slot */
bool
SweepBoardHasRoom(Oid dboid)
{
	bool		room;

	SweepBoardAttach();
	LWLockAcquire(&board->lock, LW_SHARED);
	room = (board_pick(dboid) != NULL);
	LWLockRelease(&board->lock);
	return room;
}

/* Clear the exiting sweeper's pid from its slot */
static void
release_slot(int code, Datum arg)
{
	SweepSlot  *slot = (SweepSlot *) DatumGetPointer(arg);

	if (slot == NULL)
		return;
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	if (slot->pid == MyProcPid)
	{
		slot->pid = 0;
		slot->sweeping = false;
	}
	LWLockRelease(&board->lock);
}

/*
 * Take the status slot of a database for the calling sweeper, until it
 * exits.  Returns NULL when there is no room, or when another live sweeper
 * holds the slot (then *taken is set): two sweepers in one database would
 * only get in each other's way.
 */
SweepSlot *
SweepBoardClaim(Oid dboid, bool *taken)
{
	SweepSlot  *slot;

	*taken = false;
	SweepBoardAttach();
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot = board_pick(dboid);
	if (slot != NULL && slot->dboid == dboid && slot->pid != 0 &&
		slot->pid != MyProcPid && sweeper_alive(slot->pid, dboid))
	{
		LWLockRelease(&board->lock);
		*taken = true;
		return NULL;
	}
	if (slot != NULL)
	{
		if (slot->dboid != dboid)
		{
			memset(slot, 0, sizeof(SweepSlot));
			slot->dboid = dboid;
		}
		slot->pid = MyProcPid;
		slot->sweeping = false;
		slot->next_pass = 0;
	}
	LWLockRelease(&board->lock);
	before_shmem_exit(release_slot, PointerGetDatum(slot));
	return slot;
}

/* A pass begins: it is under way, and no next one is due yet */
void
SweepBoardPassStarted(SweepSlot *slot, TimestampTz started)
{
	if (slot == NULL)
		return;
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot->sweeping = true;
	slot->pass_started = started;
	slot->next_pass = 0;
	LWLockRelease(&board->lock);
}

/* A batch was committed: count its keys at once */
void
SweepBoardBatchDone(SweepSlot *slot, int64 removed)
{
	if (slot == NULL || removed == 0)
		return;
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot->removed_total += removed;
	LWLockRelease(&board->lock);
}

/* A pass reached the end of the ledger: publish it, and forget past failures */
void
SweepBoardPassDone(SweepSlot *slot, int64 removed, int64 longest_batch_us,
				   bool by_coordinator)
{
	if (slot == NULL)
		return;
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot->pass_finished = GetCurrentTimestamp();
	slot->removed_last_pass = removed;
	slot->longest_batch_us = longest_batch_us;
	slot->by_coordinator = by_coordinator;
	slot->failures = 0;
	slot->last_error[0] = '\0';
	LWLockRelease(&board->lock);
}

/*
 * Whether a failure is worth logging: yes the first time, no when the
 * previous pass failed with the same message, so that a sweeper that keeps
 * failing backs off without filling the log.  Without a slot, yes.
 */
bool
SweepBoardFailureIsNew(SweepSlot *slot, const char *message)
{
	bool		repeated;

	if (slot == NULL)
		return true;
	LWLockAcquire(&board->lock, LW_SHARED);
	repeated = (slot->failures > 0 && message != NULL &&
				strncmp(slot->last_error, message,
						SWEEP_BOARD_ERROR_LEN - 1) == 0);
	LWLockRelease(&board->lock);
	return !repeated;
}

/* Count a failed pass and keep its message */
void
SweepBoardPassFailed(SweepSlot *slot, const char *message)
{
	if (slot == NULL)
		return;
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot->failures++;
	strlcpy(slot->last_error, message ? message : "unknown error",
			SWEEP_BOARD_ERROR_LEN);
	LWLockRelease(&board->lock);
}

/* A pass is over, however it ended */
void
SweepBoardPassOver(SweepSlot *slot)
{
	if (slot == NULL)
		return;
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot->sweeping = false;
	LWLockRelease(&board->lock);
}

/* Publish when the next pass in a database is due (0: none) */
void
SweepBoardSetNextPass(Oid dboid, TimestampTz next_pass)
{
	SweepSlot  *slot;

	SweepBoardAttach();
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot = board_find(dboid);
	if (slot != NULL)
		slot->next_pass = next_pass;
	LWLockRelease(&board->lock);
}

/*
 * Forget the status of a database: it was dropped, or lost the extension.
 * A slot that another live process holds is left to it.
 */
void
SweepBoardForget(Oid dboid)
{
	SweepSlot  *slot;

	SweepBoardAttach();
	LWLockAcquire(&board->lock, LW_EXCLUSIVE);
	slot = board_find(dboid);
	if (slot != NULL && (slot->pid == 0 || slot->pid == MyProcPid))
		memset(slot, 0, sizeof(SweepSlot));
	LWLockRelease(&board->lock);
}

/* Pid of the sweeper connected to a database, or 0 */
pid_t
SweepBoardSweeperPid(Oid dboid)
{
	SweepSlot  *slot;
	pid_t		pid = 0;

	SweepBoardAttach();
	LWLockAcquire(&board->lock, LW_SHARED);
	slot = board_find(dboid);
	if (slot != NULL && sweeper_alive(slot->pid, dboid))
		pid = slot->pid;
	LWLockRelease(&board->lock);
	return pid;
}

/* A copy of every slot, in the current memory context */
SweepSlot *
SweepBoardCopy(int *nslots)
{
	SweepSlot  *copy;

	SweepBoardAttach();
	*nslots = board->nslots;
	copy = palloc(sizeof(SweepSlot) * board->nslots);
	LWLockAcquire(&board->lock, LW_SHARED);
	memcpy(copy, board->slots, sizeof(SweepSlot) * board->nslots);
	LWLockRelease(&board->lock);
	return copy;
}

/* The launcher leaves its latch here while it runs (NULL when it exits) */
void
SweepBoardSetLauncher(Latch *latch)
{
	SweepBoardAttach();
	SpinLockAcquire(&board->mutex);
	board->launcher = latch;
	SpinLockRelease(&board->mutex);
}

/*
 * Ask the launcher to sweep a database now, and wake it: the database
 * gained the extension, or idem_sweeper_start() was called.  Without a
 * launcher the request waits for none.
 */
void
SweepBoardRequestPass(Oid dboid)
{
	Latch	   *latch;
	bool		queued = false;

	SweepBoardAttach();
	SpinLockAcquire(&board->mutex);
	for (int i = 0; i < board->nrequests; i++)
	{
		if (board->requests[i] == dboid)
			queued = true;
	}
	if (!queued)
	{
		if (board->nrequests < SWEEP_BOARD_REQUESTS)
			board->requests[board->nrequests++] = dboid;
		else
			board->request_all = true;
	}
	latch = board->launcher;
	SpinLockRelease(&board->mutex);

	if (latch != NULL)
		SetLatch(latch);
}

/*
 * The launcher takes the requests: the databases go into dboids (room for
 * SWEEP_BOARD_REQUESTS), and *all says the queue overflowed.  Returns how
 * many there were.
 */
int
SweepBoardTakeRequests(Oid *dboids, bool *all)
{
	int			n;

	SweepBoardAttach();
	SpinLockAcquire(&board->mutex);
	n = board->nrequests;
	memcpy(dboids, board->requests, sizeof(Oid) * n);
	*all = board->request_all;
	board->nrequests = 0;
	board->request_all = false;
	SpinLockRelease(&board->mutex);
	return n;
}

/* The launcher is about to start a sweeper in a run slot: no report yet */
void
SweepBoardRunStarting(int run)
{
	SweepBoardAttach();
	SpinLockAcquire(&board->mutex);
	board->outcome[run] = SWEEP_UNKNOWN;
	SpinLockRelease(&board->mutex);
}

/*
 * A sweeper says how its pass ended, for the launcher that started it in
 * run slot run; a sweeper of idem_sweeper_start has none (run < 0).
 */
void
SweepBoardRunEnded(int run, SweepOutcome outcome)
{
	if (run < 0 || run >= SWEEP_BOARD_RUNS)
		return;
	SweepBoardAttach();
	SpinLockAcquire(&board->mutex);
	board->outcome[run] = outcome;
	SpinLockRelease(&board->mutex);
}

/* How the pass in a run slot ended, as its sweeper reported it */
SweepOutcome
SweepBoardRunOutcome(int run)
{
	SweepOutcome outcome;

	SweepBoardAttach();
	SpinLockAcquire(&board->mutex);
	outcome = board->outcome[run];
	SpinLockRelease(&board->mutex);
	return outcome;
}
