/*-------------------------------------------------------------------------
 *
 * sweeper.h
 *	  The sweeper: a background worker that deletes a database's expired keys.
 *
 * src/sweeper.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWEEPER_H
#define SWEEPER_H

#include "postmaster/bgworker.h"

/* The run slot of a sweeper of idem_sweeper_start: it has none */
#define SWEEPER_NO_RUN		(-1)

extern bool SweeperLaunch(Oid dboid, const char *dbname, int run,
						  BackgroundWorkerHandle **handle);
extern bool SweeperDatabaseIsBusy(Oid dboid);
extern Oid	SweeperFindExtension(Oid *nspid, TransactionId *xmin);

extern PGDLLEXPORT void IdemSweeperMain(Datum main_arg);

#endif							/* SWEEPER_H */
