/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Small wrappers over the server interfaces that differ between the
 *	  PostgreSQL majors the extension supports (15 to 18).
 *
 * Every PG_VERSION_NUM test of the extension lives here; the rest of the
 * code calls these wrappers, named after what they do, and reads as if
 * there were one version.  Adding a major: build against it, and add a
 * case here for each interface that changed.
 *
 * src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_COMPAT_H
#define IDEM_COMPAT_H

#include "postgres.h"

#include "access/genam.h"
#include "access/tableam.h"
#include "commands/vacuum.h"
#include "executor/executor.h"
#include "nodes/bitmapset.h"
#include "parser/parse_relation.h"
#include "pgstat.h"
#include "storage/bufmgr.h"
#include "storage/proc.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/relcache.h"

/* PostgreSQL 16 moved the varlena macros (VARDATA, SET_VARSIZE ...) to varatt.h */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

#if PG_VERSION_NUM < 150000
#error "idempotency needs PostgreSQL 15 or later"
#endif

/*
 * An executor range table of one relation, the ledger, for index
 * maintenance, as logical replication builds one.  From 16 on, an update's
 * index maintenance asks the relation's permission entry which columns
 * changed, so there must be one (no permission is checked).
 */
static inline void
IdemInitRangeTable(EState *estate, RangeTblEntry *rte)
{
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;

	addRTEPermissionInfo(&perminfos, rte);
#endif
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, list_make1(rte), perminfos, bms_make_singleton(1));
#elif PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, list_make1(rte), perminfos);
#else
	ExecInitRangeTable(estate, list_make1(rte));
#endif
}

/* Insert index entries for a new row version (all indexes, not only summarizing ones) */
static inline List *
IdemInsertIndexTuples(ResultRelInfo *rri, TupleTableSlot *slot, EState *estate,
					  bool update, bool noDupErr, bool *specConflict,
					  List *arbiters)
{
#if PG_VERSION_NUM >= 160000
	return ExecInsertIndexTuples(rri, slot, estate, update, noDupErr,
								 specConflict, arbiters, false);
#else
	return ExecInsertIndexTuples(rri, slot, estate, update, noDupErr,
								 specConflict, arbiters);
#endif
}

/*
 * Check a new row against the arbiter indexes before a speculative
 * insertion; *conflict is set to the row that holds the key when false.
 */
static inline bool
IdemCheckIndexConstraints(ResultRelInfo *rri, TupleTableSlot *slot,
						  EState *estate, ItemPointer conflict, List *arbiters)
{
#if PG_VERSION_NUM >= 180000
	ItemPointerData none;

	ItemPointerSetInvalid(&none);
	return ExecCheckIndexConstraints(rri, slot, estate, conflict, &none, arbiters);
#else
	return ExecCheckIndexConstraints(rri, slot, estate, conflict, arbiters);
#endif
}

/* The OID of a table's primary key index (a deferrable one does not count) */
static inline Oid
IdemPrimaryKeyIndex(Relation rel)
{
#if PG_VERSION_NUM >= 180000
	return RelationGetPrimaryKeyIndex(rel, false);
#else
	return RelationGetPrimaryKeyIndex(rel);
#endif
}

/* What table_tuple_update says about the new version's index entries */
#if PG_VERSION_NUM >= 160000
typedef TU_UpdateIndexes IdemUpdateIndexes;
#define IdemUpdateNeedsIndexes(u)	((u) != TU_None)
#else
typedef bool IdemUpdateIndexes;
#define IdemUpdateNeedsIndexes(u)	(u)
#endif

/* Begin an index scan with nkeys scan keys and no ordering */
static inline IndexScanDesc
IdemIndexBeginScan(Relation heap, Relation index, Snapshot snapshot, int nkeys)
{
#if PG_VERSION_NUM >= 180000
	return index_beginscan(heap, index, snapshot, NULL, nkeys, 0);
#else
	return index_beginscan(heap, index, snapshot, nkeys, 0);
#endif
}

/* Live and dead row counts of a table's statistics entry */
#if PG_VERSION_NUM >= 160000
#define IdemStatLiveTuples(tab)		((tab)->live_tuples)
#define IdemStatDeadTuples(tab)		((tab)->dead_tuples)
#else
#define IdemStatLiveTuples(tab)		((tab)->n_live_tuples)
#define IdemStatDeadTuples(tab)		((tab)->n_dead_tuples)
#endif

/*
 * VACUUM the given relations from a background worker, with the server's
 * defaults for what params leaves unset.  vacuum() commits the caller's
 * transaction; cxt must outlive it.
 */
static inline void
IdemVacuum(List *relations, VacuumParams *params, MemoryContext cxt)
{
#if PG_VERSION_NUM >= 160000
	/* 16 made processing the table itself an option (PROCESS_MAIN) */
	params->options |= VACOPT_PROCESS_MAIN;
#endif
#if PG_VERSION_NUM >= 180000
	params->max_eager_freeze_failure_rate = vacuum_max_eager_freeze_failure_rate;
#endif
#if PG_VERSION_NUM >= 160000
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		BufferAccessStrategy strategy = GetAccessStrategy(BAS_VACUUM);

		MemoryContextSwitchTo(old);
		vacuum(relations, params, strategy, cxt, true);
	}
#else
	/* vacuum() keeps its cross-transaction memory under PortalContext */
	PortalContext = cxt;
	vacuum(relations, params, NULL, true);
	PortalContext = NULL;
#endif
}

/*
 * Memory for a GUC check hook's extra data, which the GUC machinery frees
 * itself (with free() before 16, from its own memory context since).  NULL
 * when out of memory, having logged it.
 */
static inline void *
IdemGucMalloc(size_t size)
{
#if PG_VERSION_NUM >= 160000
	return guc_malloc(LOG, size);
#else
	return malloc(size);
#endif
}

/*
 * Entry idx (from 1) of this transaction's copy of the backend status
 * array, as pg_stat_activity reads it.
 */
static inline LocalPgBackendStatus *
IdemLocalBackendStatus(int idx)
{
#if PG_VERSION_NUM >= 160000
	return pgstat_get_local_beentry_by_index(idx);
#else
	return pgstat_fetch_stat_local_beentry(idx);
#endif
}

/* The number of a PGPROC in the array of them (17 dropped its pgprocno) */
static inline int
IdemProcNumber(PGPROC *proc)
{
#if PG_VERSION_NUM >= 170000
	return GetNumberFromPGProc(proc);
#else
	return proc->pgprocno;
#endif
}

#endif							/* IDEM_COMPAT_H */
