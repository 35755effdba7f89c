/*-------------------------------------------------------------------------
 *
 * ledger.h
 *	  The ledger's rules: what begin, finish, fail, once and sweep do to a
 *	  key, whichever path reaches the table.
 *
 * Called by the SQL entry points (api.c) and the sweeper; calls down into
 * ledger_direct.c (the fast path) and ledger_sql.c (everything else).
 *
 * src/ledger.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_LEDGER_H
#define IDEM_LEDGER_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/itemptr.h"

#include "idempotency.h"

/* The arguments of idem_begin and idem_once, validated */
typedef struct BeginArgs
{
	text	   *key;
	text	   *scope;
	bool		has_request;
	uint8		fingerprint[IDEM_FINGERPRINT_LEN];
	Interval	ttl;
	Interval	lease;
	bool		wait;
	bool		has_await;		/* await given, and longer than zero */
	Interval	await;
} BeginArgs;

/* What a call tells its caller: the outcome column of idem_result */
typedef enum IdemOutcome
{
	OUTCOME_STARTED,
	OUTCOME_REPLAYED,
	OUTCOME_IN_PROGRESS,
	OUTCOME_COMPLETED
} IdemOutcome;

/*
 * An idem_result: the outcome, and what goes with it.  A NULL column is
 * a false has_ flag.
 */
typedef struct IdemResult
{
	IdemOutcome outcome;
	bool		has_status;
	int32		status;
	bool		has_response;
	Datum		response;		/* in the caller's memory context */
	bool		has_attempt;
	int32		attempt;
} IdemResult;

extern IdemResult LedgerBegin(Oid nspid, const BeginArgs *args);
extern bool LedgerOnce(Oid nspid, const BeginArgs *args);
extern IdemResult LedgerFinish(Oid nspid, text *scope, text *key, int32 status,
							   bool has_response, Datum response,
							   bool has_attempt, int32 attempt);
extern void LedgerRelease(Oid nspid, text *scope, text *key,
						  bool has_attempt, int32 attempt);
extern uint64 LedgerSweepBatch(Oid nspid, int batch_size, ItemPointer cursor,
							   bool *reached_end);
extern bool LedgerSweptByCoordinator(Oid nspid);
extern int64 LedgerCountExpired(Oid nspid);
extern void LedgerSetLogged(Oid nspid, bool logged);

#endif							/* IDEM_LEDGER_H */
