/*-------------------------------------------------------------------------
 *
 * fingerprint.h
 *	  Request fingerprints and canonical JSON text (pure C, no SPI).
 *
 * src/fingerprint.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_FINGERPRINT_H
#define IDEM_FINGERPRINT_H

#include "utils/jsonb.h"

#include "idempotency.h"

/* Fills out[IDEM_FINGERPRINT_LEN] with the fingerprint of a request */
extern void IdemFingerprint(Jsonb *request, uint8 *out);
extern char *IdemCanonicalText(Jsonb *doc);

#endif							/* IDEM_FINGERPRINT_H */
