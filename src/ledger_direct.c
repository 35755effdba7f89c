/*-------------------------------------------------------------------------
 *
 * ledger_direct.c
 *	  Direct heap and index access to the ledger, for the hot paths.
 *
 * A profile of the SQL path showed most of a begin's cost in executor start
 * and plan-cache work around one-row statements.  The three operations that
 * every first request and every replay performs are done here without SPI:
 *
 *	- reading a key's row through the primary key, the digest of (scope,
 *	  key), and checking that the row is that key's (the replay path);
 *	- inserting a new attempt with the same speculative-insertion protocol
 *	  INSERT ... ON CONFLICT DO NOTHING uses, so the primary key still
 *	  arbitrates between concurrent duplicates and a duplicate waits for an
 *	  uncommitted first insertion;
 *	- completing an attempt that the current transaction itself inserted,
 *	  which no other transaction can see, lock or change;
 *	- for begin with wait => false, probing the primary key with a dirty
 *	  snapshot for a writer that has not finished yet;
 *	- the sweeper's deletes: a scan of the heap in physical order that
 *	  deletes each expired row it sees, passing by the rows that a caller
 *	  holds, as DELETE ... FOR UPDATE SKIP LOCKED would.
 *
 * Everything else (takeovers, attempts from earlier transactions, errors)
 * stays on the SQL path in ledger.c.  The direct path is used only where it
 * behaves exactly like the SQL path: READ COMMITTED, a read-write
 * transaction on a primary, a ledger with no triggers or row security, and
 * the column layout the install script made.  A ledger that Citus
 * distributes is never opened here: its own heap is an empty shell, and
 * only statements that Citus plans reach the shards (citus.c).
 *
 * src/ledger_direct.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "citus.h"
#include "compat.h"
#include "ledger_digest.h"
#include "ledger_direct.h"

static void open_executor(LedgerDirect *ld, bool speculative);
static bool locked_only_by_us(Relation rel, ItemPointer tid);
static LedgerKeyState probe_key(Relation rel, Relation idx, text *scope,
								text *key, ItemPointer tid);

/*
 * True when the ledger still has exactly the columns and constraints that
 * the install and upgrade scripts made (a ledger of 1.0 or 1.1 that ALTER
 * EXTENSION has not updated yet lacks the owner or the digest column: it is
 * served through SQL until it is updated).  The direct path writes rows
 * without the executor, so a CHECK constraint or a NOT NULL a user added
 * (or dropped) sends every call to the SQL path, where the executor
 * enforces it.  The one CHECK constraint of 1.3, that digest is
 * idem_digest(scope, key), holds by construction for the rows the direct
 * path writes: it is there for rows written by hand, copied in by a restore
 * or applied by replication.  (A dropped column also changes the layout:
 * the direct path stays off until the ledger is made anew by a dump and
 * restore.)
 */
static bool
ledger_layout_ok(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);

	if (desc->natts != Natts_ledger)
		return false;
	if (desc->constr != NULL &&
		(desc->constr->has_generated_stored ||
		 desc->constr->num_check > 1 ||
		 (desc->constr->num_check == 1 &&
		  strcmp(desc->constr->check[0].ccname, IDEM_DIGEST_CHECK_NAME) != 0)))
		return false;
	for (int i = 0; i < Natts_ledger; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->atttypid != LedgerColumns[i].type ||
			att->attnotnull != LedgerColumns[i].notnull ||
			att->attgenerated != '\0' ||
			strcmp(NameStr(att->attname), LedgerColumns[i].name) != 0)
			return false;
	}
	return true;
}

/*
 * The ledger of schema nspid, opened to be written directly, or NULL when
 * the direct path cannot write it: no ledger, a Citus table, or a caller
 * the SQL path must serve.  Read-only transactions and standbys get the
 * SQL path, which raises the errors PostgreSQL raises for any write (or for
 * an unlogged ledger during recovery); so do REPEATABLE READ and
 * SERIALIZABLE callers, whose snapshot the statements must use.
 */
static Relation
open_ledger_for_write(Oid nspid)
{
	Oid			relid;
	Relation	rel;

	if (IsolationUsesXactSnapshot() || XactReadOnly || RecoveryInProgress())
		return NULL;
	relid = get_relname_relid(IDEM_LEDGER_NAME, nspid);
	if (!OidIsValid(relid))
		return NULL;
	rel = table_open(relid, RowExclusiveLock);

	/*
	 * Asked after the lock is taken, which processes the invalidations of
	 * a distribution committed meanwhile (Citus's shell table also carries
	 * a trigger, but that is not what keeps the direct path off it).
	 */
	if (IdemCitusTable(relid))
	{
		table_close(rel, RowExclusiveLock);
		return NULL;
	}
	return rel;
}

/*
 * Open the ledger of schema nspid for direct access, ready to insert when
 * for_insert.  Returns false, having opened nothing, when the SQL path must
 * be used instead.
 */
bool
LedgerDirectOpen(LedgerDirect *ld, Oid nspid, bool for_insert)
{
	Relation	rel = open_ledger_for_write(nspid);

	if (rel == NULL)
		return false;
	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rel->relam != HEAP_TABLE_AM_OID ||
		rel->trigdesc != NULL ||
		rel->rd_rel->relrowsecurity ||
		!ledger_layout_ok(rel) ||
		!OidIsValid(ld->pkey = IdemPrimaryKeyIndex(rel)))
	{
		table_close(rel, RowExclusiveLock);
		return false;
	}

	ld->rel = rel;
	ld->estate = NULL;
	ld->rri = NULL;
	ld->arbiters = NIL;
	ld->snapshot = NULL;
	ld->rslot = table_slot_create(rel, NULL);
	ld->wslot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsVirtual);
	if (for_insert)
		open_executor(ld, true);
	return true;
}

/*
 * An executor state with the ledger's indexes open, for index maintenance,
 * as logical replication sets one up.  Only what needs it pays for it: an
 * insert, a key search, an update that could not be HOT.
 */
static void
open_executor(LedgerDirect *ld, bool speculative)
{
	RangeTblEntry *rte;

	if (ld->estate != NULL)
		return;
	ld->estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(ld->rel);
	rte->relkind = RELKIND_RELATION;
	rte->rellockmode = RowExclusiveLock;
	IdemInitRangeTable(ld->estate, rte);
	ld->estate->es_output_cid = GetCurrentCommandId(true);

	ld->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(ld->rri, ld->rel, 1, NULL, 0);
	ExecOpenIndices(ld->rri, speculative);
	ld->arbiters = list_make1_oid(ld->pkey);
}

/* The MVCC snapshot of this call, taken when first needed */
static Snapshot
ledger_snapshot(LedgerDirect *ld)
{
	if (ld->snapshot == NULL)
		ld->snapshot = RegisterSnapshot(GetLatestSnapshot());
	return ld->snapshot;
}

/*
 * The storage the ledger's row positions point into now: a rewrite
 * (TRUNCATE, ALTER TABLE ... SET LOGGED) gives it new storage, and a
 * position remembered from before means nothing there.
 */
Oid
LedgerDirectStorage(LedgerDirect *ld)
{
	return ld->rel->rd_rel->relfilenode;
}

/* Release what LedgerDirectOpen took; the lock is kept to transaction end */
void
LedgerDirectClose(LedgerDirect *ld)
{
	if (ld->snapshot != NULL)
		UnregisterSnapshot(ld->snapshot);
	ExecDropSingleTupleTableSlot(ld->rslot);
	ExecDropSingleTupleTableSlot(ld->wslot);
	if (ld->estate != NULL)
	{
		ExecCloseIndices(ld->rri);
		FreeExecutorState(ld->estate);
	}
	table_close(ld->rel, NoLock);
}

/* True when a text datum equals the given ASCII word */
static bool
text_equals(Datum d, const char *word)
{
	text	   *t = DatumGetTextPP(d);
	size_t		len = strlen(word);

	return VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), word, len) == 0;
}

/*
 * Copy the row in ld->rslot into *row.  *own_insert tells that the current
 * transaction inserted this version and nobody has changed it since.  The
 * response is copied into the current memory context when want_response.
 */
static void
read_slot(LedgerDirect *ld, bool want_response, LedgerRow *row,
		  ItemPointer tid, bool *own_insert)
{
	TupleTableSlot *slot = ld->rslot;
	bool		isnull;
	HeapTuple	tup;
	Datum		d;

	tup = ExecFetchSlotHeapTuple(slot, false, NULL);
	row->mine = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tup->t_data));
	*own_insert = row->mine &&
		(tup->t_data->t_infomask & HEAP_XMAX_INVALID) != 0;
	ItemPointerCopy(&slot->tts_tid, tid);

	d = slot_getattr(slot, Anum_ledger_state, &isnull);
	if (isnull)
		LedgerRowDamaged("state");
	row->is_completed = text_equals(d, "completed");
	d = slot_getattr(slot, Anum_ledger_status, &row->status_null);
	row->status = row->status_null ? 0 : DatumGetInt32(d);
	d = slot_getattr(slot, Anum_ledger_response, &row->response_null);
	row->response = (Datum) 0;
	if (want_response && !row->response_null)
		row->response = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
	d = slot_getattr(slot, Anum_ledger_attempt, &isnull);
	if (isnull)
		LedgerRowDamaged("attempt");
	row->attempt = DatumGetInt32(d);
	d = slot_getattr(slot, Anum_ledger_fingerprint, &isnull);
	LedgerRowSetFingerprint(row, d, isnull);
	d = slot_getattr(slot, Anum_ledger_created_at, &isnull);
	if (isnull)
		LedgerRowDamaged("created_at");
	row->created_at = DatumGetTimestampTz(d);
	d = slot_getattr(slot, Anum_ledger_expires_at, &isnull);
	if (isnull)
		LedgerRowDamaged("expires_at");
	row->expires_at = DatumGetTimestampTz(d);
	d = slot_getattr(slot, Anum_ledger_lease_until, &row->lease_null);
	row->lease_until = row->lease_null ? 0 : DatumGetTimestampTz(d);
	d = slot_getattr(slot, Anum_ledger_owner, &isnull);
	LedgerRowSetOwner(row, d, isnull);
}

/* True when the row in slot is the one of (scope, key) */
static bool
slot_has_key(TupleTableSlot *slot, text *scope, text *key)
{
	bool		snull;
	bool		knull;
	Datum		sd = slot_getattr(slot, Anum_ledger_scope, &snull);
	Datum		kd = slot_getattr(slot, Anum_ledger_key, &knull);
	text	   *s;
	text	   *k;

	if (snull || knull)
		return false;
	s = DatumGetTextPP(sd);
	k = DatumGetTextPP(kd);
	return VARSIZE_ANY_EXHDR(s) == VARSIZE_ANY_EXHDR(scope) &&
		VARSIZE_ANY_EXHDR(k) == VARSIZE_ANY_EXHDR(key) &&
		memcmp(VARDATA_ANY(s), VARDATA_ANY(scope), VARSIZE_ANY_EXHDR(scope)) == 0 &&
		memcmp(VARDATA_ANY(k), VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key)) == 0;
}

/*
 * Scan keys for (scope, key) on the ledger's primary key, in the order of
 * its columns: digest alone as the install and upgrade scripts make it, and
 * any of digest, scope and key as another version or Citus left it (a
 * ledger distributed by scope, then undistributed, keeps (digest, scope)).
 * *digest receives the pair's digest.  Returns the number of scan keys.
 */
static int
pkey_scan_keys(Relation idx, text *scope, text *key, pg_uuid_t *digest,
			   ScanKey skey)
{
	int			nkeys = IndexRelationGetNumberOfKeyAttributes(idx);

	if (nkeys < 1 || nkeys > 3)
		elog(ERROR, "primary key of the ledger is not on its digest, scope or key");
	for (int i = 0; i < nkeys; i++)
	{
		AttrNumber	attno = idx->rd_index->indkey.values[i];

		if (attno == Anum_ledger_digest)
		{
			*digest = *LedgerKeyDigest(idx->rd_rel->relnamespace, scope, key);
			ScanKeyInit(&skey[i], i + 1, BTEqualStrategyNumber, F_UUID_EQ,
						UUIDPGetDatum(digest));
		}
		else if (attno == Anum_ledger_key || attno == Anum_ledger_scope)
			ScanKeyInit(&skey[i], i + 1, BTEqualStrategyNumber, F_TEXTEQ,
						PointerGetDatum(attno == Anum_ledger_key ? key : scope));
		else
			elog(ERROR, "primary key of the ledger is not on its digest, scope or key");
		skey[i].sk_collation = idx->rd_indcollation[i];
	}
	return nkeys;
}

/* The ledger's primary key, opened with the executor's other indexes */
static Relation
ledger_pkey(LedgerDirect *ld)
{
	open_executor(ld, false);
	for (int i = 0; i < ld->rri->ri_NumIndices; i++)
	{
		if (RelationGetRelid(ld->rri->ri_IndexRelationDescs[i]) == ld->pkey)
			return ld->rri->ri_IndexRelationDescs[i];
	}
	elog(ERROR, "primary key of the ledger is not open");
	return NULL;				/* keep compiler quiet */
}

/*
 * Read the row of a key through the primary key, with the snapshot taken
 * when the ledger was opened.  A row of another key under the same digest
 * raises the collision error.
 */
bool
LedgerDirectFetch(LedgerDirect *ld, text *scope, text *key, bool want_response,
				  LedgerRow *row, ItemPointer tid, bool *own_insert)
{
	Relation	idx;
	ScanKeyData skey[3];
	pg_uuid_t	digest;
	int			nkeys;
	IndexScanDesc scan;
	bool		found;

	idx = ledger_pkey(ld);
	nkeys = pkey_scan_keys(idx, scope, key, &digest, skey);
	scan = IdemIndexBeginScan(ld->rel, idx, ledger_snapshot(ld), nkeys);
	index_rescan(scan, skey, nkeys, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, ld->rslot);
	if (found && !slot_has_key(ld->rslot, scope, key))
		LedgerKeyCollision(scope, key);
	if (found)
		read_slot(ld, want_response, row, tid, own_insert);
	index_endscan(scan);
	ExecClearTuple(ld->rslot);
	return found;
}

/*
 * Read the row version at tid, if it is the one of (scope, key): when
 * visible_only, only if this call's snapshot sees it; otherwise whatever
 * version is there, as the primary key check found it.  A row of another
 * key is not read (false): the SQL path looks again through the primary
 * key, and reports a collision if there is one.
 */
bool
LedgerDirectFetchTid(LedgerDirect *ld, ItemPointer tid, bool visible_only,
					 text *scope, text *key, bool want_response,
					 LedgerRow *row, bool *own_insert)
{
	ItemPointerData found_tid;
	bool		found;

	found = table_tuple_fetch_row_version(ld->rel, tid,
										  visible_only ? ledger_snapshot(ld) : SnapshotAny,
										  ld->rslot) &&
		slot_has_key(ld->rslot, scope, key);
	if (found)
		read_slot(ld, want_response, row, &found_tid, own_insert);
	ExecClearTuple(ld->rslot);
	return found;
}

/* Put values into the write slot as a virtual tuple */
static void
store_values(TupleTableSlot *slot, Datum *values, bool *nulls)
{
	ExecClearTuple(slot);
	memcpy(slot->tts_values, values, sizeof(Datum) * Natts_ledger);
	memcpy(slot->tts_isnull, nulls, sizeof(bool) * Natts_ledger);
	ExecStoreVirtualTuple(slot);
}

/*
 * Insert a new row unless the key exists, as INSERT ... ON CONFLICT DO
 * NOTHING does: check the primary key (waiting for an uncommitted insertion
 * of the same key), insert speculatively, and if a concurrent insertion won
 * the race after all, take ours back and look again.  KEY_ABSENT means our
 * row went in, at *tid; KEY_PRESENT that a committed row (or one of our own
 * transaction) holds the key, at *tid.  With nowait the check never waits:
 * a row that another unfinished transaction writes gives KEY_BUSY instead.
 */
LedgerKeyState
LedgerDirectInsert(LedgerDirect *ld, Datum *values, bool *nulls, bool nowait,
				   ItemPointer tid)
{
	TupleTableSlot *slot = ld->wslot;

	for (;;)
	{
		ItemPointerData conflict_tid;
		bool		spec_conflict = false;
		uint32		token;
		List	   *recheck;

		CHECK_FOR_INTERRUPTS();
		store_values(slot, values, nulls);
		if (nowait)
		{
			LedgerKeyState state;

			state = probe_key(ld->rel, ledger_pkey(ld),
							  DatumGetTextPP(values[Anum_ledger_scope - 1]),
							  DatumGetTextPP(values[Anum_ledger_key - 1]), tid);
			if (state != KEY_ABSENT)
				return state;
		}
		else if (!IdemCheckIndexConstraints(ld->rri, slot, ld->estate,
											&conflict_tid, ld->arbiters))
		{
			ItemPointerCopy(&conflict_tid, tid);
			return KEY_PRESENT;
		}

		token = SpeculativeInsertionLockAcquire(GetCurrentTransactionId());
		table_tuple_insert_speculative(ld->rel, slot, ld->estate->es_output_cid,
									   0, NULL, token);
		recheck = IdemInsertIndexTuples(ld->rri, slot, ld->estate, false, true,
										&spec_conflict, ld->arbiters);
		list_free(recheck);
		table_tuple_complete_speculative(ld->rel, slot, token, !spec_conflict);
		SpeculativeInsertionLockRelease(GetCurrentTransactionId());

		if (!spec_conflict)
		{
			ItemPointerCopy(&slot->tts_tid, tid);
			CommandCounterIncrement();
			return KEY_ABSENT;
		}
	}
}

/*
 * Replace the row at tid, which the current transaction inserted and nobody
 * else can see.  Returns false, having changed nothing, if it cannot.
 */
bool
LedgerDirectUpdate(LedgerDirect *ld, ItemPointer tid, Datum *values, bool *nulls)
{
	TupleTableSlot *slot = ld->wslot;
	TM_FailureData tmfd;
	LockTupleMode lockmode;
	IdemUpdateIndexes update_indexes;
	TM_Result	res;
	Buffer		buf;

	/*
	 * Prune the page first, as an index fetch would: the version this
	 * update leaves behind, and those of earlier calls, are dead once their
	 * transactions end, and without pruning they would hold the page's space
	 * until VACUUM, so that the ledger grew twice as fast as it needs to and
	 * later updates could not stay on the page (HOT).
	 */
	buf = ReadBuffer(ld->rel, ItemPointerGetBlockNumber(tid));
	heap_page_prune_opt(ld->rel, buf);
	ReleaseBuffer(buf);

	/* A publication that replicates updates needs a replica identity */
	CheckCmdReplicaIdentity(ld->rel, CMD_UPDATE);

	store_values(slot, values, nulls);
	res = table_tuple_update(ld->rel, tid, slot, GetCurrentCommandId(true),
							 ledger_snapshot(ld), InvalidSnapshot, true,
							 &tmfd, &lockmode, &update_indexes);
	if (res != TM_Ok)
		return false;
	if (IdemUpdateNeedsIndexes(update_indexes))
	{
		/* Not a HOT update: the new version needs its index entries */
		open_executor(ld, false);
		list_free(IdemInsertIndexTuples(ld->rri, slot, ld->estate, true, false,
										NULL, NIL));
	}
	CommandCounterIncrement();
	return true;
}

/*
 * Probe the primary key idx of rel for (scope, key) with a dirty snapshot,
 * which also sees what transactions still running have written: KEY_BUSY
 * when another transaction that has not finished yet inserted, deletes or
 * changes the row; KEY_PRESENT (the row at *tid) when a row holds the key
 * and nobody else is changing it; KEY_ABSENT otherwise.  Never waits: it is
 * how begin with wait => false avoids queueing behind a writer.  A row of
 * another key under the same digest, even one still being written, raises
 * the collision error.
 */
static LedgerKeyState
probe_key(Relation rel, Relation idx, text *scope, text *key, ItemPointer tid)
{
	SnapshotData dirty;
	ScanKeyData skey[3];
	pg_uuid_t	digest;
	int			nkeys;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	LedgerKeyState state = KEY_ABSENT;

	InitDirtySnapshot(dirty);
	nkeys = pkey_scan_keys(idx, scope, key, &digest, skey);
	slot = table_slot_create(rel, NULL);
	scan = IdemIndexBeginScan(rel, idx, &dirty, nkeys);
	index_rescan(scan, skey, nkeys, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		TransactionId xwait = TransactionIdIsValid(dirty.xmin) ?
		dirty.xmin : dirty.xmax;

		/* A row of another key under this key's digest: a collision */
		if (!slot_has_key(slot, scope, key))
			LedgerKeyCollision(scope, key);

		if (TransactionIdIsValid(xwait) &&
			!TransactionIdIsCurrentTransactionId(xwait))
		{
			state = KEY_BUSY;
			break;
		}
		state = KEY_PRESENT;
		if (tid != NULL)
			ItemPointerCopy(&slot->tts_tid, tid);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	return state;
}

/*
 * The state of a key, for the SQL path of begin with wait => false (see
 * probe_key).  Opens the ledger by itself.  A ledger that Citus distributes
 * has no rows of its own to probe, and a dirty snapshot cannot look into
 * the shards: KEY_UNSEEN (the caller reads the key through Citus).
 */
LedgerKeyState
LedgerKeyProbe(Oid nspid, text *scope, text *key)
{
	Oid			relid = get_relname_relid(IDEM_LEDGER_NAME, nspid);
	Relation	rel;
	Relation	idx;
	Oid			idxid;
	LedgerKeyState state;

	/* A standby has no writers to wait for; the SQL path reports its errors */
	if (RecoveryInProgress())
		return KEY_ABSENT;
	if (!OidIsValid(relid))
		elog(ERROR, "ledger table of the idempotency extension is missing");
	rel = table_open(relid, AccessShareLock);
	if (IdemCitusTable(relid))
	{
		table_close(rel, AccessShareLock);
		return KEY_UNSEEN;
	}
	idxid = IdemPrimaryKeyIndex(rel);
	if (!OidIsValid(idxid))
		elog(ERROR, "ledger table of the idempotency extension has no primary key");
	idx = index_open(idxid, AccessShareLock);
	state = probe_key(rel, idx, scope, key, NULL);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	return state;
}

/*
 * True when a sweep may delete from the open ledger rel directly: a plain
 * heap table with no triggers (a foreign key that points at the ledger is
 * one), rules or row security, whose expires_at is where the install script
 * put it, and which the current user may DELETE from as the SQL statement
 * does (SELECT, and UPDATE for its row locks).  Otherwise the SQL statement
 * runs, and raises what PostgreSQL raises.
 */
static bool
sweep_direct_ok(Relation rel)
{
	AclMode		needed = ACL_SELECT | ACL_UPDATE | ACL_DELETE;
	Form_pg_attribute att;

	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rel->relam != HEAP_TABLE_AM_OID ||
		rel->trigdesc != NULL ||
		rel->rd_rules != NULL ||
		rel->rd_rel->relrowsecurity ||
		RelationGetDescr(rel)->natts < Anum_ledger_expires_at)
		return false;
	att = TupleDescAttr(RelationGetDescr(rel), Anum_ledger_expires_at - 1);
	if (att->attisdropped || att->atttypid != TIMESTAMPTZOID ||
		strcmp(NameStr(att->attname),
			   LedgerColumns[Anum_ledger_expires_at - 1].name) != 0)
		return false;
	return pg_class_aclmask(RelationGetRelid(rel), GetUserId(), needed,
							ACLMASK_ALL) == needed;
}

/*
 * True when the row at tid is locked, not updated nor deleted, by this
 * transaction alone (a plain xmax, not a multixact of several lockers).
 */
static bool
locked_only_by_us(Relation rel, ItemPointer tid)
{
	Buffer		buf;
	Page		page;
	ItemId		lp;
	bool		ours = false;

	buf = ReadBuffer(rel, ItemPointerGetBlockNumber(tid));
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (ItemPointerGetOffsetNumber(tid) <= PageGetMaxOffsetNumber(page))
	{
		lp = PageGetItemId(page, ItemPointerGetOffsetNumber(tid));
		if (ItemIdIsNormal(lp))
		{
			HeapTupleHeader htup = (HeapTupleHeader) PageGetItem(page, lp);
			uint16		infomask = htup->t_infomask;

			ours = !(infomask & HEAP_XMAX_IS_MULTI) &&
				HEAP_XMAX_IS_LOCKED_ONLY(infomask) &&
				TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetRawXmax(htup));
		}
	}
	UnlockReleaseBuffer(buf);
	return ours;
}

/*
 * Delete up to batch_size rows of the ledger of schema nspid that expired at
 * now (expires_at <= now) and lie after *cursor, in physical order, without
 * the executor: the sweep's SQL statement locked each row (a WAL record of
 * its own) before deleting it, and most of its time went there and into the
 * executor.  A row that another transaction holds (locked, or changed and
 * not yet committed) is passed by, never waited for, as FOR UPDATE SKIP
 * LOCKED passes it by (a row this transaction holds locked is deleted, as
 * that statement deletes it); so is a row changed since the scan saw it (the next
 * pass looks at it again).  Each deleted row is checked on the very version
 * deleted, so the rule is the SQL statement's.
 *
 * Advances *cursor past the last row looked at, sets *reached_end when the
 * scan got to the end of the ledger, and sets *deleted.  Returns false,
 * having done nothing, when the SQL path must sweep instead (the same
 * conditions as LedgerDirectOpen's, and sweep_direct_ok's).
 */
bool
LedgerDirectSweep(Oid nspid, TimestampTz now, int batch_size,
				  ItemPointer cursor, bool *reached_end, uint64 *deleted)
{
	Relation	rel;
	Snapshot	snapshot;
	TableScanDesc scan;
	TupleTableSlot *slot;
	ItemPointerData maxtid;
	CommandId	cid;
	uint64		n = 0;
	bool		more = true;

	rel = open_ledger_for_write(nspid);
	if (rel == NULL)
		return false;
	if (!sweep_direct_ok(rel))
	{
		table_close(rel, RowExclusiveLock);
		return false;
	}

	/* A publication that replicates deletes needs a replica identity */
	CheckCmdReplicaIdentity(rel, CMD_DELETE);

	cid = GetCurrentCommandId(true);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ItemPointerSet(&maxtid, MaxBlockNumber, MaxOffsetNumber);
	slot = table_slot_create(rel, NULL);
	scan = table_beginscan_tidrange(rel, snapshot, cursor, &maxtid);

	while (n < (uint64) batch_size)
	{
		ItemPointerData tid;
		TM_FailureData tmfd;
		Datum		d;
		bool		isnull;

		CHECK_FOR_INTERRUPTS();
		if (!table_scan_getnextslot_tidrange(scan, ForwardScanDirection, slot))
		{
			more = false;
			break;
		}
		ItemPointerCopy(&slot->tts_tid, &tid);
		if (ItemPointerCompare(&tid, cursor) <= 0)
			continue;
		ItemPointerCopy(&tid, cursor);
		d = slot_getattr(slot, Anum_ledger_expires_at, &isnull);
		if (isnull || DatumGetTimestampTz(d) > now)
			continue;

		switch (table_tuple_delete(rel, &tid, cid, snapshot, InvalidSnapshot,
								   false, &tmfd, false))
		{
			case TM_Ok:
				n++;
				break;
			case TM_BeingModified:	/* held by a transaction under way */
				/*
				 * When that transaction is this one (its own idem_fail, or a
				 * FOR UPDATE of its own), the row is ours to delete, as the
				 * DELETE statement would: ask again, allowed to "wait" for
				 * a lock that only this transaction holds.
				 */
				if (locked_only_by_us(rel, &tid) &&
					table_tuple_delete(rel, &tid, cid, snapshot, InvalidSnapshot,
									   true, &tmfd, false) == TM_Ok)
					n++;
				break;
			case TM_SelfModified:	/* changed by this transaction since */
			case TM_Updated:	/* changed, or deleted, since the scan */
			case TM_Deleted:
				break;
			default:
				elog(ERROR, "unexpected result deleting an expired ledger row");
		}
	}

	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	table_close(rel, NoLock);
	if (n > 0)
		CommandCounterIncrement();

	*reached_end = !more;
	*deleted = n;
	return true;
}
