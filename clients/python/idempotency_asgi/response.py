"""A response as the ledger stores it, and back.

idem_finish stores {"headers": {...}, "body": "<text>"}: the headers the
application chose to keep (lower-case names; a list for a repeated one) and
the body exactly as sent, as a string when it is UTF-8 without NUL
characters and as "body_base64" otherwise.  A replay sends those bytes, so it
is identical to the first response.  The Express client stores the same.
"""

import base64
import json

# Never kept: they describe the framing of one message, not the response.
FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def encode_response(headers, body, keep):
    """The JSON text to store.

    headers: the ASGI list [(name, value), ...] of the response; body: bytes;
    keep: a set of lower-case header names.
    """
    kept = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name not in keep or name in FRAMING:
            continue
        value = raw_value.decode("latin-1")
        if name in kept:
            prev = kept[name]
            kept[name] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            kept[name] = value
    doc = {"headers": kept}
    text = None
    if b"\x00" not in body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if text is not None:
        doc["body"] = text
    else:
        doc["body_base64"] = base64.b64encode(body).decode("ascii")
    return json.dumps(doc)


def decode_response(response):
    """The stored response (jsonb, as psycopg loads it) as (headers, body).

    headers is an ASGI header list.  A response stored by other code (a SQL
    function finishing the key) is sent as a JSON body.
    """
    if (isinstance(response, dict) and isinstance(response.get("headers"), dict)
            and (isinstance(response.get("body"), str)
                 or isinstance(response.get("body_base64"), str))):
        if isinstance(response.get("body"), str):
            body = response["body"].encode("utf-8")
        else:
            body = base64.b64decode(response["body_base64"])
        headers = []
        for name, value in response["headers"].items():
            for v in value if isinstance(value, list) else [value]:
                headers.append((name.encode("latin-1"), str(v).encode("latin-1")))
        return headers, body
    if response is None:
        return [], b""
    return [(b"content-type", b"application/json")], json.dumps(response).encode("utf-8")
