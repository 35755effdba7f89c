/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  The extension's settings (GUCs), the interval rule they share with the
 *	  SQL arguments, and the ledger clock that idempotency.clock_offset moves.
 *
 * src/settings.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "settings.h"

/* GUC storage: the text form lives in the GUC machinery, the parsed form here */
Interval	IdemDefaultTtl = {0, 1, 0};		/* 1 day, reset by the assign hook */
Interval	IdemDefaultLease = {5 * 60 * USECS_PER_SEC, 0, 0};
Interval	IdemClockOffset = {0, 0, 0};
int			IdemSweepInterval = 60;
int			IdemSweepBatchSize = 10000;
int			IdemSweepRateLimit = 25000;
bool		IdemSweepVacuum = true;
bool		IdemPreloaded = false;
bool		IdemEnforceScopeGrants = false;
Interval	IdemMaxLease = {0, 0, IDEM_MAX_INTERVAL_YEARS * MONTHS_PER_YEAR};
bool		IdemOwnerLiveness = true;

static char *default_ttl_text = NULL;
static char *default_lease_text = NULL;
static char *clock_offset_text = NULL;
static char *max_lease_text = NULL;

/*
 * Parse an interval the way interval_in does, but report failure instead of
 * throwing, as a GUC check hook must.
 */
static bool
parse_interval_soft(const char *str, Interval *result)
{
	char		workbuf[256];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	struct pg_itm_in itm_in;
	int			dterr;

	if (str == NULL)
		return false;
	memset(&itm_in, 0, sizeof(itm_in));
	dterr = ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype,
						  MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE,
							   &dtype, &itm_in);
	if (dterr == DTERR_BAD_FORMAT)
	{
		memset(&itm_in, 0, sizeof(itm_in));
		dterr = DecodeISO8601Interval(unconstify(char *, str), &dtype, &itm_in);
	}
	if (dterr != 0 || dtype != DTK_DELTA)
		return false;
	if (itmin2interval(&itm_in, result) != 0)
		return false;
	return true;
}

/*
 * An interval's length in microseconds, months counted as 30 days as interval
 * comparison does.  Computed without any call that could throw, since check
 * hooks run while reading the configuration file.
 */
static double
interval_usecs(const Interval *span)
{
	return (double) span->time +
		(double) span->day * USECS_PER_DAY +
		(double) span->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

/*
 * What is wrong with a ttl, lease or clock offset, if anything.  One rule
 * for GUCs and arguments: at most IDEM_MAX_INTERVAL_YEARS years long,
 * counted as interval comparison counts them (30-day months); and where the
 * interval must be positive, no field below zero, so that adding it can
 * never go back in time (months and days are calendar units: '1 month
 * -29 days' is a day in January and minus one day in February).  Throws
 * nothing: check hooks call it.
 */
IdemIntervalCheck
IdemCheckInterval(const Interval *span, bool positive)
{
	if (fabs(interval_usecs(span)) >
		(double) IDEM_MAX_INTERVAL_YEARS * MONTHS_PER_YEAR * DAYS_PER_MONTH * USECS_PER_DAY)
		return INTERVAL_TOO_LONG;
	if (positive && (span->month < 0 || span->day < 0 || span->time < 0))
		return INTERVAL_NEGATIVE_PART;
	if (positive && span->month == 0 && span->day == 0 && span->time == 0)
		return INTERVAL_NOT_POSITIVE;
	return INTERVAL_OK;
}

/*
 * Check hook shared by the interval GUCs.  Time-valued settings that must be
 * positive say so through the extra flag passed in *extra.
 */
static bool
check_interval_guc(char **newval, void **extra, GucSource source, bool positive)
{
	Interval	span;
	Interval   *copy;

	if (!parse_interval_soft(*newval, &span))
	{
		GUC_check_errdetail("\"%s\" is not a valid interval.", *newval);
		return false;
	}
	switch (IdemCheckInterval(&span, positive))
	{
		case INTERVAL_OK:
			break;
		case INTERVAL_TOO_LONG:
			GUC_check_errdetail("The interval must not be longer than %d years.",
								IDEM_MAX_INTERVAL_YEARS);
			return false;
		case INTERVAL_NEGATIVE_PART:
			GUC_check_errdetail("No part of the interval may be negative.");
			return false;
		case INTERVAL_NOT_POSITIVE:
			GUC_check_errdetail("The interval must be longer than zero.");
			return false;
	}
	copy = (Interval *) IdemGucMalloc(sizeof(Interval));
	if (copy == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	*copy = span;
	*extra = copy;
	return true;
}

static bool
check_positive_interval(char **newval, void **extra, GucSource source)
{
	return check_interval_guc(newval, extra, source, true);
}

static bool
check_any_interval(char **newval, void **extra, GucSource source)
{
	return check_interval_guc(newval, extra, source, false);
}

static void
assign_default_ttl(const char *newval, void *extra)
{
	IdemDefaultTtl = *(Interval *) extra;
}

static void
assign_default_lease(const char *newval, void *extra)
{
	IdemDefaultLease = *(Interval *) extra;
}

static void
assign_clock_offset(const char *newval, void *extra)
{
	IdemClockOffset = *(Interval *) extra;
}

static void
assign_max_lease(const char *newval, void *extra)
{
	IdemMaxLease = *(Interval *) extra;
}

/*
 * The ledger clock: the wall clock moved by idempotency.clock_offset, so that
 * tests can step past a TTL or a lease without sleeping.
 */
TimestampTz
IdemNow(void)
{
	return IdemTimestampPlus(GetCurrentTimestamp(), &IdemClockOffset);
}

/* timestamptz + interval, with the same calendar rules as the SQL operator */
TimestampTz
IdemTimestampPlus(TimestampTz ts, const Interval *span)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(ts),
												   PointerGetDatum(span)));
}

/*
 * Define every idempotency.* setting; called once, from _PG_init.
 */
void
IdemDefineSettings(void)
{
	DefineCustomStringVariable("idempotency.default_ttl",
							   "How long a completed key is kept when idem_begin gives no ttl.",
							   NULL,
							   &default_ttl_text,
							   "24 hours",
							   PGC_USERSET,
							   0,
							   check_positive_interval, assign_default_ttl, NULL);

	DefineCustomStringVariable("idempotency.default_lease",
							   "How long a committed in-progress attempt blocks others when idem_begin gives no lease.",
							   NULL,
							   &default_lease_text,
							   "5 minutes",
							   PGC_USERSET,
							   0,
							   check_positive_interval, assign_default_lease, NULL);

	DefineCustomStringVariable("idempotency.clock_offset",
							   "Moves the ledger's clock, for tests that step past a TTL or a lease.",
							   NULL,
							   &clock_offset_text,
							   "0",
							   PGC_SUSET,
							   0,
							   check_any_interval, assign_clock_offset, NULL);

	DefineCustomIntVariable("idempotency.sweep_interval",
							"Time between two sweeps of expired keys; 0 turns sweeping off.",
							NULL,
							&IdemSweepInterval,
							60, 0, INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idempotency.sweep_batch_size",
							"Most expired keys deleted in one sweep transaction.",
							NULL,
							&IdemSweepBatchSize,
							10000, 1, 10000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idempotency.sweep_rate_limit",
							"Most expired keys a sweeper removes per second; 0 means no limit.",
							"The sweeper sleeps after each batch for as long as the batch's keys take at this rate, so that it leaves the server's CPU and WAL to the foreground.",
							&IdemSweepRateLimit,
							25000, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("idempotency.sweep_vacuum",
							 "Vacuum the ledger after a sweep that leaves a tenth of it or more as dead rows.",
							 "Settable per database.  Autovacuum alone may come too late to let new keys reuse the space.",
							 &IdemSweepVacuum,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("idempotency.enforce_scope_grants",
							 "Lets a role use only the scopes granted to it in idem_scope_grants.",
							 "Superusers may use every scope.",
							 &IdemEnforceScopeGrants,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("idempotency.max_lease",
							   "Longest lease idem_begin accepts, given as its argument or by idempotency.default_lease.",
							   NULL,
							   &max_lease_text,
							   "100 years",
							   PGC_SUSET,
							   0,
							   check_positive_interval, assign_max_lease, NULL);

	DefineCustomBoolVariable("idempotency.owner_liveness",
							 "Records the session that begins an attempt, so that the next begin takes over at once when that session is gone.",
							 "Off: the attempts this session begins are bound by their lease alone, for work that is begun in one connection and finished in another.",
							 &IdemOwnerLiveness,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("idempotency");
}
