"""The problem+json answers (RFC 9457) the middleware gives itself."""

import json

TITLES = {
    400: "Idempotency-Key is missing or malformed",
    409: "A request is outstanding for this Idempotency-Key",
    413: "Request body too large",
    422: "Idempotency-Key is already used",
    500: "The response could not be recorded",
}


def problem(status, detail, extra_headers=(), title=None):
    """(status, headers, body) for the given status and detail."""
    body = json.dumps({"title": title or TITLES[status], "status": status, "detail": detail},
                      separators=(",", ":")).encode("utf-8")
    return status, [(b"content-type", b"application/problem+json"), *extra_headers], body
