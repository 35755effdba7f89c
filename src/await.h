/*-------------------------------------------------------------------------
 *
 * await.h
 *	  Waiting for a key to settle: idem_begin's await.
 *
 * src/await.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_AWAIT_H
#define IDEM_AWAIT_H

#include "postgres.h"

/* True once this backend has begun an attempt that names it as its owner */
extern bool AwaitOwnerNoted;

extern Size AwaitShmemSize(void);
extern void AwaitNoteOwnerSlow(void);
extern void AwaitKeyChanged(text *scope, text *key);
extern void AwaitPrepare(text *scope, text *key, bool local);
extern void AwaitSleep(long timeout_ms);
extern void AwaitDone(void);

/*
 * Note that this backend owns an attempt, so that its exit wakes whoever
 * awaits a key: one test of a flag on the paths that begin attempts.
 */
static inline void
AwaitNoteOwner(void)
{
	if (unlikely(!AwaitOwnerNoted))
		AwaitNoteOwnerSlow();
}

#endif							/* IDEM_AWAIT_H */
