/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher: runs a sweeper in every database that has the extension.
 *
 * src/launcher.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef LAUNCHER_H
#define LAUNCHER_H

#include "fmgr.h"

extern void IdemRegisterLauncher(void);

extern PGDLLEXPORT void IdemLauncherMain(Datum main_arg);

#endif							/* LAUNCHER_H */
