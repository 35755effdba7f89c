"""The request document that idem_begin compares.

    {"method": "POST", "path": "/payments?x=1"}                no body
    {"method": ..., "path": ..., "body": <the JSON body>}       a JSON body
    {"method": ..., "path": ..., "body_sha256": "<hex>"}        any other body

The JSON body goes to the server as the text the client sent, cast to jsonb
there, so jsonb equality decides what counts as the same body (key order,
white space, 1.0 against 1) and no number loses digits on the way.  The
Express client builds the same document, so the two can share a ledger.
"""

import hashlib
import json
import re

# Deeper documents are hashed as bytes: every client and the server accept them then.
MAX_JSON_DEPTH = 512

_JSON_TYPE = re.compile(r"application/(json|[!#$%&'*+.^_`|~0-9a-z-]+\+json)")


class BodyNotJson(Exception):
    """A JSON content type whose body is not JSON."""


def is_json_type(content_type):
    if not content_type:
        return False
    media = content_type.split(";")[0].strip().lower()
    return _JSON_TYPE.fullmatch(media) is not None


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _jsonb_safe(value):
    """True when jsonb takes every string of the value as it is: no NUL and no
    unpaired surrogate (both legal JSON, both refused by jsonb), and the
    nesting is not too deep."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return False
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(v, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                return False
            items = v if isinstance(v, list) else [x for kv in v.items() for x in kv]
            stack.extend((x, depth + 1) for x in items)
    return True


def request_document(method, target, content_type, body):
    """The document as JSON text.

    method, target (path and query as sent), the Content-Type header and the
    body as bytes.  Raises BodyNotJson for a JSON content type whose body is
    not JSON.
    """
    head = '{"method": ' + json.dumps(method) + ', "path": ' + json.dumps(target)
    if not body:
        return head + "}"
    hashed = head + ', "body_sha256": "' + hashlib.sha256(body).hexdigest() + '"}'
    if not is_json_type(content_type):
        return hashed
    try:
        text = body.decode("utf-8")
        # numbers are checked, not converted: the server reads the digits
        value = json.loads(text, parse_int=lambda s: 0, parse_float=lambda s: 0.0,
                           parse_constant=_reject_constant)
    except RecursionError:
        return hashed
    except (UnicodeDecodeError, ValueError):
        raise BodyNotJson("the request body is not valid JSON") from None
    if _jsonb_safe(value):
        return head + ', "body": ' + text + "}"
    return hashed
