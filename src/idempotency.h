/*-------------------------------------------------------------------------
 *
 * idempotency.h
 *	  Shared declarations of the idempotency extension.
 *
 * src/idempotency.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEMPOTENCY_H
#define IDEMPOTENCY_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/itemptr.h"
#include "utils/jsonb.h"

#define IDEM_EXTENSION_NAME		"idempotency"
#define IDEM_LEDGER_NAME		"idem_ledger"

/* Longest key accepted, in bytes */
#define IDEM_MAX_KEY_BYTES		255

/* Longest ttl, lease or clock offset accepted, in years */
#define IDEM_MAX_INTERVAL_YEARS	100

/* Length of a request fingerprint, in bytes (SHA-256, first 128 bits) */
#define IDEM_FINGERPRINT_LEN	16

/* SQLSTATEs of the extension */
#define ERRCODE_IDEM_REQUEST_MISMATCH	MAKE_SQLSTATE('I','K','0','0','1')
#define ERRCODE_IDEM_NOT_IN_PROGRESS	MAKE_SQLSTATE('I','K','0','0','2')
#define ERRCODE_IDEM_SUPERSEDED			MAKE_SQLSTATE('I','K','0','0','3')

/* idempotency.c: GUCs */
extern Interval IdemDefaultTtl;
extern Interval IdemDefaultLease;
extern Interval IdemClockOffset;
extern int	IdemSweepInterval;		/* seconds; 0 turns sweeping off */
extern int	IdemSweepBatchSize;
extern bool IdemSweepVacuum;
extern bool IdemPreloaded;
extern bool IdemEnforceScopeGrants;
extern Interval IdemMaxLease;
extern bool IdemOwnerLiveness;

/* What IdemCheckInterval finds wrong with a ttl, lease or clock offset */
typedef enum IdemIntervalCheck
{
	INTERVAL_OK,
	INTERVAL_TOO_LONG,			/* over IDEM_MAX_INTERVAL_YEARS years */
	INTERVAL_NEGATIVE_PART,		/* a field below zero where it must be positive */
	INTERVAL_NOT_POSITIVE		/* zero where it must be positive */
} IdemIntervalCheck;

extern IdemIntervalCheck IdemCheckInterval(const Interval *span, bool positive);
extern TimestampTz IdemNow(void);
extern TimestampTz IdemTimestampPlus(TimestampTz ts, const Interval *span);

/* fingerprint.c: canonical JSON, pure C */
extern void IdemFingerprint(Jsonb *request, uint8 *out);
extern char *IdemCanonicalText(Jsonb *doc);


#endif							/* IDEMPOTENCY_H */
