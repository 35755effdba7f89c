"""What each kind of request gets, in transaction mode and lease mode."""

import asyncio
import base64

from datetime import timedelta

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from fixture_app import Hooks, make_app
from idempotency_asgi import IdempotencyMiddleware, idempotent
from idempotency_asgi.ledger import Ledger
from idempotency_asgi.middleware import _Call
from support import new_key, open_pool, serving


class Env:
    """The app on a pool, served on 127.0.0.1, with a client."""

    def __init__(self, db, hooks=None, **options):
        self.db = db
        self.hooks = hooks or Hooks()
        self.options = options

    async def __aenter__(self):
        self.pool = await open_pool()
        self._serving = serving(make_app(self.pool, self.db, self.hooks, **self.options))
        self.url = await self._serving.__aenter__()
        self.client = httpx.AsyncClient(base_url=self.url, timeout=30)
        return self

    async def __aexit__(self, *exc):
        await self.client.aclose()
        await self._serving.__aexit__(*exc)
        await self.pool.close()

    async def post(self, path, key=None, body=None, headers=None, content=None):
        h = dict(headers or {})
        if key is not None:
            h["idempotency-key"] = key
        if body is not None:
            return await self.client.post(path, json=body, headers=h)
        return await self.client.post(path, content=content or b"", headers=h)


def is_problem(r, status):
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == status


def test_missing_empty_too_long_or_repeated_key_is_400(db, run):
    async def main():
        async with Env(db) as e:
            r = await e.post("/payments", None, {"amount": 1})
            is_problem(r, 400)
            assert "Idempotency-Key" in r.json()["title"]
            for bad in ["", '""', "x" * 256, '"unterminated', '"a"b', "caf\u00e9"]:
                r = await e.client.post("/payments", json={"amount": 1},
                                        headers=[("idempotency-key", bad.encode("latin-1"))])
                is_problem(r, 400)
            r = await e.client.post("/payments", json={"amount": 1},
                                    headers=[("idempotency-key", "a"), ("idempotency-key", "b")])
            is_problem(r, 400)
            assert "more than one" in r.json()["detail"]

            longest = new_key("x").ljust(255, "x")
            assert (await e.post("/payments", longest, {"amount": 1})).status_code == 201
            assert await db.count(longest) == 1

            assert (await e.client.get("/payments")).status_code == 200
            assert (await e.post("/webhook")).status_code == 200   # enabled=False
    run(main())


def test_quoted_and_bare_key_are_the_same_key(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("quoted")
            first = await e.post("/payments", f'"{key}"', {"amount": 5})
            assert first.status_code == 201
            second = await e.post("/payments", key, {"amount": 5})
            assert second.headers["idempotent-replayed"] == "true"
            assert second.content == first.content
    run(main())


def test_replay_returns_stored_status_body_and_kept_headers_marked(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("replay")
            first = await e.post("/payments", key, {"amount": 42})
            assert first.status_code == 201
            assert "idempotent-replayed" not in first.headers
            assert "x-not-kept" in first.headers
            # the same body with other white space and 42.0 for 42
            again = await e.post("/payments", key, content=b'{ "amount" :  42.0 }',
                                 headers={"content-type": "application/json"})
            assert again.status_code == 201
            assert again.content == first.content
            assert again.headers["content-type"] == first.headers["content-type"]
            assert again.headers["location"] == first.headers["location"]
            assert again.headers["idempotent-replayed"] == "true"
            assert "x-not-kept" not in again.headers
            assert await db.count(key) == 1
            assert e.hooks.calls[f"payments {key}"] == 1

            [row] = await db.ledger(key)
            assert row["state"] == "completed"
            assert row["status"] == 201
            assert sorted(row["response"]["headers"]) == ["content-type", "location"]
            assert row["response"]["body"] == first.text
    run(main())


def test_same_key_other_body_path_or_route_is_422(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("mismatch")
            assert (await e.post("/payments", key, {"amount": 10})).status_code == 201
            is_problem(await e.post("/payments", key, {"amount": 11}), 422)
            is_problem(await e.post("/payments?currency=eur", key, {"amount": 10}), 422)
            is_problem(await e.post("/reject", key, {"amount": 10}), 422)
            assert f"reject {key}" not in e.hooks.calls
            assert await db.count(key) == 1
    run(main())


def test_body_that_is_not_json_is_fingerprinted_as_bytes(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("bytes")
            h = {"content-type": "application/octet-stream"}
            first = await e.post("/upload", key, content=bytes([1, 2, 3]), headers=h)
            assert first.status_code == 201
            again = await e.post("/upload", key, content=bytes([1, 2, 3]), headers=h)
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content
            is_problem(await e.post("/upload", key, content=bytes([1, 2, 4]), headers=h), 422)
            bad = await e.post("/payments", new_key("badjson"), content=b'{"amount": ',
                               headers={"content-type": "application/json"})
            is_problem(bad, 400)
    run(main())


def test_body_over_the_limit_is_413_and_nothing_is_recorded(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("small")
            is_problem(await e.post("/small", key, {"text": "x" * 100000}), 413)
            assert await db.ledger(key) == []
            assert (await e.post("/small", key, {"a": 1})).status_code == 200
            assert e.hooks.calls[f"small {key}"] == 1
    run(main())


def test_patch_is_covered_and_a_204_replays_as_204(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("patch")
            assert (await e.client.patch("/orders/7", json={})).status_code == 400
            first = await e.client.patch("/orders/7", json={"state": "paid"}, headers={"idempotency-key": key})
            assert first.status_code == 204
            again = await e.client.patch("/orders/7", json={"state": "paid"}, headers={"idempotency-key": key})
            assert again.status_code == 204
            assert again.content == b""
            assert again.headers["idempotent-replayed"] == "true"
            assert e.hooks.calls[f"patch {key}"] == 1
    run(main())


def test_binary_response_is_replayed_byte_for_byte(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("binary")
            first = await e.post("/binary", key)
            again = await e.post("/binary", key)
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content == bytes([0, 1, 2, 255, 254, 0])
            [row] = await db.ledger(key)
            assert row["response"]["body_base64"] == base64.b64encode(first.content).decode()
    run(main())


def test_500_is_not_stored_and_the_retry_runs_again(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("flaky")
            first = await e.post("/flaky", key, {})
            assert first.status_code == 500
            assert await db.count(key) == 0
            assert await db.ledger(key) == []
            retry = await e.post("/flaky", key, {})
            assert retry.status_code == 201
            assert retry.json() == {"execution": 2}
            assert "idempotent-replayed" not in retry.headers
            assert await db.count(key) == 1
            replay = await e.post("/flaky", key, {})
            assert replay.headers["idempotent-replayed"] == "true"
            assert e.hooks.calls[f"flaky {key}"] == 2
    run(main())


def test_handler_that_raises_rolls_back_its_writes_and_the_key(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("throws")
            assert (await e.post("/throws", key, {})).status_code == 500
            assert (await e.post("/throws", key, {})).status_code == 500
            assert e.hooks.calls[f"throws {key}"] == 2
            assert await db.count(key) == 0
            assert await db.ledger(key) == []
    run(main())


def test_4xx_is_stored_and_replayed_unless_configured_not_to(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("reject")
            first = await e.post("/reject", key, {"amount": -1})
            assert first.status_code == 422
            assert first.json()["execution"] == 1
            again = await e.post("/reject", key, {"amount": -1})
            assert again.status_code == 422
            assert again.content == first.content
            assert again.headers["idempotent-replayed"] == "true"
            assert e.hooks.calls[f"reject {key}"] == 1

            key2 = new_key("unstored")
            assert (await e.post("/reject-unstored", key2, {})).json()["execution"] == 1
            rerun = await e.post("/reject-unstored", key2, {})
            assert rerun.status_code == 404
            assert rerun.json()["execution"] == 2
            assert "idempotent-replayed" not in rerun.headers
    run(main())


def test_failed_commit_answers_500_and_keeps_nothing(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("deferred")
            r = await e.post("/deferred", key, {})
            is_problem(r, 500)
            assert len(e.hooks.errors) == 1
            assert e.hooks.errors[0].sqlstate == "23505"
            assert await db.ledger(key) == []
            assert (await e.post("/deferred", key, {})).status_code == 500
            assert e.hooks.calls[f"deferred {key}"] == 2
    run(main())


def test_scope_from_the_hook_and_ttl_from_the_route(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("scope")
            a = await e.post("/ttl", key, {}, headers={"x-tenant": "a"})
            b = await e.post("/ttl", key, {}, headers={"x-tenant": "b"})
            assert a.json()["scope"] == f"{db.scope_prefix}:a"
            assert b.json()["scope"] == f"{db.scope_prefix}:b"
            assert "idempotent-replayed" not in b.headers
            assert e.hooks.calls[f"ttl {key}"] == 2
            rows = await db.ledger(key)
            assert [r["scope"] for r in rows] == [f"{db.scope_prefix}:a", f"{db.scope_prefix}:b"]
            for r in rows:
                assert 3600 <= r["ttl"].total_seconds() < 3660
    run(main())


def test_in_progress_is_409_with_retry_after(db, run):
    """Lease mode, and transaction mode without waiting."""
    async def main():
        reached = {}
        held = {}

        async def inside(name, info):
            if name in reached:
                reached[name].set()

        async def hold(name):
            if name in held:
                await held[name].wait()

        async with Env(db, Hooks(inside=inside, hold=hold)) as e:
            for path in ["/lease", "/nowait"]:
                name = path[1:]
                key = new_key(name)
                reached[name] = asyncio.Event()
                held[name] = asyncio.Event()
                first = asyncio.ensure_future(e.post(path, key, {"amount": 7}))
                await asyncio.wait_for(reached[name].wait(), 10)
                second = await e.post(path, key, {"amount": 7})
                is_problem(second, 409)
                assert second.headers["retry-after"] == "1"
                held[name].set()
                del reached[name], held[name]
                assert (await first).status_code == 201
                third = await e.post(path, key, {"amount": 7})
                assert third.headers["idempotent-replayed"] == "true"
                assert e.hooks.calls[f"{name} {key}"] == 1
    run(main())


def test_lease_mode_raise_releases_the_key_so_the_retry_runs_at_once(db, run):
    async def main():
        async with Env(db) as e:
            key = new_key("leasefail")
            first = await e.post("/lease", key, {"amount": 3}, headers={"x-fail": "throw"})
            assert first.status_code == 500
            [row] = await db.ledger(key)
            assert row["state"] == "in_progress"   # released: no lease holds it
            retry = await e.post("/lease", key, {"amount": 3})
            assert retry.status_code == 201
            assert retry.json()["attempt"] == 2
            assert await db.count(key) == 1
            replay = await e.post("/lease", key, {"amount": 3})
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.content == retry.content
    run(main())


def test_await_interval_is_passed_to_idem_begin(db, run):
    """await_interval goes to idem_begin as `await`: a server without await refuses it."""
    async def main():
        has_await = (await db.query(
            "SELECT count(*) FROM pg_proc p, unnest(p.proargnames) a "
            "WHERE p.proname = 'idem_begin' AND a = 'await'"))[0][0] > 0
        async with Env(db, await_interval="5 seconds") as e:
            r = await e.post("/ttl", new_key("await"), {})
            assert r.status_code == (200 if has_await else 500)
            if not has_await:
                call = _Call(key=new_key("await"), request=None, scope="", ttl=None, lease=None, wait=True)
                async with e.pool.connection() as conn:
                    with pytest.raises(psycopg.Error) as info:
                        await Ledger(await_interval=timedelta(seconds=5)).begin(conn, call)
                assert info.value.sqlstate == "42883"   # no idem_begin with an await argument
    run(main())


def test_await_interval_answers_a_retry_with_the_first_response(db, run):
    """A retry during a lease-mode request waits for it and replays its response instead of 409."""
    async def main():
        has_await = (await db.query(
            "SELECT count(*) FROM pg_proc p, unnest(p.proargnames) a "
            "WHERE p.proname = 'idem_begin' AND a = 'await'"))[0][0] > 0
        if not has_await:
            return   # a server before 1.2: see the test above
        reached = asyncio.Event()
        held = asyncio.Event()

        async def inside(name, info):
            if name == "lease":
                reached.set()

        async def hold(name):
            if name == "lease":
                await held.wait()

        async with Env(db, Hooks(inside=inside, hold=hold), await_interval="30 seconds") as e:
            key = new_key("awaited")
            first = asyncio.ensure_future(e.post("/lease", key, {"amount": 8}))
            await asyncio.wait_for(reached.wait(), 10)
            second = asyncio.ensure_future(e.post("/lease", key, {"amount": 8}))
            # the retry's begin sleeps in await until the first request finishes
            for _ in range(1000):
                n = (await db.query(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Extension' AND strpos(query, 'idem_begin') > 0"))[0][0]
                if n > 0:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the retry never waited")
            held.set()
            a, b = await first, await second
            assert a.status_code == 201
            assert b.status_code == 201
            assert b.headers["idempotent-replayed"] == "true"
            assert b.content == a.content
            assert e.hooks.calls[f"lease {key}"] == 1
    run(main())


def test_plain_starlette_app(db, run):
    async def main():
        pool = await open_pool(max_size=2)
        runs = []

        @idempotent(ttl="10 minutes")
        async def create(request):
            runs.append(1)
            return JSONResponse({"n": len(runs)}, status_code=201)

        app = Starlette(routes=[Route("/things", create, methods=["POST"])])
        app.add_middleware(IdempotencyMiddleware, pool=pool, scope=lambda r: db.scope_prefix)
        try:
            async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
                key = new_key("starlette")
                a = await client.post("/things", json={"x": 1}, headers={"idempotency-key": key})
                b = await client.post("/things", json={"x": 1}, headers={"idempotency-key": key})
                assert a.status_code == b.status_code == 201
                assert b.headers["idempotent-replayed"] == "true"
                assert a.content == b.content
                assert len(runs) == 1
                assert (await client.post("/nowhere", headers={"idempotency-key": key})).status_code == 404
        finally:
            await pool.close()
    run(main())


def test_options_are_checked():
    with pytest.raises(TypeError, match="unknown option 'lifetime'"):
        IdempotencyMiddleware(None, pool=None, lifetime=3)
    with pytest.raises(TypeError, match="mode"):
        IdempotencyMiddleware(None, pool=None, mode="eager")
    with pytest.raises(TypeError, match="unknown option"):
        idempotent(pool=None)
