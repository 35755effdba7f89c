/*-------------------------------------------------------------------------
 *
 * citus.h
 *	  Whether the ledger is a Citus table, whose rows live in shards.
 *
 * src/citus.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_CITUS_H
#define IDEM_CITUS_H

#include "postgres.h"

extern bool IdemCitusTable(Oid relid);

#endif							/* IDEM_CITUS_H */
