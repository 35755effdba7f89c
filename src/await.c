/*-------------------------------------------------------------------------
 *
 * await.c
 *	  Waiting for a key to settle: idem_begin's await.
 *
 * A begin that meets another session's committed attempt in progress may
 * wait, up to its await interval, for the key to settle: the attempt
 * finished, released, taken over, or its owner gone.  The waiting costs no
 * CPU.  With the library preloaded, shared memory holds a fixed array of
 * condition variables; a key's slot is a hash of its database, scope and
 * key (two keys may share one: their waiters wake for nothing and look
 * again).  Whoever changes a key that others may await (finishes or
 * releases an attempt of an earlier transaction, or takes one over) wakes
 * its slot once the change has committed; a backend that owns attempts
 * wakes every slot as it exits, having marked itself as exiting so that
 * the woken find its attempts' owner gone.  Waiters look at the key again
 * after each wake, and at least every AWAIT_RECHECK_MS for what no wake
 * reaches (a transaction prepared here and committed by another session,
 * a change made on another server; on a Citus ledger, where every change
 * may be made on another node, a waiter looks every AWAIT_TICK_MS).
 *
 * Without preloading there is no shared memory to keep the slots in: a
 * waiter looks again every AWAIT_TICK_MS, a short read of one row.
 *
 * What a waiter does with what it finds is ledger.c's business.
 *
 * src/await.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "settings.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/wait_event.h"

#include "await.h"
#include "compat.h"
#include "owner.h"

/* Condition variables in shared memory: keys hash into these slots */
#define AWAIT_SLOTS			1024

/* Longest sleep on a slot before a waiter looks again, in milliseconds */
#define AWAIT_RECHECK_MS	5000

/* Without preloading, the time between two looks, in milliseconds */
#define AWAIT_TICK_MS		100

typedef struct AwaitShared
{
	ConditionVariableMinimallyPadded slots[AWAIT_SLOTS];
} AwaitShared;

/* The slots, once attached; NULL when not preloaded */
static AwaitShared *await_shared = NULL;

bool		AwaitOwnerNoted = false;

/* Slots of keys the current transaction changed, woken when it commits */
static uint64 pending[AWAIT_SLOTS / 64];
static bool any_pending = false;
static bool xact_callback_registered = false;

/* The slot the current waiter sleeps on, or -1 */
static int	waiting_slot = -1;

/* Shared memory the slots need when preloaded */
Size
AwaitShmemSize(void)
{
	return MAXALIGN(sizeof(AwaitShared));
}

/* Attach to the slots, creating them on first use; false when not preloaded */
static bool
await_attach(void)
{
	bool		found;
	AwaitShared *shared;

	if (await_shared != NULL)
		return true;
	if (!IdemPreloaded || !IsUnderPostmaster)
		return false;
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("idempotency await", AwaitShmemSize(), &found);
	if (!found)
	{
		for (int i = 0; i < AWAIT_SLOTS; i++)
			ConditionVariableInit(&shared->slots[i].cv);
	}
	LWLockRelease(AddinShmemInitLock);
	await_shared = shared;
	return true;
}

/* The slot of (scope, key) in the current database */
static int
key_slot(text *scope, text *key)
{
	uint32		h = hash_bytes_uint32((uint32) MyDatabaseId);

	h = hash_combine(h, hash_bytes((const unsigned char *) VARDATA_ANY(scope),
								   VARSIZE_ANY_EXHDR(scope)));
	h = hash_combine(h, hash_bytes((const unsigned char *) VARDATA_ANY(key),
								   VARSIZE_ANY_EXHDR(key)));
	return (int) (h % AWAIT_SLOTS);
}

/* Wake every slot: the exiting owner may have held any key */
static void
wake_all(void)
{
	for (int i = 0; i < AWAIT_SLOTS; i++)
		ConditionVariableBroadcast(&await_shared->slots[i].cv);
}

/*
 * On the way out of a backend that owned attempts: mark it as exiting, then
 * wake every waiter, who will find its attempts' owner gone.
 */
static void
owner_exit(int code, Datum arg)
{
	OwnerMarkExiting();
	if (await_shared != NULL && MyProc != NULL)
		wake_all();
}

/*
 * The first attempt this backend owns: have its exit wake the waiters.
 * Only where there are slots; the flag is set either way, so that this runs
 * once.
 */
void
AwaitNoteOwnerSlow(void)
{
	AwaitOwnerNoted = true;
	if (await_attach())
		before_shmem_exit(owner_exit, (Datum) 0);
}

/*
 * At the end of a transaction: wake the slots of the keys it changed, once
 * its changes are visible (XACT_EVENT_COMMIT comes after that).  An abort
 * changed nothing; a prepared transaction is committed later, perhaps by
 * another session, which its waiters find when they look again.
 */
static void
await_xact_callback(XactEvent event, void *arg)
{
	if (!any_pending)
		return;
	if (event == XACT_EVENT_COMMIT && await_shared != NULL)
	{
		for (int w = 0; w < lengthof(pending); w++)
		{
			for (int b = 0; pending[w] != 0 && b < 64; b++)
			{
				if (pending[w] & (UINT64CONST(1) << b))
					ConditionVariableBroadcast(&await_shared->slots[w * 64 + b].cv);
			}
		}
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT)
	{
		memset(pending, 0, sizeof(pending));
		any_pending = false;
	}
}

/*
 * The current transaction changed (scope, key) so that its waiters must
 * look again: wake its slot when the transaction commits.
 */
void
AwaitKeyChanged(text *scope, text *key)
{
	int			slot;

	if (!await_attach())
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(await_xact_callback, NULL);
		xact_callback_registered = true;
	}
	slot = key_slot(scope, key);
	pending[slot / 64] |= UINT64CONST(1) << (slot % 64);
	any_pending = true;
}

/*
 * Get ready to wait for (scope, key): from here on, a wake of its slot is
 * not missed, even one that comes before the first AwaitSleep.  The caller
 * looks at the key after this, then sleeps if it must.  local is false
 * when the key may settle on another server (a Citus ledger), whose
 * changes wake no slot here: the waiter then looks every AWAIT_TICK_MS.
 */
void
AwaitPrepare(text *scope, text *key, bool local)
{
	if (!local || !await_attach())
	{
		waiting_slot = -1;
		return;
	}
	waiting_slot = key_slot(scope, key);
	ConditionVariablePrepareToSleep(&await_shared->slots[waiting_slot].cv);
}

/*
 * Sleep until the key's slot is woken, timeout_ms pass, or the time to look
 * again comes, whichever is first.  Interrupts (a cancel, statement_timeout,
 * a termination) are served here: an ERROR leaves the wait, and the
 * transaction's abort takes this backend off the slot.
 */
void
AwaitSleep(long timeout_ms)
{
	if (waiting_slot >= 0)
	{
		(void) ConditionVariableTimedSleep(&await_shared->slots[waiting_slot].cv,
										   Min(timeout_ms, AWAIT_RECHECK_MS),
										   PG_WAIT_EXTENSION);
		return;
	}
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 Min(timeout_ms, AWAIT_TICK_MS), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* The wait is over: leave the slot */
void
AwaitDone(void)
{
	if (waiting_slot >= 0)
		ConditionVariableCancelSleep();
	waiting_slot = -1;
}
