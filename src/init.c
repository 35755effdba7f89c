/*-------------------------------------------------------------------------
 *
 * init.c
 *	  Module entry point: settings, shared memory and the launcher's registration.
 *
 * src/init.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/shmem.h"

#include "await.h"
#include "idempotency.h"
#include "launcher.h"
#include "owner.h"
#include "sweep_board.h"
#include "settings.h"
#include "stats.h"

PG_MODULE_MAGIC;

static shmem_request_hook_type prev_shmem_request_hook = NULL;

void		_PG_init(void);

/*
 * Reserve the shared memory of the sweepers' status board, the counters, and
 * await's slots and registry of exiting owners
 */
static void
idem_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(SweepBoardShmemSize());
	RequestAddinShmemSpace(IdemStatsShmemSize());
	RequestAddinShmemSpace(AwaitShmemSize());
	RequestAddinShmemSpace(OwnerShmemSize());
}

/*
 * Module load: define the GUCs and, when preloaded, register the launcher
 * that starts one sweeper per database.
 */
void
_PG_init(void)
{
	IdemDefineSettings();

	if (process_shared_preload_libraries_in_progress)
	{
		IdemPreloaded = true;
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = idem_shmem_request;
		IdemRegisterLauncher();
	}
}
