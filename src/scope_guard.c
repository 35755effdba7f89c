/*-------------------------------------------------------------------------
 *
 * scope_guard.c
 *	  What a caller of the API may do: use the scopes granted to its role
 *	  in idem_scope_grants, and ask for a lease no longer than
 *	  idempotency.max_lease.
 *
 * With idempotency.enforce_scope_grants on, idem_begin, idem_finish,
 * idem_fail and idem_once check, before they touch the ledger, that the
 * caller's role has the privileges of a role granted a prefix of the call's
 * scope.  The API functions are SECURITY DEFINER, so the role that counts is
 * the outer one (the session's role, after SET ROLE), not the extension's
 * owner they run as.  Superusers may use every scope: they can change the
 * ledger directly anyway.
 *
 * The grants are read once into backend memory and kept until the table
 * changes.  Plain writes send no relcache invalidation, so a statement
 * trigger on idem_scope_grants sends one: this backend's callback sees it at
 * the writing transaction's next command (and again, undoing it, if that
 * transaction rolls back), every other backend once the writer has
 * committed, at its next transaction at the latest.  The grants are read
 * with the latest snapshot, as the catalog caches read the catalogs, so that
 * a reload after an invalidation sees the commit that sent it whatever the
 * caller's own snapshot.  Which grants a role may use is worked out once per
 * role and kept until the grants or the role memberships change.
 *
 * src/scope_guard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "settings.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "idempotency.h"
#include "scope_guard.h"

PG_FUNCTION_INFO_V1(idem_scope_grants_changed);

/* One row of idem_scope_grants */
typedef struct ScopeGrant
{
	char	   *prefix;
	int			len;			/* of prefix, in bytes */
	Oid			grantee;
} ScopeGrant;

/* Why a call may not use its scope */
typedef enum ScopeDenial
{
	DENIED_NO_GRANT,			/* no grant of a prefix to the role */
	DENIED_NO_TABLE,			/* the extension has no idem_scope_grants */
	DENIED_RESTRICTED			/* inside a security-restricted operation */
} ScopeDenial;

/*
 * The grants as last read, and the grants that the last role checked may
 * use.  Both live in cxt, which a reload resets.
 */
static struct
{
	bool		callbacks;		/* invalidation callbacks registered */
	MemoryContext cxt;
	bool		valid;
	Oid			nspid;			/* the extension schema they were read from */
	Oid			relid;			/* its idem_scope_grants */
	ScopeGrant *grants;
	int			ngrants;
	bool		role_valid;
	Oid			role;
	ScopeGrant **role_grants;	/* grants whose grantee role has the
								 * privileges of */
	int			nrole_grants;
	uint64		invalidations;	/* counts the callbacks' calls */
}			cache;

/* A change to idem_scope_grants, or to every relation */
static void
grants_changed(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == cache.relid)
	{
		cache.valid = false;
		cache.role_valid = false;
		cache.invalidations++;
	}
}

/* A change to pg_authid or pg_auth_members */
static void
roles_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	cache.role_valid = false;
	cache.invalidations++;
}

/*
 * Read idem_scope_grants of schema nspid into the cache.  Leaves
 * cache.relid invalid when the table does not exist (an extension not
 * updated to 1.1 yet); nothing is cached then.
 */
static void
load_grants(Oid nspid)
{
	Relation	rel;
	TupleDesc	desc;
	AttrNumber	prefix_att = InvalidAttrNumber;
	AttrNumber	grantee_att = InvalidAttrNumber;
	Snapshot	snapshot;
	TableScanDesc scan;
	TupleTableSlot *slot;
	uint64		invalidations;
	int			allocated = 16;
	Oid			relid;

	if (!cache.callbacks)
	{
		CacheRegisterRelcacheCallback(grants_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, roles_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, roles_changed, (Datum) 0);
		cache.callbacks = true;
	}
	if (cache.cxt == NULL)
		cache.cxt = AllocSetContextCreate(CacheMemoryContext,
										  "idempotency scope grants",
										  ALLOCSET_SMALL_SIZES);

	cache.valid = false;
	cache.role_valid = false;
	MemoryContextReset(cache.cxt);
	cache.grants = NULL;
	cache.ngrants = 0;
	cache.role_grants = NULL;
	cache.nrole_grants = 0;
	cache.nspid = nspid;
	cache.relid = InvalidOid;

	relid = get_relname_relid(IDEM_SCOPE_GRANTS_NAME, nspid);
	if (!OidIsValid(relid))
		return;
	cache.relid = relid;
	rel = try_table_open(relid, AccessShareLock);
	if (rel == NULL)
	{
		cache.relid = InvalidOid;
		return;
	}

	/* Opening it took in pending invalidations: count from here */
	invalidations = cache.invalidations;

	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (strcmp(NameStr(att->attname), "scope_prefix") == 0 &&
			att->atttypid == TEXTOID)
			prefix_att = att->attnum;
		else if (strcmp(NameStr(att->attname), "grantee") == 0 &&
				 att->atttypid == REGROLEOID)
			grantee_att = att->attnum;
	}
	if (prefix_att == InvalidAttrNumber || grantee_att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has an unexpected layout",
						IDEM_SCOPE_GRANTS_NAME),
				 errdetail("It needs columns scope_prefix text and grantee regrole."),
				 errhint("Restore the table as the extension creates it.")));

	cache.grants = MemoryContextAlloc(cache.cxt, allocated * sizeof(ScopeGrant));
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snapshot, 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		prefix_null;
		bool		grantee_null;
		Datum		prefix = slot_getattr(slot, prefix_att, &prefix_null);
		Datum		grantee = slot_getattr(slot, grantee_att, &grantee_null);
		ScopeGrant *grant;

		/* the columns are NOT NULL; a NULL grants nothing */
		if (prefix_null || grantee_null)
			continue;
		if (cache.ngrants == allocated)
		{
			allocated *= 2;
			cache.grants = repalloc(cache.grants, allocated * sizeof(ScopeGrant));
		}
		grant = &cache.grants[cache.ngrants++];
		grant->prefix = MemoryContextStrdup(cache.cxt, TextDatumGetCString(prefix));
		grant->len = strlen(grant->prefix);
		grant->grantee = DatumGetObjectId(grantee);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);

	/* Valid unless the table changed meanwhile; then read it again next time */
	cache.valid = (cache.invalidations == invalidations);
}

/* Work out which grants role may use: those of roles it has the privileges of */
static void
load_role_grants(Oid role)
{
	uint64		invalidations = cache.invalidations;

	if (cache.role_grants != NULL)
		pfree(cache.role_grants);
	cache.role_grants = MemoryContextAlloc(cache.cxt,
										   Max(cache.ngrants, 1) * sizeof(ScopeGrant *));
	cache.nrole_grants = 0;
	cache.role = role;
	for (int i = 0; i < cache.ngrants; i++)
	{
		if (has_privs_of_role(role, cache.grants[i].grantee))
			cache.role_grants[cache.nrole_grants++] = &cache.grants[i];
	}
	cache.role_valid = (cache.invalidations == invalidations);
}

/* Raise 42501 for a call that may not use its scope; changes nothing */
static void
report_denied(Oid nspid, text *scope, Oid role, ScopeDenial why)
{
	char	   *scope_str = text_to_cstring(scope);
	char	   *rolename = GetUserNameFromId(role, true);
	char	   *nspname = get_namespace_name(nspid);

	if (rolename == NULL)
		rolename = psprintf("%u", role);
	if (nspname == NULL)
		nspname = "?";

	switch (why)
	{
		case DENIED_NO_GRANT:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for idempotency scope \"%s\"",
							scope_str),
					 errdetail("Role \"%s\" has no grant of a prefix of scope \"%s\" in %s.%s, and idempotency.enforce_scope_grants is on.",
							   rolename, scope_str, quote_identifier(nspname),
							   IDEM_SCOPE_GRANTS_NAME),
					 scope_str[0] == '\0' ?
					 errhint("The default scope '' is granted only by the prefix '', which grants every scope: give the role a scope of its own.") :
					 errhint("The extension's owner grants it with: INSERT INTO %s.%s (scope_prefix, grantee) VALUES (%s, %s);",
							 quote_identifier(nspname), IDEM_SCOPE_GRANTS_NAME,
							 quote_literal_cstr(scope_str),
							 quote_literal_cstr(quote_identifier(rolename)))));
			break;
		case DENIED_NO_TABLE:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for idempotency scope \"%s\"",
							scope_str),
					 errdetail("idempotency.enforce_scope_grants is on, but schema %s has no table %s: the extension's objects are older than version 1.1.",
							   quote_identifier(nspname), IDEM_SCOPE_GRANTS_NAME),
					 errhint("Run ALTER EXTENSION idempotency UPDATE.")));
			break;
		case DENIED_RESTRICTED:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for idempotency scope \"%s\"",
							scope_str),
					 errdetail("The call was made inside a security-restricted operation (such as REFRESH MATERIALIZED VIEW or an index expression), where the role whose code runs cannot be told, and idempotency.enforce_scope_grants is on."),
					 errhint("Call the API outside such operations.")));
			break;
	}
}

/*
 * Raise 42501 unless the caller may use scope: enforcement is off, the
 * caller is a superuser, or its role has the privileges of a role granted a
 * prefix of the scope in the idem_scope_grants of schema nspid.
 */
void
ScopeGuardCheck(Oid nspid, text *scope)
{
	const char *bytes;
	int			len;
	Oid			role;

	if (!IdemEnforceScopeGrants)
		return;

	/*
	 * In a security-restricted operation PostgreSQL runs a table owner's
	 * code on behalf of the session; the outer role is not that code's.
	 */
	role = GetOuterUserId();
	if (InSecurityRestrictedOperation())
		report_denied(nspid, scope, role, DENIED_RESTRICTED);
	if (superuser_arg(role))
		return;

	if (!cache.valid || cache.nspid != nspid)
		load_grants(nspid);
	if (!OidIsValid(cache.relid))
		report_denied(nspid, scope, role, DENIED_NO_TABLE);
	if (!cache.role_valid || cache.role != role)
		load_role_grants(role);

	bytes = VARDATA_ANY(scope);
	len = VARSIZE_ANY_EXHDR(scope);
	for (int i = 0; i < cache.nrole_grants; i++)
	{
		const ScopeGrant *grant = cache.role_grants[i];

		if (grant->len <= len && memcmp(grant->prefix, bytes, grant->len) == 0)
			return;
	}
	report_denied(nspid, scope, role, DENIED_NO_GRANT);
}

/*
 * Raise 22023 when a lease is longer than idempotency.max_lease.  given
 * tells whether it came from the call's argument or from
 * idempotency.default_lease.
 */
void
ScopeGuardCheckLease(const Interval *lease, bool given)
{
	if (!DatumGetBool(DirectFunctionCall2(interval_gt,
										  IntervalPGetDatum(lease),
										  IntervalPGetDatum(&IdemMaxLease))))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("lease is longer than idempotency.max_lease"),
			 given ?
			 errdetail("The lease asked for was %s; idempotency.max_lease is %s.",
					   DatumGetCString(DirectFunctionCall1(interval_out,
														   IntervalPGetDatum(lease))),
					   GetConfigOption("idempotency.max_lease", false, false)) :
			 errdetail("The lease is idempotency.default_lease, %s; idempotency.max_lease is %s.",
					   GetConfigOption("idempotency.default_lease", false, false),
					   GetConfigOption("idempotency.max_lease", false, false)),
			 errhint("Ask for a shorter lease; only a superuser can raise idempotency.max_lease.")));
}

/*
 * idem_scope_grants_changed() returns trigger
 *
 * Statement trigger on idem_scope_grants: send a relcache invalidation for
 * the table, so that every backend reads the grants afresh.
 */
Datum
idem_scope_grants_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("idem_scope_grants_changed() may only be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
