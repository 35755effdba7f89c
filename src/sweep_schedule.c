/*-------------------------------------------------------------------------
 *
 * sweep_schedule.c
 *	  When a database's next pass is due: one back-off policy for every
 *	  sweeper.
 *
 * The launcher keeps a schedule for each database, and a sweeper of
 * idem_sweeper_start one for its own; both follow these rules, after a
 * pass that
 *	done			swept the whole ledger: one idempotency.sweep_interval later
 *	yielded			stepped aside (the database or the extension was busy,
 *					sweeping was turned off, a cancel, another sweeper
 *					there), or was put off before it began: one interval
 *	failed			an error, or a sweeper that died or could not connect: one
 *					interval, doubling with each failure in a row, up to ten
 *					minutes, or one interval when that is longer
 *	no extension	as failed
 * counted from the end of that pass.  A failing sweeper thus never tries
 * more often than a healthy one sweeps.  The due time is worked out from
 * the current setting each time it is asked for, so a reload that changes
 * sweep_interval moves every pending pass, retries included, at once.
 *
 * src/sweep_schedule.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "postmaster/interrupt.h"
#include "settings.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "idempotency.h"
#include "sweep_schedule.h"

/* Longest back-off after failures, unless the interval is longer */
#define MAX_BACKOFF_MS			(10 * 60 * 1000)

/* Shortest wait between two passes, whatever the interval */
#define MIN_WAIT_MS				1000

/* Doublings of the back-off worth counting (past the cap anyway) */
#define MAX_DOUBLINGS			20

/* The next pass is due at once, and past failures are forgotten */
void
SweepScheduleNow(SweepSchedule *schedule)
{
	schedule->last_end = 0;
	schedule->last = SWEEP_UNKNOWN;
	schedule->streak = 0;
}

/* A pass ended now, or was put off (SWEEP_YIELDED), in this way */
void
SweepScheduleRecord(SweepSchedule *schedule, SweepOutcome outcome)
{
	schedule->last_end = GetCurrentTimestamp();
	schedule->last = outcome;
	switch (outcome)
	{
		case SWEEP_DONE:
			schedule->streak = 0;
			break;
		case SWEEP_YIELDED:
			break;
		case SWEEP_UNKNOWN:
		case SWEEP_FAILED:
		case SWEEP_NO_EXTENSION:
			schedule->streak++;
			break;
	}
}

/*
 * Milliseconds to wait after a pass that ended so, streak failures in a
 * row: the policy itself (see the top of the file).
 */
static int64
wait_after(SweepOutcome outcome, int streak)
{
	int64		interval = Max((int64) IdemSweepInterval * 1000, MIN_WAIT_MS);

	switch (outcome)
	{
		case SWEEP_DONE:
		case SWEEP_YIELDED:
			return interval;
		case SWEEP_UNKNOWN:
		case SWEEP_FAILED:
		case SWEEP_NO_EXTENSION:
			break;
	}
	return Min(interval << Min(Max(streak - 1, 0), MAX_DOUBLINGS),
			   Max(interval, MAX_BACKOFF_MS));
}

/* When the next pass is due, with the current sweep_interval */
TimestampTz
SweepScheduleDue(const SweepSchedule *schedule)
{
	if (schedule->last_end == 0)
		return 0;
	return TimestampTzPlusMilliseconds(schedule->last_end,
									   wait_after(schedule->last,
												  schedule->streak));
}

/* Milliseconds from now until a time, rounded up; 0 when it has come */
long
SweepScheduleMsUntil(TimestampTz when)
{
	long		secs;
	int			usecs;

	if (when <= GetCurrentTimestamp())
		return 0;
	TimestampDifference(GetCurrentTimestamp(), when, &secs, &usecs);
	return secs * 1000L + usecs / 1000 + 1;
}

/*
 * Read the configuration again when a SIGHUP has come; returns whether it
 * did.  Due times follow a new sweep_interval by themselves.
 */
bool
SweepScheduleReload(void)
{
	if (!ConfigReloadPending)
		return false;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	return true;
}
