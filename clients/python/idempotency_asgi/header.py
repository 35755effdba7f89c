"""Read the Idempotency-Key request header.

The header is a Structured Field string ("...") in the IETF draft and a bare
token at Stripe; both are accepted and mean the same key.  A key is 1 to 255
printable ASCII characters, the extension's limit in bytes.
"""

import re

MAX_KEY_BYTES = 255
HEADER = b"idempotency-key"

_PRINTABLE = re.compile(r"[\x20-\x7e]+")


class KeyMissing(Exception):
    """The request has no Idempotency-Key header."""


class KeyMalformed(Exception):
    """The header is there but no valid key: the message says why."""


def read_key(headers):
    """The key from an ASGI header list [(name, value), ...] (names lower-case).

    Raises KeyMissing or KeyMalformed.
    """
    values = [v for n, v in headers if n == HEADER]
    if not values:
        raise KeyMissing()
    if len(values) > 1:
        raise KeyMalformed("the request has more than one Idempotency-Key header")
    value = values[0].decode("latin-1").strip(" \t")
    if value.startswith('"'):
        value = _parse_sf_string(value)
    if value == "":
        raise KeyMalformed("the Idempotency-Key header is empty")
    if not _PRINTABLE.fullmatch(value):
        raise KeyMalformed("an Idempotency-Key must be printable ASCII")
    if len(value) > MAX_KEY_BYTES:
        raise KeyMalformed(f"an Idempotency-Key is at most {MAX_KEY_BYTES} bytes")
    return value


def _parse_sf_string(s):
    """An RFC 8941 sf-string: "..." with \\" and \\\\ as its only escapes."""
    out = []
    i = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 1
            if i >= len(s) or s[i] not in '"\\':
                break
            out.append(s[i])
        elif c == '"':
            if i != len(s) - 1:
                break
            return "".join(out)
        elif not " " <= c <= "~":
            break
        else:
            out.append(c)
        i += 1
    raise KeyMalformed("the Idempotency-Key header is not a valid quoted string")
