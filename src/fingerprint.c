/*-------------------------------------------------------------------------
 *
 * fingerprint.c
 *	  Canonical JSON text, idem_key and idem_fingerprint: pure C, no SPI.
 *
 * Two different notions of "the same document" live here.  idem_key hashes
 * the text Python's json.dumps(json.loads(doc), sort_keys=True) prints, so
 * that a service in another language derives the same key as the database.
 * idem_fingerprint hashes a private, unambiguous serialization whose
 * equality is exactly jsonb equality, which is what idem_begin compares.
 *
 * src/fingerprint.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/cryptohash.h"
#include "common/sha2.h"
#include "common/shortest_dec.h"
#include "fingerprint.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_key);
PG_FUNCTION_INFO_V1(idem_fingerprint);
PG_FUNCTION_INFO_V1(idem_canonical);

/* Number of hex digits of the sha256 that make up an idem_key */
#define IDEM_KEY_HEX_DIGITS		32

/* Python's repr(float) switches to exponent notation outside this range */
#define PY_REPR_MIN_FIXED_DECPT	(-3)
#define PY_REPR_MAX_FIXED_DECPT	16

/* Flush the fingerprint buffer into the hash once it holds this much */
#define FP_FLUSH_BYTES			8192

/* One member of an object, in the order Python sorts keys */
typedef struct CanonPair
{
	const char *key;			/* key as UTF-8, not NUL-terminated */
	int			keylen;
	JsonbValue	value;			/* scalar, or jbvBinary for a container */
} CanonPair;

/* Serialization state of IdemFingerprint: a small buffer before the hash */
typedef struct FpState
{
	pg_cryptohash_ctx *ctx;
	StringInfoData buf;
} FpState;

static const char hex_digits[] = "0123456789abcdef";

static void canon_container(StringInfo out, JsonbContainer *jc);


/*
 * Return a jsonb string as UTF-8, so that key order and \u escapes are by
 * code point whatever the database encoding is.
 */
static const char *
string_as_utf8(const char *str, int len, int *utf8len)
{
	char	   *conv;

	if (GetDatabaseEncoding() == PG_UTF8 || len == 0)
	{
		*utf8len = len;
		return str;
	}
	conv = pg_server_to_any(str, len, PG_UTF8);
	*utf8len = (conv == str) ? len : (int) strlen(conv);
	return conv;
}

/*
 * Append a \uXXXX escape, with lowercase hex digits as Python writes them.
 */
static void
append_u_escape(StringInfo out, unsigned int cp)
{
	char		esc[6];

	esc[0] = '\\';
	esc[1] = 'u';
	esc[2] = hex_digits[(cp >> 12) & 0xf];
	esc[3] = hex_digits[(cp >> 8) & 0xf];
	esc[4] = hex_digits[(cp >> 4) & 0xf];
	esc[5] = hex_digits[cp & 0xf];
	appendBinaryStringInfo(out, esc, 6);
}

/*
 * Append a quoted UTF-8 string as json.dumps with ensure_ascii=True does:
 * only the printable ASCII range ' '..'~' stays literal (less '"' and '\\'),
 * the usual short escapes are used, and everything else becomes \uXXXX,
 * astral code points as a surrogate pair.
 */
static void
canon_utf8_string(StringInfo out, const char *utf8, int ulen)
{
	const unsigned char *s = (const unsigned char *) utf8;
	int			i = 0;

	appendStringInfoCharMacro(out, '"');
	while (i < ulen)
	{
		int			start = i;
		unsigned char c;

		/* copy a run of characters that need no escape in one go */
		while (i < ulen && s[i] >= 0x20 && s[i] <= 0x7e &&
			   s[i] != '"' && s[i] != '\\')
			i++;
		if (i > start)
			appendBinaryStringInfo(out, (const char *) s + start, i - start);
		if (i >= ulen)
			break;

		c = s[i];
		if (c < 0x80)
		{
			switch (c)
			{
				case '"':
					appendBinaryStringInfo(out, "\\\"", 2);
					break;
				case '\\':
					appendBinaryStringInfo(out, "\\\\", 2);
					break;
				case '\n':
					appendBinaryStringInfo(out, "\\n", 2);
					break;
				case '\r':
					appendBinaryStringInfo(out, "\\r", 2);
					break;
				case '\t':
					appendBinaryStringInfo(out, "\\t", 2);
					break;
				case '\b':
					appendBinaryStringInfo(out, "\\b", 2);
					break;
				case '\f':
					appendBinaryStringInfo(out, "\\f", 2);
					break;
				default:
					/* other control characters and DEL */
					append_u_escape(out, c);
					break;
			}
			i++;
		}
		else
		{
			int			mblen = pg_utf_mblen(s + i);
			pg_wchar	cp;

			if (mblen < 2 || mblen > 4 || i + mblen > ulen ||
				!pg_utf8_islegal(s + i, mblen))
				ereport(ERROR,
						(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
						 errmsg("invalid UTF-8 sequence in jsonb string"),
						 errdetail("The canonical text needs every character as a Unicode code point."),
						 errhint("Store the document in a database whose encoding is UTF-8.")));
			cp = utf8_to_unicode(s + i);
			if (cp >= 0x10000)
			{
				cp -= 0x10000;
				append_u_escape(out, 0xd800 | (cp >> 10));
				append_u_escape(out, 0xdc00 | (cp & 0x3ff));
			}
			else
				append_u_escape(out, cp);
			i += mblen;
		}
	}
	appendStringInfoCharMacro(out, '"');
}

/*
 * Append a quoted jsonb string, which is in the database encoding.
 */
static void
canon_string(StringInfo out, const char *str, int len)
{
	const char *utf8;
	int			ulen;

	utf8 = string_as_utf8(str, len, &ulen);
	canon_utf8_string(out, utf8, ulen);
	if (utf8 != str)
		pfree((char *) utf8);
}

/*
 * Does 0.DIGITS * 10^decpt read back as exactly the double mag?
 */
static bool
digits_round_trip(const char *digits, int ndigits, int decpt, double mag)
{
	char		buf[DOUBLE_SHORTEST_DECIMAL_LEN + 16];

	snprintf(buf, sizeof(buf), "0.%.*se%d", ndigits, digits, decpt);
	return strtod(buf, NULL) == mag;
}

/*
 * Shorten Ryu's digits by one where Python's dtoa would.
 *
 * PostgreSQL builds Ryu without accepting the bounds of the rounding
 * interval, while Python's dtoa accepts a bound that reads back as the
 * double (round-half-even).  So when a decimal one digit shorter lies
 * exactly on a bound, Python prints it and PostgreSQL does not: try the
 * two neighbours one digit shorter and keep one that reads back.
 */
static void
shorten_to_bound(char *digits, int *ndigits, int *decpt, double mag)
{
	char		up[DOUBLE_SHORTEST_DECIMAL_LEN + 1];
	int			n = *ndigits - 1;
	int			updecpt = *decpt;
	int			k;

	if (n < 1)
		return;

	/* the shorter neighbour towards zero */
	k = n;
	while (k > 1 && digits[k - 1] == '0')
		k--;
	if (digits_round_trip(digits, k, *decpt, mag))
	{
		*ndigits = k;
		return;
	}

	/* the shorter neighbour away from zero, carrying into a new digit */
	memcpy(up, digits, n);
	k = n - 1;
	while (k >= 0 && up[k] == '9')
		up[k--] = '0';
	if (k >= 0)
		up[k]++;
	else
	{
		memmove(up + 1, up, n);
		up[0] = '1';
		n++;
		updecpt++;
	}
	while (n > 1 && up[n - 1] == '0')
		n--;
	if (n < *ndigits && digits_round_trip(up, n, updecpt, mag))
	{
		memcpy(digits, up, n);
		*ndigits = n;
		*decpt = updecpt;
	}
}

/*
 * Append a finite, non-zero double as Python's repr(float) prints it.
 *
 * Ryu and Python's dtoa both find the shortest digits that read back as the
 * double; only the layout differs (and a bound case, see shorten_to_bound),
 * so take the digits and the decimal point position from PostgreSQL's
 * output and lay them out again the Python way.
 */
static void
canon_python_float(StringInfo out, double d)
{
	char		shortest[DOUBLE_SHORTEST_DECIMAL_LEN + 1];
	char		digits[DOUBLE_SHORTEST_DECIMAL_LEN + 1];
	int			ndigits = 0;
	int			intdigits = 0;
	bool		seen_point = false;
	int			exp10 = 0;
	int			decpt;
	int			lead;
	int			len;
	const char *p;

	len = double_to_shortest_decimal_bufn(d, shortest);
	shortest[len] = '\0';

	p = shortest;
	if (*p == '-')
	{
		appendStringInfoCharMacro(out, '-');
		p++;
	}
	for (; *p && *p != 'e' && *p != 'E'; p++)
	{
		if (*p == '.')
			seen_point = true;
		else
		{
			digits[ndigits++] = *p;
			if (!seen_point)
				intdigits++;
		}
	}
	if (*p == 'e' || *p == 'E')
		exp10 = atoi(p + 1);

	/* value = 0.DIGITS * 10^decpt, once leading and trailing zeros are gone */
	lead = 0;
	while (lead < ndigits - 1 && digits[lead] == '0')
		lead++;
	memmove(digits, digits + lead, ndigits - lead);
	ndigits -= lead;
	while (ndigits > 1 && digits[ndigits - 1] == '0')
		ndigits--;
	decpt = intdigits + exp10 - lead;
	shorten_to_bound(digits, &ndigits, &decpt, fabs(d));

	if (decpt < PY_REPR_MIN_FIXED_DECPT || decpt > PY_REPR_MAX_FIXED_DECPT)
	{
		int			e = decpt - 1;

		/* 1e+16, 1.5e-05: at least two exponent digits, sign always */
		appendStringInfoChar(out, digits[0]);
		if (ndigits > 1)
		{
			appendStringInfoChar(out, '.');
			appendBinaryStringInfo(out, digits + 1, ndigits - 1);
		}
		appendStringInfo(out, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
	}
	else if (decpt <= 0)
	{
		/* 0.0001 */
		appendBinaryStringInfo(out, "0.", 2);
		for (int k = 0; k < -decpt; k++)
			appendStringInfoChar(out, '0');
		appendBinaryStringInfo(out, digits, ndigits);
	}
	else if (decpt >= ndigits)
	{
		/* 1234567890123456.0 */
		appendBinaryStringInfo(out, digits, ndigits);
		for (int k = ndigits; k < decpt; k++)
			appendStringInfoChar(out, '0');
		appendBinaryStringInfo(out, ".0", 2);
	}
	else
	{
		/* 3.14 */
		appendBinaryStringInfo(out, digits, decpt);
		appendStringInfoChar(out, '.');
		appendBinaryStringInfo(out, digits + decpt, ndigits - decpt);
	}
}

/*
 * The Numeric of a jsonb number, safe for the Numeric macros whatever
 * varlena header it was stored with (a no-op for the usual 4-byte header).
 */
static Numeric
scalar_numeric(JsonbValue *v)
{
	return DatumGetNumeric(NumericGetDatum(v->val.numeric));
}

/*
 * Append a jsonb number as Python prints what json.loads made of it: text
 * without a fraction is an int and prints as itself, anything else is a
 * float, rounded to the nearest double and printed as repr(float).
 */
static void
canon_number(StringInfo out, Numeric num)
{
	char	   *text;
	const char *p;
	double		d;

	text = DatumGetCString(DirectFunctionCall1(numeric_out,
											   NumericGetDatum(num)));
	p = text;
	if (*p == '-')
		p++;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p == '\0' && p > text && p[-1] != '-')
	{
		appendStringInfoString(out, text);
		pfree(text);
		return;
	}

	/* LC_NUMERIC is always C in the backend, so strtod reads a '.' point */
	d = strtod(text, NULL);
	pfree(text);

	if (isnan(d))
		appendBinaryStringInfo(out, "NaN", 3);
	else if (isinf(d))
		appendStringInfoString(out, d < 0 ? "-Infinity" : "Infinity");
	else if (d == 0.0)
		appendStringInfoString(out, signbit(d) ? "-0.0" : "0.0");
	else
		canon_python_float(out, d);
}

/*
 * Append one value: a scalar, or a nested container that is walked in turn.
 */
static void
canon_value(StringInfo out, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			appendBinaryStringInfo(out, "null", 4);
			break;
		case jbvBool:
			if (v->val.boolean)
				appendBinaryStringInfo(out, "true", 4);
			else
				appendBinaryStringInfo(out, "false", 5);
			break;
		case jbvString:
			canon_string(out, v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			canon_number(out, scalar_numeric(v));
			break;
		case jbvBinary:
			canon_container(out, v->val.binary.data);
			break;
		default:
			elog(ERROR, "unexpected jsonb value type: %d", (int) v->type);
	}
}

/*
 * Order object members as Python's sorted() orders str keys: by code point,
 * which for UTF-8 is byte order, a prefix before the longer key.
 */
static int
canon_pair_cmp(const void *a, const void *b)
{
	const CanonPair *pa = (const CanonPair *) a;
	const CanonPair *pb = (const CanonPair *) b;
	int			res;

	res = memcmp(pa->key, pb->key, Min(pa->keylen, pb->keylen));
	if (res != 0)
		return res;
	return (pa->keylen > pb->keylen) - (pa->keylen < pb->keylen);
}

/*
 * Append an array, an object or a top-level raw scalar.
 *
 * Nested containers are not descended by the iterator but handed back as
 * binary values, so an object's members can be put in Python's key order
 * (jsonb keeps them shortest key first) and each member is written once,
 * straight into the output: linear in the size of the document.
 */
static void
canon_container(StringInfo out, JsonbContainer *jc)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;

	check_stack_depth();
	CHECK_FOR_INTERRUPTS();

	it = JsonbIteratorInit(jc);
	tok = JsonbIteratorNext(&it, &v, true);

	if (tok == WJB_BEGIN_ARRAY)
	{
		bool		raw = v.val.array.rawScalar;
		bool		first = true;

		if (!raw)
			appendStringInfoCharMacro(out, '[');
		while ((tok = JsonbIteratorNext(&it, &v, true)) == WJB_ELEM)
		{
			if (!first)
				appendBinaryStringInfo(out, ", ", 2);
			first = false;
			canon_value(out, &v);
		}
		if (tok != WJB_END_ARRAY)
			elog(ERROR, "unexpected jsonb iterator token: %d", (int) tok);
		if (!raw)
			appendStringInfoCharMacro(out, ']');
	}
	else if (tok == WJB_BEGIN_OBJECT)
	{
		int			npairs = v.val.object.nPairs;
		int			n = 0;
		CanonPair  *pairs;

		pairs = (CanonPair *) palloc(sizeof(CanonPair) * Max(npairs, 1));
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_END_OBJECT)
		{
			if (tok == WJB_KEY && n < npairs)
				pairs[n].key = string_as_utf8(v.val.string.val,
											  v.val.string.len,
											  &pairs[n].keylen);
			else if (tok == WJB_VALUE && n < npairs)
				pairs[n++].value = v;
			else
				elog(ERROR, "unexpected jsonb iterator token: %d", (int) tok);
		}
		if (n > 1)
			qsort(pairs, n, sizeof(CanonPair), canon_pair_cmp);

		appendStringInfoCharMacro(out, '{');
		for (int i = 0; i < n; i++)
		{
			if (i > 0)
				appendBinaryStringInfo(out, ", ", 2);
			canon_utf8_string(out, pairs[i].key, pairs[i].keylen);
			appendBinaryStringInfo(out, ": ", 2);
			canon_value(out, &pairs[i].value);
		}
		appendStringInfoCharMacro(out, '}');
		pfree(pairs);
	}
	else
		elog(ERROR, "unexpected jsonb iterator token: %d", (int) tok);
}

/*
 * The canonical text of a jsonb document: byte for byte what Python's
 * json.dumps(json.loads(doc), sort_keys=True) prints for a document whose
 * numbers have no exponent.  It is pure ASCII.
 */
char *
IdemCanonicalText(Jsonb *doc)
{
	StringInfoData out;

	initStringInfo(&out);
	canon_container(&out, &doc->root);
	return out.data;
}

/*
 * Pass the buffered bytes of a fingerprint to the hash.
 */
static void
fp_flush(FpState *st)
{
	if (st->buf.len > 0 &&
		pg_cryptohash_update(st->ctx, (uint8 *) st->buf.data, st->buf.len) < 0)
		elog(ERROR, "could not update SHA-256 hash: %s",
			 pg_cryptohash_error(st->ctx));
	resetStringInfo(&st->buf);
}

/*
 * Add a type tag and, when there is one, a length-prefixed payload, so that
 * no two different token sequences serialize to the same bytes.
 */
static void
fp_token(FpState *st, char tag, const char *data, int len)
{
	appendStringInfoCharMacro(&st->buf, tag);
	if (data != NULL)
	{
		uint32		n = (uint32) len;
		char		lenbytes[4];

		lenbytes[0] = (char) (n >> 24);
		lenbytes[1] = (char) (n >> 16);
		lenbytes[2] = (char) (n >> 8);
		lenbytes[3] = (char) n;
		appendBinaryStringInfo(&st->buf, lenbytes, 4);
		if (len >= FP_FLUSH_BYTES)
		{
			/* a long string goes to the hash directly, not via the buffer */
			fp_flush(st);
			if (pg_cryptohash_update(st->ctx, (const uint8 *) data, len) < 0)
				elog(ERROR, "could not update SHA-256 hash: %s",
					 pg_cryptohash_error(st->ctx));
			return;
		}
		appendBinaryStringInfo(&st->buf, data, len);
	}
	if (st->buf.len >= FP_FLUSH_BYTES)
		fp_flush(st);
}

/*
 * Add a string, in UTF-8 where the database encoding can be converted, so
 * that a fingerprint stays the same when the ledger moves to a database of
 * another encoding.  Conversion keeps distinct strings distinct.  SQL_ASCII
 * bytes go in as they are: they need not be valid UTF-8.
 */
static void
fp_string(FpState *st, char tag, const char *str, int len)
{
	int			enc = GetDatabaseEncoding();
	const char *utf8 = str;
	int			ulen = len;

	if (enc != PG_UTF8 && enc != PG_SQL_ASCII && len > 0)
		utf8 = string_as_utf8(str, len, &ulen);
	fp_token(st, tag, utf8, ulen);
	if (utf8 != str)
		pfree((char *) utf8);
}

/*
 * Add one scalar.  Numbers go in by value (numeric_normalize drops
 * insignificant zeros, so 1, 1.0 and 1.00 agree), strings by their bytes,
 * as jsonb equality compares them.
 */
static void
fp_scalar(FpState *st, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			fp_token(st, 'z', NULL, 0);
			break;
		case jbvBool:
			fp_token(st, v->val.boolean ? 't' : 'f', NULL, 0);
			break;
		case jbvString:
			fp_string(st, 's', v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			{
				char	   *norm;

				norm = numeric_normalize(scalar_numeric(v));
				fp_token(st, 'n', norm, strlen(norm));
				pfree(norm);
				break;
			}
		default:
			elog(ERROR, "unexpected jsonb value type: %d", (int) v->type);
	}
}

/*
 * Write the fingerprint of a request, the first 128 bits of a SHA-256
 * digest, equal for two documents exactly when they are equal under jsonb =.
 * 128 bits keep an accidental match out of reach and the ledger's rows
 * small; a deliberate collision would only let a client confuse its own
 * requests under its own key.
 *
 * jsonb stores object keys deduplicated and in one fixed order, so a plain
 * walk in storage order is canonical already; only numbers need
 * normalizing.  A top-level raw scalar is tagged apart from an array.
 */
void
IdemFingerprint(Jsonb *request, uint8 *out)
{
	FpState		st;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];

	StaticAssertStmt(IDEM_FINGERPRINT_LEN <= PG_SHA256_DIGEST_LENGTH,
					 "a fingerprint is part of a SHA-256 digest");

	st.ctx = pg_cryptohash_create(PG_SHA256);
	if (st.ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (pg_cryptohash_init(st.ctx) < 0)
		elog(ERROR, "could not initialize SHA-256 hash: %s",
			 pg_cryptohash_error(st.ctx));
	initStringInfo(&st.buf);

	/* a version tag, should the serialization ever have to change */
	fp_token(&st, 'V', "1", 1);

	it = JsonbIteratorInit(&request->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_ARRAY:
				fp_token(&st, v.val.array.rawScalar ? 'R' : '[', NULL, 0);
				break;
			case WJB_END_ARRAY:
				fp_token(&st, ']', NULL, 0);
				break;
			case WJB_BEGIN_OBJECT:
				fp_token(&st, '{', NULL, 0);
				break;
			case WJB_END_OBJECT:
				fp_token(&st, '}', NULL, 0);
				break;
			case WJB_KEY:
				fp_string(&st, 'k', v.val.string.val, v.val.string.len);
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				fp_scalar(&st, &v);
				break;
			default:
				elog(ERROR, "unexpected jsonb iterator token: %d", (int) tok);
		}
	}

	fp_flush(&st);
	if (pg_cryptohash_final(st.ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not finalize SHA-256 hash: %s",
			 pg_cryptohash_error(st.ctx));
	memcpy(out, digest, IDEM_FINGERPRINT_LEN);
	pg_cryptohash_free(st.ctx);
	pfree(st.buf.data);
}

/*
 * Lowercase hex of a byte string, as a text datum.
 */
static text *
hex_text(const uint8 *bytes, int nhex)
{
	char	   *hex = palloc(nhex + 1);

	for (int i = 0; i < nhex; i++)
		hex[i] = hex_digits[(bytes[i / 2] >> ((i % 2) ? 0 : 4)) & 0xf];
	hex[nhex] = '\0';
	return cstring_to_text(hex);
}

/*
 * Add a text argument to the key's hash in UTF-8, so that the key does not
 * depend on the database encoding.
 */
static void
key_update_text(pg_cryptohash_ctx *ctx, text *t)
{
	const char *str = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	char	   *utf8;
	int			utf8len;

	utf8 = pg_server_to_any(str, len, PG_UTF8);
	utf8len = (utf8 == str) ? len : (int) strlen(utf8);
	if (pg_cryptohash_update(ctx, (uint8 *) utf8, utf8len) < 0)
		elog(ERROR, "could not update SHA-256 hash: %s",
			 pg_cryptohash_error(ctx));
}

/*
 * idem_key(entity text, action text, params jsonb DEFAULT NULL) RETURNS text
 *
 * A deterministic key: the first 32 hex digits of the sha256 of
 * "entity:action", plus ":" and the canonical text of params when given.
 * Any service that hashes the same text gets the same key.
 */
Datum
idem_key(PG_FUNCTION_ARGS)
{
	pg_cryptohash_ctx *ctx;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("entity must not be NULL"),
				 errhint("Pass the name of what the key protects, such as 'order'.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("action must not be NULL"),
				 errhint("Pass the name of the operation, such as 'create'.")));

	ctx = pg_cryptohash_create(PG_SHA256);
	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (pg_cryptohash_init(ctx) < 0)
		elog(ERROR, "could not initialize SHA-256 hash: %s",
			 pg_cryptohash_error(ctx));

	key_update_text(ctx, PG_GETARG_TEXT_PP(0));
	if (pg_cryptohash_update(ctx, (const uint8 *) ":", 1) < 0)
		elog(ERROR, "could not update SHA-256 hash: %s",
			 pg_cryptohash_error(ctx));
	key_update_text(ctx, PG_GETARG_TEXT_PP(1));

	if (!PG_ARGISNULL(2))
	{
		/* the canonical text is pure ASCII: no conversion needed */
		char	   *canon = IdemCanonicalText(PG_GETARG_JSONB_P(2));

		if (pg_cryptohash_update(ctx, (const uint8 *) ":", 1) < 0 ||
			pg_cryptohash_update(ctx, (const uint8 *) canon, strlen(canon)) < 0)
			elog(ERROR, "could not update SHA-256 hash: %s",
				 pg_cryptohash_error(ctx));
		pfree(canon);
	}

	if (pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not finalize SHA-256 hash: %s",
			 pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);

	PG_RETURN_TEXT_P(hex_text(digest, IDEM_KEY_HEX_DIGITS));
}

/*
 * idem_fingerprint(request jsonb) RETURNS text
 *
 * The hex fingerprint idem_begin compares; NULL for a NULL request, since a
 * NULL request matches only NULL.
 */
Datum
idem_fingerprint(PG_FUNCTION_ARGS)
{
	uint8		fp[IDEM_FINGERPRINT_LEN];

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();

	IdemFingerprint(PG_GETARG_JSONB_P(0), fp);
	PG_RETURN_TEXT_P(hex_text(fp, 2 * IDEM_FINGERPRINT_LEN));
}

/*
 * idem_canonical(doc jsonb) RETURNS text
 *
 * The canonical text idem_key hashes, so that callers can see and compare
 * exactly what went into a key.
 */
Datum
idem_canonical(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(IdemCanonicalText(PG_GETARG_JSONB_P(0))));
}
