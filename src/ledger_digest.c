/*-------------------------------------------------------------------------
 *
 * ledger_digest.c
 *	  The ledger's primary key: a 16-byte digest of (scope, key), and the
 *	  error a collision of two digests raises.
 *
 * The primary key of the ledger (from version 1.2) is not (key, scope) but
 * digest, 128 bits drawn from the SHA-256 of the pair: 16 bytes of fixed
 * width, so that an index entry takes 24 bytes whatever the key's length,
 * and a search compares bytes instead of text under a collation.  The key
 * and the scope stay in the row, and every path that finds a row through
 * the digest compares them with the caller's: a row of another (scope, key)
 * with the same digest raises an error, so that no caller ever replays,
 * takes over or finishes another key's attempt.  SHA-256 is a cryptographic
 * hash: nobody can make a key whose digest is the one of a key they do not
 * own (a second preimage of 96 bits at least), so a collision cannot be
 * aimed at a key either.
 *
 * Two digests, one per version of the ledger:
 *   1.2   the first 128 bits of the SHA-256 (idem_digest);
 *   1.3   the same, but for a key that is a UUIDv7 in its text form: then
 *         the key's first 32 bits (the top of its millisecond timestamp, a
 *         step every 65.5 s) and the first 96 bits of the SHA-256
 *         (idem_digest_ordered).  Keys made one after another then land on
 *         the few right-most leaves of the primary key instead of anywhere,
 *         so that after a checkpoint only those leaves are written whole to
 *         the WAL, and the rest of the index can stay on disk.
 * A ledger uses the one its schema's idem_digest(text, text) computes: the
 * 1.3 update points that function to the new digest and rewrites the
 * digests of the rows in the same transaction, under an exclusive lock.
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

#include "access/htup_details.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "compat.h"
#include "idempotency.h"
#include "ledger_digest.h"

PG_FUNCTION_INFO_V1(idem_digest);
PG_FUNCTION_INFO_V1(idem_digest_ordered);

/* The C function of 1.3's idem_digest */
#define ORDERED_DIGEST_SYMBOL "idem_digest_ordered"

/* The length of a UUID in its text form, 8-4-4-4-12 hex digits */
#define UUID_TEXT_LEN 36

/* The last pair hashed, as hashed (UTF-8), and its digest */
static struct
{
	bool		valid;
	bool		ordered;
	int			len;
	char		input[4 + 2 * IDEM_MAX_KEY_BYTES * 4];
	pg_uuid_t	digest;
}			last;

/* The schema whose ledger's digest was looked up last, and that digest */
static struct
{
	Oid			nspid;
	bool		ordered;
	bool		callback;		/* the pg_proc callback is registered */
}			scheme = {InvalidOid};

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

/* A hex digit's value, or -1 */
static inline int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * True when the len bytes at key are a UUIDv7 (RFC 9562) in its text form,
 * 8-4-4-4-12 hex digits of either case, version 7 and the RFC's variant;
 * its first 32 bits go to *prefix then.
 */
static bool
uuidv7_prefix(const char *key, int len, uint8 *prefix)
{
	if (len != UUID_TEXT_LEN || key[14] != '7' ||
		!(key[19] == '8' || key[19] == '9' || key[19] == 'a' ||
		  key[19] == 'b' || key[19] == 'A' || key[19] == 'B'))
		return false;
	for (int i = 0; i < UUID_TEXT_LEN; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (key[i] != '-')
				return false;
		}
		else if (hex_value(key[i]) < 0)
			return false;
	}
	for (int i = 0; i < 4; i++)
		prefix[i] = (uint8) (hex_value(key[2 * i]) << 4 | hex_value(key[2 * i + 1]));
	return true;
}

/*
 * The digest of (scope, key), 1.2's or (ordered) 1.3's.  Valid until the
 * next call.
 */
static const pg_uuid_t *
key_digest(text *scope, text *key, bool ordered)
{
	char		input[sizeof(last.input)];
	int			len = 0;
	int			key_at;
	uint8		prefix[4];

	append_utf8(input, &len, scope, true);
	key_at = len;
	append_utf8(input, &len, key, false);
	if (last.valid && last.ordered == ordered && last.len == len &&
		memcmp(last.input, input, len) == 0)
		return &last.digest;
	last.valid = false;
	sha256_128(input, len, &last.digest);
	if (ordered && uuidv7_prefix(input + key_at, len - key_at, prefix))
	{
		memmove(last.digest.data + 4, last.digest.data, UUID_LEN - 4);
		memcpy(last.digest.data, prefix, 4);
	}
	memcpy(last.input, input, len);
	last.len = len;
	last.ordered = ordered;
	last.valid = true;
	return &last.digest;
}

/* Forget the digest looked up when a function changes (an update, a drop) */
static void
scheme_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	scheme.nspid = InvalidOid;
}

/*
 * True when the ledger of schema nspid uses 1.3's digest: its schema's
 * idem_digest(text, text) is the C function idem_digest_ordered.  The
 * caller holds a lock on the ledger (see ledger_digest.h).
 */
bool
LedgerDigestOrdered(Oid nspid)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	oidvector  *args;
	HeapTuple	tup;
	bool		ordered = false;

	if (nspid == scheme.nspid && OidIsValid(nspid))
		return scheme.ordered;
	if (!scheme.callback)
	{
		CacheRegisterSyscacheCallback(PROCOID, scheme_invalidate, (Datum) 0);
		scheme.callback = true;
	}
	args = buildoidvector(argtypes, 2);
	tup = SearchSysCache3(PROCNAMEARGSNSP, CStringGetDatum("idem_digest"),
						  PointerGetDatum(args), ObjectIdGetDatum(nspid));
	pfree(args);
	if (HeapTupleIsValid(tup))
	{
		Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(tup);
		bool		isnull;
		Datum		src;

		if (proc->prolang == ClanguageId)
		{
			src = SysCacheGetAttr(PROCNAMEARGSNSP, tup, Anum_pg_proc_prosrc,
								  &isnull);
			ordered = !isnull &&
				strcmp(TextDatumGetCString(src), ORDERED_DIGEST_SYMBOL) == 0;
		}
		ReleaseSysCache(tup);
	}
	scheme.nspid = nspid;
	scheme.ordered = ordered;
	return ordered;
}

/*
 * The digest of (scope, key) in the ledger of schema nspid: its primary
 * key.  The caller holds a lock on the ledger.  Valid until the next call.
 */
const pg_uuid_t *
LedgerKeyDigest(Oid nspid, text *scope, text *key)
{
	return key_digest(scope, key, LedgerDigestOrdered(nspid));
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
			 errdetail("The ledger's primary key is a digest of (scope, key) drawn from its SHA-256; the row under this digest holds another key, and was left unchanged."),
			 errhint("Use another key.")));
}

/*
 * idem_digest(scope text, key text) RETURNS uuid
 *
 * The ledger's primary key for (scope, key) in 1.2, for reading the ledger
 * by key through its index: WHERE digest = idem_digest(scope, key).
 */
Datum
idem_digest(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *result = (pg_uuid_t *) palloc(sizeof(pg_uuid_t));

	*result = *key_digest(PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1), false);
	PG_RETURN_UUID_P(result);
}

/*
 * idem_digest(scope text, key text) RETURNS uuid, from 1.3
 *
 * The same, with a UUIDv7 key's first 32 bits first.
 */
Datum
idem_digest_ordered(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *result = (pg_uuid_t *) palloc(sizeof(pg_uuid_t));

	*result = *key_digest(PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1), true);
	PG_RETURN_UUID_P(result);
}
