/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  Whether the ledger is a Citus table, whose rows live in shards.
 *
 * On a Citus node, a distributed or reference table (or a Citus local
 * table) is a shell: its own heap stays empty and Citus's planner sends
 * every statement on it to the shards.  The direct path opens heaps and
 * indexes itself, past any planner, so it must never be used on such a
 * table: it would read an empty shell and write rows that no shard holds.
 * A table is a Citus table when pg_dist_partition, the catalog Citus
 * installs in pg_catalog, has a row for it.
 *
 * The answer is kept per backend for the last relation asked about and
 * dropped on a relcache invalidation of that relation (Citus invalidates a
 * table's relcache entry whenever its row in pg_dist_partition changes).
 * Where the Citus library is not loaded, which every Citus node requires
 * (shared_preload_libraries), nothing is looked up at all.
 *
 * src/citus.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_namespace.h"
#include "commands/extension.h"
#include "nodes/primnodes.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "citus.h"

/* pg_dist_partition.logicalrelid, the table's OID */
#define Anum_dist_partition_logicalrelid 1
/* pg_dist_partition.partkey, its distribution column as a Var node (text) */
#define Anum_dist_partition_partkey 3

/* pg_dist_local_group.groupid, this node's group */
#define Anum_dist_local_group_groupid 1
/* the group of the coordinator */
#define COORDINATOR_GROUP_ID 0

/* The last answer: whether relid is a Citus table */
static struct
{
	bool		valid;
	Oid			relid;
	bool		is_citus;
}			cached;

/* Forget the answer when its relation's relcache entry is invalidated */
static void
citus_relcache_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == cached.relid)
		cached.valid = false;
}

/*
 * True when the Citus library is loaded in this backend.  Citus works only
 * when preloaded, so the answer, taken from a GUC Citus defines, cannot
 * change during the backend's life once it is true; while it is false it
 * costs one hash look-up.
 */
static bool
citus_loaded(void)
{
	static bool loaded = false;

	if (!loaded)
		loaded = GetConfigOption("citus.version", true, false) != NULL;
	return loaded;
}

/*
 * Look pg_dist_partition up for relid; the Citus extension exists.  With
 * distcol, also say which column distributes it (InvalidAttrNumber for a
 * reference or local table, which has none).
 */
static bool
lookup_dist_partition(Oid relid, AttrNumber *distcol)
{
	Oid			catalog;
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData skey;
	HeapTuple	tup;
	bool		found;

	if (distcol != NULL)
		*distcol = InvalidAttrNumber;
	catalog = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	if (!OidIsValid(catalog))
		return false;
	rel = table_open(catalog, AccessShareLock);
	ScanKeyInit(&skey, Anum_dist_partition_logicalrelid,
				BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &skey);
	tup = systable_getnext(scan);
	found = HeapTupleIsValid(tup);
	if (found && distcol != NULL &&
		RelationGetDescr(rel)->natts >= Anum_dist_partition_partkey)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_dist_partition_partkey,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
		{
			Node	   *node = stringToNode(TextDatumGetCString(d));

			if (IsA(node, Var))
				*distcol = ((Var *) node)->varattno;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * True when relid is a Citus distributed, reference or local table, whose
 * rows only statements planned by Citus may read or write.
 */
bool
IdemCitusTable(Oid relid)
{
	static bool callback_registered = false;

	if (!citus_loaded())
		return false;
	if (cached.valid && cached.relid == relid)
		return cached.is_citus;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(citus_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	/* An invalidation during the look-up clears valid again */
	cached.relid = relid;
	cached.valid = true;
	cached.is_citus = OidIsValid(get_extension_oid("citus", true)) &&
		lookup_dist_partition(relid, NULL);
	return cached.is_citus;
}

/*
 * True when this node is a Citus worker, not the coordinator: its group in
 * pg_dist_local_group, the one-row catalog Citus keeps on every node, is
 * not the coordinator's group 0.  False where Citus is absent.
 */
bool
IdemCitusWorkerNode(void)
{
	Oid			catalog;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		worker = false;

	if (!citus_loaded() || !OidIsValid(get_extension_oid("citus", true)))
		return false;
	catalog = get_relname_relid("pg_dist_local_group", PG_CATALOG_NAMESPACE);
	if (!OidIsValid(catalog))
		return false;
	rel = table_open(catalog, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_dist_local_group_groupid,
									 RelationGetDescr(rel), &isnull);

		worker = !isnull && DatumGetInt32(d) != COORDINATOR_GROUP_ID;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return worker;
}

/*
 * The column that distributes the Citus table relid, InvalidAttrNumber if
 * none does (not a Citus table, or a reference or local one).  Read from
 * this node's metadata: a worker's own copy of the table may carry another
 * primary key than the shards (see ledger_sql.c), but the distribution
 * column is the same on every node.  Not cached: asked when plans are made.
 */
AttrNumber
IdemCitusDistributionColumn(Oid relid)
{
	AttrNumber	distcol;

	if (!IdemCitusTable(relid) ||
		!lookup_dist_partition(relid, &distcol))
		return InvalidAttrNumber;
	return distcol;
}
