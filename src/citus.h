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

#include "access/attnum.h"

extern bool IdemCitusTable(Oid relid);
extern AttrNumber IdemCitusDistributionColumn(Oid relid);
extern bool IdemCitusWorkerNode(void);

#endif							/* IDEM_CITUS_H */
