/*-------------------------------------------------------------------------
 *
 * sweep_schedule.h
 *	  When a database's next pass is due: one back-off policy for every
 *	  sweeper.
 *
 * src/sweep_schedule.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWEEP_SCHEDULE_H
#define SWEEP_SCHEDULE_H

#include "datatype/timestamp.h"

#include "sweep_board.h"

/* The schedule of one database's passes */
typedef struct SweepSchedule
{
	TimestampTz last_end;		/* when the last pass ended or was put off;
								 * 0: the next pass is due at once */
	SweepOutcome last;			/* how it ended */
	int			streak;			/* passes in a row that failed or found no
								 * extension */
} SweepSchedule;

extern void SweepScheduleNow(SweepSchedule *schedule);
extern void SweepScheduleRecord(SweepSchedule *schedule, SweepOutcome outcome);
extern TimestampTz SweepScheduleDue(const SweepSchedule *schedule);
extern long SweepScheduleMsUntil(TimestampTz when);
extern bool SweepScheduleReload(void);

#endif							/* SWEEP_SCHEDULE_H */
