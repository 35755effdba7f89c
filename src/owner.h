/*-------------------------------------------------------------------------
 *
 * owner.h
 *	  The session that began an attempt, and whether it still exists.
 *
 * src/owner.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_OWNER_H
#define IDEM_OWNER_H

#include "postgres.h"

#include "datatype/timestamp.h"

/*
 * A session of a server: its backend's pid, when the backend started, and
 * when the server started.  The ledger keeps it as a bytea of
 * IDEM_OWNER_LEN bytes, each field big-endian, as int4send and
 * timestamptz_send write them.
 */
typedef struct IdemOwner
{
	int32		pid;
	TimestampTz started;		/* the backend's start (MyStartTimestamp) */
	TimestampTz incarnation;	/* the server's start (PgStartTime) */
} IdemOwner;

#define IDEM_OWNER_LEN	20

extern void OwnerSelf(IdemOwner *owner);
extern Datum OwnerDatum(const IdemOwner *owner);
extern bool OwnerFromDatum(Datum d, IdemOwner *owner);
extern bool OwnerIsGone(const IdemOwner *owner);
extern Size OwnerShmemSize(void);
extern void OwnerMarkExiting(void);

#endif							/* IDEM_OWNER_H */
