/*-------------------------------------------------------------------------
 *
 * owner.c
 *	  The session that began an attempt, and whether it still exists.
 *
 * A committed attempt in progress names its owner: the beginning backend's
 * pid, that backend's start time and the server's start time.  The owner is
 * gone when the server has started since (a restart, or another server: a
 * promoted standby, a restored dump), or when no backend with that pid and
 * that start time runs now.  The start time tells a new backend that was
 * given the dead one's pid from the owner.  A crash restart ends every
 * backend, so its owners are gone by the same test.
 *
 * The test reads the process array and the backend status array, no SQL.
 * It errs only towards "alive": then the lease is the bound, as before.
 *
 * A backend that has begun to exit can commit nothing more, but stays in the
 * process array until the very end of its exit, after the last moment it
 * can wake anyone.  With the library preloaded, it marks itself as exiting
 * first (OwnerMarkExiting, called on the way out by await.c), so that those
 * it wakes find it gone.
 *
 * src/owner.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "port/pg_bswap.h"
#include "settings.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/backend_status.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "owner.h"

/*
 * One entry per backend, by its number in the process array: the pid and
 * start time of the backend that last began to exit in that place.  Shared
 * memory, when preloaded.
 */
typedef struct OwnerExiting
{
	pg_atomic_uint32 pid;
	pg_atomic_uint64 started;
} OwnerExiting;

static OwnerExiting *exiting = NULL;

/* Shared memory the registry of exiting backends needs when preloaded */
Size
OwnerShmemSize(void)
{
	return mul_size(MaxBackends, sizeof(OwnerExiting));
}

/* Attach to the registry of exiting backends; false when not preloaded */
static bool
exiting_attach(void)
{
	bool		found;
	OwnerExiting *entries;

	if (exiting != NULL)
		return true;
	if (!IdemPreloaded || !IsUnderPostmaster)
		return false;
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	entries = ShmemInitStruct("idempotency exiting owners", OwnerShmemSize(),
							  &found);
	if (!found)
	{
		for (int i = 0; i < MaxBackends; i++)
		{
			pg_atomic_init_u32(&entries[i].pid, 0);
			pg_atomic_init_u64(&entries[i].started, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
	exiting = entries;
	return true;
}

/*
 * Mark the current backend as exiting: from now on it owns nothing.  Called
 * on the way out, before it wakes those who await its keys.
 */
void
OwnerMarkExiting(void)
{
	int			n;

	if (MyProc == NULL || !exiting_attach())
		return;
	n = IdemProcNumber(MyProc);
	if (n < 0 || n >= MaxBackends)
		return;
	pg_atomic_write_u64(&exiting[n].started, (uint64) MyStartTimestamp);
	pg_write_barrier();
	pg_atomic_write_u32(&exiting[n].pid, (uint32) MyProcPid);
}

/* True when proc, the owner's pid's backend, has marked itself as exiting */
static bool
owner_exiting(PGPROC *proc, const IdemOwner *owner)
{
	int			n;

	if (!exiting_attach())
		return false;
	n = IdemProcNumber(proc);
	if (n < 0 || n >= MaxBackends)
		return false;
	if (pg_atomic_read_u32(&exiting[n].pid) != (uint32) owner->pid)
		return false;
	pg_read_barrier();
	return pg_atomic_read_u64(&exiting[n].started) == (uint64) owner->started;
}

/* The current session as an owner */
void
OwnerSelf(IdemOwner *owner)
{
	owner->pid = MyProcPid;
	owner->started = MyStartTimestamp;
	owner->incarnation = PgStartTime;
}

/* An owner as the ledger's bytea */
Datum
OwnerDatum(const IdemOwner *owner)
{
	bytea	   *b = (bytea *) palloc(VARHDRSZ + IDEM_OWNER_LEN);
	char	   *p = VARDATA(b);
	uint32		pid = pg_hton32((uint32) owner->pid);
	uint64		started = pg_hton64((uint64) owner->started);
	uint64		incarnation = pg_hton64((uint64) owner->incarnation);

	SET_VARSIZE(b, VARHDRSZ + IDEM_OWNER_LEN);
	memcpy(p, &pid, 4);
	memcpy(p + 4, &started, 8);
	memcpy(p + 12, &incarnation, 8);
	return PointerGetDatum(b);
}

/*
 * Read an owner from the ledger's bytea.  False for a value of the wrong
 * length, which names no session.
 */
bool
OwnerFromDatum(Datum d, IdemOwner *owner)
{
	bytea	   *b = DatumGetByteaPP(d);
	const char *p = VARDATA_ANY(b);
	uint32		pid;
	uint64		started;
	uint64		incarnation;

	if (VARSIZE_ANY_EXHDR(b) != IDEM_OWNER_LEN)
		return false;
	memcpy(&pid, p, 4);
	memcpy(&started, p + 4, 8);
	memcpy(&incarnation, p + 12, 8);
	owner->pid = (int32) pg_ntoh32(pid);
	owner->started = (TimestampTz) pg_ntoh64(started);
	owner->incarnation = (TimestampTz) pg_ntoh64(incarnation);
	return true;
}

/*
 * Whether the backend status array, as this transaction's copy of it shows
 * it, has a backend with the owner's pid and start time.
 */
static bool
status_has_owner(const IdemOwner *owner)
{
	int			n = pgstat_fetch_stat_numbackends();

	for (int i = 1; i <= n; i++)
	{
		LocalPgBackendStatus *local = IdemLocalBackendStatus(i);

		if (local == NULL || local->backendStatus.st_procpid != owner->pid)
			continue;
		if (local->backendStatus.st_proc_start_timestamp == owner->started)
			return true;
	}
	return false;
}

/*
 * True when the owner's session no longer exists: the server started after
 * it, or no backend runs with its pid and start time, or its backend is
 * exiting.  A standby cannot tell
 * (the owner ran on the primary): there every owner counts as alive.
 */
bool
OwnerIsGone(const IdemOwner *owner)
{
	PGPROC	   *proc;

	if (owner->pid == MyProcPid && owner->started == MyStartTimestamp &&
		owner->incarnation == PgStartTime)
		return false;
	if (RecoveryInProgress())
		return false;
	if (owner->incarnation != PgStartTime)
		return true;
	proc = BackendPidGetProc(owner->pid);
	if (proc == NULL || owner_exiting(proc, owner))
		return true;

	/*
	 * A backend has the pid: the owner, or a newer one given the pid after
	 * the owner exited.  Its start time tells.  This transaction's copy of
	 * the status array may predate the backend: "alive" from it stands (the
	 * owner ran when it was taken, and a pid is seldom given again so soon),
	 * anything else is checked again on a fresh copy.
	 */
	if (status_has_owner(owner))
		return false;
	pgstat_clear_backend_activity_snapshot();
	return !status_has_owner(owner);
}
