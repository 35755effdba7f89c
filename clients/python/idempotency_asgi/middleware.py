"""The ASGI middleware for Starlette and FastAPI, in transaction mode and lease mode."""

import dataclasses
import inspect
import logging
from typing import Any, Callable, Optional

from starlette.requests import Request
from starlette.routing import Match

from .fingerprint import BodyNotJson, request_document
from .header import KeyMalformed, KeyMissing, read_key
from .ledger import Ledger
from .problem import problem
from .response import FRAMING, decode_response, encode_response

logger = logging.getLogger("idempotency_asgi")

# SQLSTATEs of a request document the server would not take as jsonb.
BAD_JSON = frozenset({"22P02", "22P05", "22021", "22003", "54001"})


@dataclasses.dataclass(frozen=True)
class Options:
    """What the middleware does; the middleware's arguments, overridden per route."""

    mode: str = "transaction"
    methods: frozenset = frozenset({"POST", "PATCH"})
    required: bool = True
    enabled: bool = True
    scope: Optional[Callable[[Request], Any]] = None
    ttl: Any = None
    lease: Any = None
    wait: bool = True
    keep_headers: frozenset = frozenset({"content-type", "location"})
    store_client_errors: bool = True
    retry_after: int = 1
    replay_header: str = "Idempotent-Replayed"
    body_limit: int = 1024 * 1024

    def merged(self, overrides):
        fields = {f.name for f in dataclasses.fields(self)}
        for name in overrides:
            if name not in fields:
                raise TypeError(f"idempotency: unknown option {name!r}")
        o = dataclasses.replace(self, **overrides)
        if o.mode not in ("transaction", "lease"):
            raise TypeError('idempotency: mode is "transaction" or "lease"')
        return dataclasses.replace(
            o,
            methods=frozenset(m.upper() for m in o.methods),
            keep_headers=frozenset(h.lower() for h in o.keep_headers),
        )


def idempotent(**overrides):
    """Per-route options, on a Starlette or FastAPI endpoint:

        @app.post("/charges")
        @idempotent(mode="lease", lease=timedelta(seconds=30), ttl="7 days")
        async def charge(...): ...

    Takes the options of IdempotencyMiddleware (but pool, schema,
    await_interval and on_error), and enabled=False to leave a route out.
    """
    Options().merged(overrides)   # unknown names fail at import time

    def mark(endpoint):
        endpoint.__idempotency__ = overrides
        return endpoint
    return mark


@dataclasses.dataclass
class Idempotency:
    """What a handler learns: request.state.idempotency."""

    key: str
    scope: str
    attempt: int
    mode: str
    connection: Any   # the AsyncConnection inside the transaction (transaction mode), else None


async def idempotent_connection(request: Request):
    """A FastAPI dependency: the connection inside the middleware's transaction.

        async def pay(conn = Depends(idempotent_connection)): ...
    """
    idem = getattr(request.state, "idempotency", None)
    if idem is None or idem.connection is None:
        raise RuntimeError("no idempotent transaction: the route is not covered in transaction mode")
    return idem.connection


@dataclasses.dataclass
class _Call:
    key: str
    request: str
    scope: str
    ttl: Any
    lease: Any
    wait: bool
    attempt: Optional[int] = None


class IdempotencyMiddleware:
    """Idempotency-Key for every POST and PATCH (by default) of an ASGI app.

    pool: a psycopg_pool.AsyncConnectionPool.  See README.md for the options.
    """

    def __init__(self, app, *, pool, schema=None, await_interval=None, on_error=None, **options):
        self.app = app
        self.pool = pool
        self.defaults = Options().merged(options)
        self.ledger = Ledger(schema=schema, await_interval=await_interval)
        self.on_error = on_error or (lambda err, request: logger.error("idempotency: %s", err, exc_info=err))
        self._route_options = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        o = self._options_for(scope)
        if o is None or not o.enabled or scope["method"] not in o.methods:
            return await self.app(scope, receive, send)

        try:
            key = read_key(scope["headers"])
        except KeyMissing:
            if not o.required:
                return await self.app(scope, receive, send)
            return await _send(send, problem(400, "This operation requires an Idempotency-Key header."))
        except KeyMalformed as e:
            return await _send(send, problem(400, f"{e}."))

        try:
            body, receive = await _read_body(receive, o.body_limit)
        except _ClientGone:
            return   # nobody to answer, and nothing was begun
        if body is None:
            return await _send(send, problem(413, f"The request body is over {o.body_limit} bytes."))
        try:
            document = request_document(scope["method"], _target(scope), _header(scope, b"content-type"), body)
        except BodyNotJson as e:
            return await _send(send, problem(400, f"{e}.", title="Malformed request body"))

        key_scope = ""
        if o.scope is not None:
            key_scope = o.scope(Request(scope))
            if inspect.isawaitable(key_scope):
                key_scope = await key_scope
            key_scope = "" if key_scope is None else str(key_scope)
        call = _Call(key=key, request=document, scope=key_scope, ttl=o.ttl,
                     lease=o.lease if o.mode == "lease" else None, wait=o.wait)
        if o.mode == "transaction":
            return await self._transaction_mode(o, call, scope, receive, send)
        return await self._lease_mode(o, call, scope, receive, send)

    # Transaction mode: one pooled connection, one transaction for the ledger
    # and the handler's writes, committed before the response leaves.
    async def _transaction_mode(self, o, call, scope, receive, send):
        conn = await self.pool.getconn()
        held = _Held(self.pool, conn)
        try:
            if conn.autocommit:
                await conn.execute("BEGIN")
            outcome, status, response, attempt = await self.ledger.begin(conn, call)
        except BaseException as e:
            await held.rollback()
            return await self._answer_begin_error(e, send)
        if outcome != "started":
            await held.rollback()
            return await self._answer_outcome(o, outcome, status, response, send)

        call.attempt = attempt
        _set_state(scope, Idempotency(call.key, call.scope, attempt, "transaction", conn))

        async def decide(status, headers, body):
            if not _storable(o, status):
                await held.rollback()
                return status, headers, body
            try:
                await self.ledger.finish(conn, call, encode_response(headers, body, o.keep_headers), status)
                await conn.commit()
            except Exception as e:
                await held.rollback()
                self.on_error(e, Request(scope))
                return problem(500, "The response could not be recorded, and nothing was kept: retry the request.")
            await held.release()
            return status, headers, body

        try:
            await _run_captured(self.app, scope, receive, send, decide)
        finally:
            await held.rollback()   # the handler raised or never answered: nothing is kept

    # Lease mode: the begin commits at once with a lease; the handler works with
    # connections of its own; finish (or fail, on a 5xx) commits afterwards.
    async def _lease_mode(self, o, call, scope, receive, send):
        try:
            outcome, status, response, attempt = await self._autocommit(self.ledger.begin, call)
        except Exception as e:
            return await self._answer_begin_error(e, send)
        if outcome != "started":
            return await self._answer_outcome(o, outcome, status, response, send)

        call.attempt = attempt
        _set_state(scope, Idempotency(call.key, call.scope, attempt, "lease", None))
        answered = False

        async def decide(status, headers, body):
            nonlocal answered
            answered = True
            try:
                if _storable(o, status):
                    await self._autocommit(self.ledger.finish, call,
                                           encode_response(headers, body, o.keep_headers), status)
                else:
                    await self._autocommit(self.ledger.fail, call)
            except Exception as e:
                # The work is done and cannot be undone: the client gets its
                # response.  Unrecorded, the key stays in progress until its
                # lease lapses (or, on IK003, belongs to the attempt that took over).
                self.on_error(e, Request(scope))
            return status, headers, body

        try:
            await _run_captured(self.app, scope, receive, send, decide)
        except BaseException:
            # the handler raised, or returned without an answer: release the key
            if not answered:
                await self._release_quietly(call, scope)
            raise

    async def _release_quietly(self, call, scope):
        try:
            await self._autocommit(self.ledger.fail, call)
        except Exception as e:
            self.on_error(e, Request(scope))

    async def _autocommit(self, fn, *args):
        """One ledger call in a transaction of its own."""
        async with self.pool.connection() as conn:
            try:
                result = await fn(conn, *args)
                await conn.commit()
            except BaseException:
                try:
                    await conn.rollback()
                except Exception:
                    pass   # a broken connection: the pool discards it
                raise
            return result

    async def _answer_outcome(self, o, outcome, status, response, send):
        if outcome == "replayed":
            headers, body = decode_response(response)
            headers.append((o.replay_header.lower().encode("latin-1"), b"true"))
            return await _send(send, (status, headers, body))
        return await _send(send, problem(
            409, "A request with this Idempotency-Key is being processed: retry later.",
            [(b"retry-after", str(o.retry_after).encode("ascii"))]))

    async def _answer_begin_error(self, e, send):
        code = getattr(e, "sqlstate", None)
        if code == "IK001":
            return await _send(send, problem(
                422, "This Idempotency-Key was used with a different request (method, path or body)."))
        if code in BAD_JSON:
            return await _send(send, problem(
                400, "The request body is not JSON the server accepts.", title="Malformed request body"))
        raise e

    def _options_for(self, scope):
        """The route's options: the defaults, overridden by @idempotent on the
        endpoint the app's router will choose.  None when no route matches (the
        router answers 404 or 405 without a handler)."""
        app = scope.get("app")
        routes = getattr(getattr(app, "router", None), "routes", None)
        if routes is None:
            return self.defaults
        endpoint = _match(routes, scope)
        if endpoint is None:
            return None
        overrides = getattr(endpoint, "__idempotency__", None)
        if not overrides:
            return self.defaults
        cached = self._route_options.get(id(endpoint))
        if cached is None:
            cached = self.defaults.merged(overrides)
            self._route_options[id(endpoint)] = cached
        return cached


class _Held:
    """A pooled connection held for one request's transaction; returned once."""

    def __init__(self, pool, conn):
        self.pool = pool
        self.conn = conn
        self.returned = False

    async def rollback(self):
        if self.returned:
            return
        try:
            await self.conn.rollback()
        except Exception:
            pass   # a broken connection: the pool discards it
        await self.release()

    async def release(self):
        if self.returned:
            return
        self.returned = True
        await self.pool.putconn(self.conn)


def _storable(o, status):
    """5xx responses are never stored; 4xx ones when store_client_errors is on."""
    return status < 500 and (status < 400 or o.store_client_errors)


def _match(routes, scope):
    """The endpoint of the route that fully matches, looking into mounts;
    _ANY_ENDPOINT for a mounted app without routes; None when none matches."""
    for route in routes:
        match, child = route.matches(scope)
        if match != Match.FULL:
            continue
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None:
            return endpoint
        inner = getattr(route, "routes", None)
        if inner:
            return _match(inner, {**scope, **child})
        return _ANY_ENDPOINT
    return None


def _any_endpoint():
    """Stands for an endpoint the middleware cannot see: the defaults apply."""


_ANY_ENDPOINT = _any_endpoint


def _set_state(scope, idem):
    state = scope.setdefault("state", {})
    if isinstance(state, dict):
        state["idempotency"] = idem
    else:
        setattr(state, "idempotency", idem)


def _header(scope, name):
    for n, v in scope["headers"]:
        if n == name:
            return v.decode("latin-1")
    return None


def _target(scope):
    """The request target as sent: path (still percent-encoded) and query."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope.get("root_path", "") + scope["path"]
    qs = scope.get("query_string", b"")
    return path + ("?" + qs.decode("latin-1") if qs else "")


class _ClientGone(Exception):
    """The client disconnected before it had sent the whole body."""


async def _read_body(receive, limit):
    """(body, receive for the app).  body is None when it is over limit."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, receive
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    delivered = False

    async def replay():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return body, replay


async def _send(send, response):
    status, headers, body = response
    headers = [(n, v) for n, v in headers if n.lower().decode("latin-1") not in FRAMING]
    if status in (204, 304) or status < 200:
        body = b""   # a response that never has a body
    else:
        headers.append((b"content-length", str(len(body)).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _run_captured(app, scope, receive, send, decide):
    """Run the app with its response held back.  When the app has sent its
    whole response, decide(status, headers, body) runs and returns what to
    send (the same, or a replacement such as a 500 when the commit failed);
    only then is it sent.  So a client never sees a response whose
    transaction did not commit.  Work the app does after its response
    (background tasks) runs after that."""
    start = None
    chunks = []
    done = False

    async def capture(message):
        nonlocal start, done
        if done:
            return
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done = True
                out = await decide(start["status"], list(start.get("headers", [])), b"".join(chunks))
                await _send(send, out)

    await app(scope, receive, capture)
    if not done:
        raise RuntimeError("the application returned without a complete response")
