/*-------------------------------------------------------------------------
 *
 * settings.h
 *	  The extension's settings, the interval rule and the ledger clock.
 *
 * src/settings.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_SETTINGS_H
#define IDEM_SETTINGS_H

#include "datatype/timestamp.h"

#include "idempotency.h"

/* GUCs, in their parsed form */
extern Interval IdemDefaultTtl;
extern Interval IdemDefaultLease;
extern Interval IdemClockOffset;
extern int	IdemSweepInterval;		/* seconds; 0 turns sweeping off */
extern int	IdemSweepBatchSize;
extern int	IdemSweepRateLimit;	/* keys per second; 0: no limit */
extern bool IdemSweepVacuum;
extern bool IdemEnforceScopeGrants;
extern Interval IdemMaxLease;
extern bool IdemOwnerLiveness;

/* True when the library was loaded by shared_preload_libraries */
extern bool IdemPreloaded;

/* What IdemCheckInterval finds wrong with a ttl, lease or clock offset */
typedef enum IdemIntervalCheck
{
	INTERVAL_OK,
	INTERVAL_TOO_LONG,			/* over IDEM_MAX_INTERVAL_YEARS years */
	INTERVAL_NEGATIVE_PART,		/* a field below zero where it must be positive */
	INTERVAL_NOT_POSITIVE		/* zero where it must be positive */
} IdemIntervalCheck;

extern void IdemDefineSettings(void);
extern IdemIntervalCheck IdemCheckInterval(const Interval *span, bool positive);
extern TimestampTz IdemNow(void);
extern TimestampTz IdemTimestampPlus(TimestampTz ts, const Interval *span);

#endif							/* IDEM_SETTINGS_H */
