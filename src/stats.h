/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Counters an operator watches: what the API did, per database.
 *
 * src/stats.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_STATS_H
#define IDEM_STATS_H

#include "postgres.h"

/* The counters, in the order of the columns of idem_stats */
typedef enum IdemCounter
{
	STAT_STARTED,				/* begins answered started */
	STAT_REPLAYED,				/* begins answered replayed */
	STAT_IN_PROGRESS,			/* begins answered in_progress */
	STAT_MISMATCHES,			/* IK001: a key reused for another request */
	STAT_TAKEOVERS_LEASE,		/* attempts taken over after their lease */
	STAT_TAKEOVERS_OWNER_GONE,	/* attempts taken over from a gone session */
	STAT_FINISHES,				/* attempts finished */
	STAT_FAILS,					/* attempts released by idem_fail */
	STAT_ONCE_TRUE,				/* idem_once calls answered true */
	STAT_ONCE_FALSE,			/* idem_once calls answered false */
	STAT_KEYS_SWEPT,			/* expired keys deleted */
	STAT_AWAITS,				/* begins that awaited an attempt (1.2) */
	STAT_AWAIT_TIMEOUTS,		/* of those, begins whose await ran out */
	STAT_COUNTERS				/* how many there are */
} IdemCounter;

/* How many counters version 1.1's idem_stats_read shows */
#define STAT_COUNTERS_1_1	(STAT_KEYS_SWEPT + 1)

extern Size IdemStatsShmemSize(void);
extern void IdemStatsAdd(IdemCounter counter, uint64 n);

#endif							/* IDEM_STATS_H */
