/*-------------------------------------------------------------------------
 *
 * ledger_digest.c
 *	  The ledger's primary key: a 16-byte digest of (scope, key), and the
 *	  error a collision of two digests raises.
 *
 * The primary key of the ledger (from version 1.2) is not (key, scope) but
 * digest, the first 128 bits of the SHA-256 of the pair: 16 bytes of fixed
 * width, so that an index entry takes 24 bytes whatever the key's length,
 * and a search compares bytes instead of text under a collation.  The key
 * and the scope stay in the row, and every path that finds a row through
 * the digest compares them with the caller's: a row of another (scope, key)
 * with the same digest raises an error, so that no caller ever replays,
 * takes over or finishes another key's attempt.  SHA-256 is a cryptographic
 * hash: nobody can make a key whose digest is the one of a key they do not
 * own (a second preimage of 128 bits), so a collision cannot be aimed at a
 * key either.
 *
 * The pair is hashed as UTF-8, as idem_key hashes its parts, so that the
 * digest does not depend on the database's encoding and survives a dump
 * restored into another one: the 4-byte big-endian length of the scope,
 * the scope, then the key.
 *
 * Each call of the API computes its key's digest once; the last one is
 * remembered, so that finishing the key a begin just claimed (the first-time
 * path: begin, work, finish in one transaction) does not hash it again.
 *
 * src/ledger_digest.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

/*
 * OpenSSL's SHA-256 functions, called directly: through EVP (which
 * pg_cryptohash uses) a digest of a few bytes costs three times as much,
 * most of it looking the algorithm up.  Without OpenSSL, or with an OpenSSL
 * built without them, pg_cryptohash (PostgreSQL's own SHA-256 then).
 */
#ifdef USE_OPENSSL
#ifndef OPENSSL_API_COMPAT		/* PostgreSQL's pg_config.h sets it */
#define OPENSSL_API_COMPAT 0x10100000L
#endif
#include <openssl/opensslconf.h>
#if !defined(OPENSSL_NO_DEPRECATED_3_0)
#include <openssl/sha.h>
#define IDEM_DIGEST_OPENSSL 1
#endif
#endif

#include "common/cryptohash.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "compat.h"
#include "idempotency.h"
#include "ledger_digest.h"

PG_FUNCTION_INFO_V1(idem_digest);

/* The last pair hashed, as hashed (UTF-8), and its digest */
static struct
{
	bool		valid;
	int			len;
	char		input[4 + 2 * IDEM_MAX_KEY_BYTES * 4];
	pg_uuid_t	digest;
}			last;

/* The first 128 bits of the SHA-256 of len bytes at data, into *out */
static void
sha256_128(const char *data, int len, pg_uuid_t *out)
{
	uint8		full[PG_SHA256_DIGEST_LENGTH];
#ifdef IDEM_DIGEST_OPENSSL
	SHA256_CTX	c;

	if (SHA256_Init(&c) != 1 || SHA256_Update(&c, data, len) != 1 ||
		SHA256_Final(full, &c) != 1)
		elog(ERROR, "could not compute SHA-256 hash");
#else
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) data, len) < 0 ||
		pg_cryptohash_final(ctx, full, sizeof(full)) < 0)
		elog(ERROR, "could not compute SHA-256 hash: %s",
			 pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
#endif
	memcpy(out->data, full, UUID_LEN);
}

/* Append text t to buf at *len, in UTF-8; the caller made room */
static void
append_utf8(char *buf, int *len, text *t, bool with_length)
{
	const char *str = VARDATA_ANY(t);
	int			tlen = VARSIZE_ANY_EXHDR(t);
	char	   *utf8 = pg_server_to_any(str, tlen, PG_UTF8);
	int			utf8len = (utf8 == str) ? tlen : (int) strlen(utf8);

	if (utf8len > IDEM_MAX_KEY_BYTES * 4)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("idempotency key or scope too long"),
				 errdetail("It takes %d bytes in UTF-8; the limit is %d.",
						   utf8len, IDEM_MAX_KEY_BYTES * 4)));
	if (with_length)
	{
		uint32		n = pg_hton32((uint32) utf8len);

		memcpy(buf + *len, &n, 4);
		*len += 4;
	}
	memcpy(buf + *len, utf8, utf8len);
	*len += utf8len;
	if (utf8 != str)
		pfree(utf8);
}

/*
 * The digest of (scope, key): the ledger's primary key.  Valid until the
 * next call.
 */
const pg_uuid_t *
LedgerKeyDigest(text *scope, text *key)
{
	char		input[sizeof(last.input)];
	int			len = 0;

	append_utf8(input, &len, scope, true);
	append_utf8(input, &len, key, false);
	if (last.valid && last.len == len && memcmp(last.input, input, len) == 0)
		return &last.digest;
	last.valid = false;
	sha256_128(input, len, &last.digest);
	memcpy(last.input, input, len);
	last.len = len;
	last.valid = true;
	return &last.digest;
}

/*
 * Raise the error of a key whose digest another (scope, key) of the ledger
 * has: the row found belongs to that other key and is left alone.  The
 * detail names neither the other key nor its scope, which may be another
 * tenant's.
 */
void
LedgerKeyCollision(text *scope, text *key)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNIQUE_VIOLATION),
			 errmsg("idempotency key \"%s\" has the same digest as another key in the ledger",
					text_to_cstring(key)),
			 errdetail("The ledger's primary key is the first 128 bits of the SHA-256 of (scope, key); the row under this digest holds another key, and was left unchanged."),
			 errhint("Use another key.")));
}

/*
 * idem_digest(scope text, key text) RETURNS uuid
 *
 * The ledger's primary key for (scope, key), for reading the ledger by key
 * through its index: WHERE digest = idem_digest(scope, key).
 */
Datum
idem_digest(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *result = (pg_uuid_t *) palloc(sizeof(pg_uuid_t));

	*result = *LedgerKeyDigest(PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1));
	PG_RETURN_UUID_P(result);
}
