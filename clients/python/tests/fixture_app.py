"""The application the tests send requests to (FastAPI).

Hooks let a test see inside a handler: calls counts executions per route and
key, inside(name, info) runs when a handler has reached the point a test
wants to interrupt, and hold(name) is awaited there (at once unless the test
holds that route).
"""

import random
from datetime import timedelta

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from idempotency_asgi import IdempotencyMiddleware, idempotent, idempotent_connection


class Hooks:
    def __init__(self, inside=None, hold=None, on_error=None):
        self.calls = {}
        self.errors = []
        self._inside = inside
        self._hold = hold
        self.on_error = on_error or (lambda err, request: self.errors.append(err))

    def count(self, name, request):
        k = f"{name} {request.state.idempotency.key}"
        self.calls[k] = self.calls.get(k, 0) + 1
        return self.calls[k]

    async def inside(self, name, info):
        if self._inside:
            await self._inside(name, info)

    async def hold(self, name):
        if self._hold:
            await self._hold(name)


def make_app(pool, db, hooks, **options):
    app = FastAPI()
    app.add_middleware(
        IdempotencyMiddleware, pool=pool, on_error=hooks.on_error,
        scope=lambda request: f"{db.scope_prefix}:{request.headers.get('x-tenant', 'default')}",
        **options)

    # The usual handler: one business row, written on the middleware's connection.
    @app.post("/payments")
    async def payments(request: Request, conn=Depends(idempotent_connection)):
        hooks.count("payments", request)
        body = await request.json()
        await conn.execute("SELECT pg_sleep(%s)", [float(request.headers.get("x-sleep", "0"))])
        cur = await conn.execute(
            f"INSERT INTO {db.payments} (key, amount) VALUES (%s, %s) RETURNING id",
            [request.state.idempotency.key, body["amount"]])
        (pid,) = await cur.fetchone()
        backend = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
        await hooks.inside("payments", {"pid": backend})
        await hooks.hold("payments")
        await conn.execute("SELECT 1")
        return JSONResponse({"payment_id": pid, "amount": body["amount"]}, status_code=201, headers={
            "location": f"/payments/{pid}", "x-not-kept": str(random.random())})

    # A 500 on the first execution of each key, a 201 afterwards.
    @app.post("/flaky")
    async def flaky(request: Request, conn=Depends(idempotent_connection)):
        n = hooks.count("flaky", request)
        await conn.execute(f"INSERT INTO {db.payments} (key, amount) VALUES (%s, %s)",
                           [request.state.idempotency.key, n])
        if n == 1:
            return JSONResponse({"error": "card network unavailable"}, status_code=500)
        return JSONResponse({"execution": n}, status_code=201)

    # Raises after writing: a 500, everything rolls back.
    @app.post("/throws")
    async def throws(request: Request, conn=Depends(idempotent_connection)):
        hooks.count("throws", request)
        await conn.execute(f"INSERT INTO {db.payments} (key, amount) VALUES (%s, 1)",
                           [request.state.idempotency.key])
        raise RuntimeError("handler failed")

    # A permanent client error: stored, then replayed.
    @app.post("/reject")
    async def reject(request: Request):
        n = hooks.count("reject", request)
        return JSONResponse({"error": "amount must be positive", "execution": n}, status_code=422)

    @app.post("/reject-unstored")
    @idempotent(store_client_errors=False)
    async def reject_unstored(request: Request):
        n = hooks.count("reject-unstored", request)
        return JSONResponse({"error": "no such account", "execution": n}, status_code=404)

    # The write breaks a deferred constraint: COMMIT fails after the handler answered.
    @app.post("/deferred")
    async def deferred(request: Request, conn=Depends(idempotent_connection)):
        hooks.count("deferred", request)
        await conn.execute(f"INSERT INTO {db.deferred} VALUES (1)")
        return JSONResponse({"ok": True}, status_code=201)

    # Per-route ttl; scope from the hook; the route echoes what it was given.
    @app.post("/ttl")
    @idempotent(ttl=timedelta(hours=1))
    async def ttl(request: Request):
        hooks.count("ttl", request)
        idem = request.state.idempotency
        return {"scope": idem.scope, "attempt": idem.attempt}

    # Non-JSON bodies are fingerprinted as bytes.
    @app.post("/upload")
    async def upload(request: Request):
        n = hooks.count("upload", request)
        data = await request.body()
        return PlainTextResponse(f"got {len(data)} bytes, execution {n}", status_code=201)

    # A small body limit: a larger body is 413 before anything else happens.
    @app.post("/small")
    @idempotent(body_limit=16)
    async def small(request: Request):
        hooks.count("small", request)
        return {"ok": True}

    # No content: replayed as no content.
    @app.patch("/orders/{order_id}", status_code=204)
    async def patch_order(order_id: int, request: Request):
        hooks.count("patch", request)
        return Response(status_code=204)

    # A binary response: replayed byte for byte.
    @app.post("/binary")
    async def binary(request: Request):
        hooks.count("binary", request)
        return Response(bytes([0, 1, 2, 255, 254, 0]), media_type="application/octet-stream")

    # Lease mode: the begin commits, the handler's writes are its own.
    @app.post("/lease")
    @idempotent(mode="lease", lease="1 minute")
    async def lease(request: Request):
        n = hooks.count("lease", request)
        body = await request.json()
        await hooks.inside("lease", {"attempt": request.state.idempotency.attempt})
        await hooks.hold("lease")
        if request.headers.get("x-fail") == "throw":
            raise RuntimeError("the card network is down")
        async with pool.connection() as conn:
            await conn.execute(f"INSERT INTO {db.payments} (key, amount) VALUES (%s, %s)",
                               [request.state.idempotency.key, body["amount"]])
        return JSONResponse({"charged": body["amount"], "attempt": request.state.idempotency.attempt,
                             "execution": n}, status_code=201)

    # Transaction mode without waiting: a concurrent duplicate gets 409 at once.
    @app.post("/nowait")
    @idempotent(wait=False)
    async def nowait(request: Request):
        hooks.count("nowait", request)
        await hooks.inside("nowait", {})
        await hooks.hold("nowait")
        return JSONResponse({"ok": True}, status_code=201)

    # Left out of the middleware.
    @app.post("/webhook")
    @idempotent(enabled=False)
    async def webhook():
        return {"ok": True}

    # Not covered: GET passes through without a key.
    @app.get("/payments")
    async def list_payments():
        return {"ok": True}

    return app
