/*-------------------------------------------------------------------------
 *
 * sweeper.c
 *	  The per-database sweeper that deletes expired keys (placeholder).
 *
 * src/sweeper.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "idempotency.h"

void
IdemSweeperMain(Datum main_arg)
{
}
