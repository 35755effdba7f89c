/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Counters of what the API did, per database, for the view idem_stats.
 *
 * With the library preloaded the counters live in shared memory, one entry
 * per database, and count every session's calls (and the sweepers') until
 * the server stops or idem_stats_reset() zeroes them, as pg_stat_statements
 * keeps its counts.  Each call adds to its counter with one atomic
 * increment, no lock.  Without preloading there is no shared memory to keep
 * them in: each session counts its own calls, and the view shows those.
 *
 * Counts are of calls, not of committed effects: a begin whose transaction
 * rolls back has been counted.
 *
 * src/stats.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "settings.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "idempotency.h"
#include "stats.h"

/* Databases whose counts shared memory holds; the others count per session */
#define IDEM_STATS_DATABASES	256

/* The counters of one database */
typedef struct StatsEntry
{
	Oid			dboid;			/* InvalidOid: a free entry */
	pg_atomic_uint64 reset_at;	/* TimestampTz of the last reset */
	pg_atomic_uint64 counts[STAT_COUNTERS];
} StatsEntry;

typedef struct StatsShared
{
	slock_t		mutex;			/* taken to claim an entry */
	StatsEntry	entries[IDEM_STATS_DATABASES];
} StatsShared;

/* This backend's entry: in shared memory, or local_entry */
static StatsEntry *my_entry = NULL;
static bool my_entry_shared = false;
static StatsEntry local_entry;

PG_FUNCTION_INFO_V1(idem_stats);
PG_FUNCTION_INFO_V1(idem_stats_reset);

/* Shared memory the counters need when preloaded */
Size
IdemStatsShmemSize(void)
{
	return MAXALIGN(sizeof(StatsShared));
}

/* Zero an entry's counters and stamp the reset */
static void
entry_reset(StatsEntry *entry)
{
	for (int i = 0; i < STAT_COUNTERS; i++)
		pg_atomic_write_u64(&entry->counts[i], 0);
	pg_atomic_write_u64(&entry->reset_at, (uint64) GetCurrentTimestamp());
}

/*
 * Find this backend's entry: its database's in shared memory when the
 * library is preloaded (claiming a free one for a database seen first), or
 * the session's own.
 */
static void
stats_attach(void)
{
	if (IdemPreloaded && IsUnderPostmaster && OidIsValid(MyDatabaseId))
	{
		bool		found;
		StatsShared *shared;

		LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
		shared = ShmemInitStruct("idempotency stats", IdemStatsShmemSize(),
								 &found);
		if (!found)
		{
			memset(shared, 0, IdemStatsShmemSize());
			SpinLockInit(&shared->mutex);
		}
		LWLockRelease(AddinShmemInitLock);

		SpinLockAcquire(&shared->mutex);
		for (int i = 0; i < IDEM_STATS_DATABASES && my_entry == NULL; i++)
		{
			if (shared->entries[i].dboid == MyDatabaseId)
				my_entry = &shared->entries[i];
		}
		for (int i = 0; i < IDEM_STATS_DATABASES && my_entry == NULL; i++)
		{
			if (!OidIsValid(shared->entries[i].dboid))
			{
				my_entry = &shared->entries[i];
				for (int c = 0; c < STAT_COUNTERS; c++)
					pg_atomic_init_u64(&my_entry->counts[c], 0);
				pg_atomic_init_u64(&my_entry->reset_at,
								   (uint64) GetCurrentTimestamp());
				my_entry->dboid = MyDatabaseId;
			}
		}
		SpinLockRelease(&shared->mutex);
		my_entry_shared = (my_entry != NULL);
	}
	if (my_entry == NULL)
	{
		my_entry = &local_entry;
		for (int c = 0; c < STAT_COUNTERS; c++)
			pg_atomic_init_u64(&local_entry.counts[c], 0);
		pg_atomic_init_u64(&local_entry.reset_at,
						   (uint64) GetCurrentTimestamp());
	}
}

/* Add n to a counter of the current database */
void
IdemStatsAdd(IdemCounter counter, uint64 n)
{
	if (unlikely(my_entry == NULL))
		stats_attach();
	pg_atomic_fetch_add_u64(&my_entry->counts[counter], n);
}

/*
 * The row of idem_stats: the current database's counters, when they were
 * last reset, and whether they are the server's (shared) or the session's.
 */
Datum
idem_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[STAT_COUNTERS + 2];
	bool		nulls[STAT_COUNTERS + 2];
	int			ncounters;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	/*
	 * The counters come first, in the order of IdemCounter, and each version
	 * adds its own after the last one's: a function of an older version (not
	 * updated yet) shows the counters it knows of.
	 */
	ncounters = desc->natts - 2;
	if (ncounters < STAT_COUNTERS_1_1 || ncounters > STAT_COUNTERS)
		elog(ERROR, "idem_stats returns %d columns, the library %d",
			 desc->natts, STAT_COUNTERS + 2);
	if (my_entry == NULL)
		stats_attach();
	memset(nulls, 0, sizeof(nulls));
	for (int i = 0; i < ncounters; i++)
		values[i] = Int64GetDatum((int64) pg_atomic_read_u64(&my_entry->counts[i]));
	values[ncounters] =
		TimestampTzGetDatum((TimestampTz) pg_atomic_read_u64(&my_entry->reset_at));
	values[ncounters + 1] = BoolGetDatum(my_entry_shared);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* Zero the current database's counters (the session's, when not preloaded) */
Datum
idem_stats_reset(PG_FUNCTION_ARGS)
{
	if (my_entry == NULL)
		stats_attach();
	entry_reset(my_entry);
	PG_RETURN_VOID();
}
