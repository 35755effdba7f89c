/*-------------------------------------------------------------------------
 *
 * sweep_board.h
 *	  The sweepers' status board and the launcher's mailbox, in shared memory.
 *
 * The board is the bottom of the background workers: sweepers write their
 * progress and how their passes end on it, the launcher and the SQL
 * functions read it, and it calls none of them.
 *
 * src/sweep_board.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWEEP_BOARD_H
#define SWEEP_BOARD_H

#include "datatype/timestamp.h"
#include "storage/latch.h"

/* Sweepers the launcher runs at the same time: its run slots */
#define SWEEP_BOARD_RUNS		3

/* Databases that can wait for the launcher in its mailbox */
#define SWEEP_BOARD_REQUESTS	32

/* Longest error message kept for idem_sweeper_status */
#define SWEEP_BOARD_ERROR_LEN	160

/* How a pass ended, as far as the next one is concerned */
typedef enum SweepOutcome
{
	SWEEP_UNKNOWN,				/* no report: it could not connect, or died */
	SWEEP_DONE,					/* swept the whole ledger */
	SWEEP_YIELDED,				/* stepped aside: database or extension busy,
								 * sweeping off, canceled, or another sweeper
								 * there */
	SWEEP_FAILED,				/* an error ended the pass */
	SWEEP_NO_EXTENSION			/* the database does not have the extension */
} SweepOutcome;

/*
 * The status of the sweeper of one database.  Only sweep_board.c touches
 * the slots in shared memory; others get copies (SweepBoardCopy), or hold
 * a pointer to their own slot to pass back to the functions below.
 */
typedef struct SweepSlot
{
	Oid			dboid;			/* InvalidOid when the slot is free */
	pid_t		pid;			/* sweeper connected to the database, or 0 */
	bool		sweeping;		/* a pass is in progress */
	int			failures;		/* consecutive failed passes */
	TimestampTz pass_started;	/* start of the current or last pass */
	TimestampTz pass_finished;	/* end of the last completed pass, or 0 */
	TimestampTz next_pass;		/* when the next pass is due, or 0 */
	int64		removed_last_pass;	/* keys removed by the last completed pass */
	int64		removed_total;	/* keys removed since the server started */
	int64		longest_batch_us;	/* longest batch of the last completed pass */
	bool		by_coordinator; /* the last pass left the ledger to the Citus
								 * coordinator's sweeper */
	char		last_error[SWEEP_BOARD_ERROR_LEN];	/* of the last failure */
} SweepSlot;

extern Size SweepBoardShmemSize(void);
extern void SweepBoardAttach(void);
extern int	SweepBoardCapacity(void);

/* A sweeper's own slot: each does nothing when given NULL (no slot) */
extern SweepSlot *SweepBoardClaim(Oid dboid, bool *taken);
extern void SweepBoardPassStarted(SweepSlot *slot, TimestampTz started);
extern void SweepBoardBatchDone(SweepSlot *slot, int64 removed);
extern void SweepBoardPassDone(SweepSlot *slot, int64 removed,
							   int64 longest_batch_us, bool by_coordinator);
extern bool SweepBoardFailureIsNew(SweepSlot *slot, const char *message);
extern void SweepBoardPassFailed(SweepSlot *slot, const char *message);
extern void SweepBoardPassOver(SweepSlot *slot);

/* Any database's slot */
extern void SweepBoardSetNextPass(Oid dboid, TimestampTz next_pass);
extern void SweepBoardForget(Oid dboid);
extern pid_t SweepBoardSweeperPid(Oid dboid);
extern bool SweepBoardHasRoom(Oid dboid);
extern SweepSlot *SweepBoardCopy(int *nslots);
extern bool SweepBoardSweeperAlive(const SweepSlot *slot);

/* The launcher's mailbox */
extern void SweepBoardSetLauncher(Latch *latch);
extern void SweepBoardRequestPass(Oid dboid);
extern int	SweepBoardTakeRequests(Oid *dboids, bool *all);
extern void SweepBoardRunStarting(int run);
extern void SweepBoardRunEnded(int run, SweepOutcome outcome);
extern SweepOutcome SweepBoardRunOutcome(int run);

#endif							/* SWEEP_BOARD_H */
