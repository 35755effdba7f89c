/*-------------------------------------------------------------------------
 *
 * scope_guard.h
 *	  What a caller of the API may do: the scopes granted to its role, and
 *	  the longest lease it may ask for.
 *
 * src/scope_guard.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_SCOPE_GUARD_H
#define IDEM_SCOPE_GUARD_H

#include "postgres.h"

#include "datatype/timestamp.h"

#define IDEM_SCOPE_GRANTS_NAME	"idem_scope_grants"

extern void ScopeGuardCheck(Oid nspid, text *scope);
extern void ScopeGuardCheckLease(const Interval *lease, bool given);

#endif							/* IDEM_SCOPE_GUARD_H */
