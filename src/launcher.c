/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  Starts one sweeper per database that has the extension (placeholder).
 *
 * src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "idempotency.h"

void
IdemRegisterLauncher(void)
{
}

void
IdemLauncherMain(Datum main_arg)
{
}
