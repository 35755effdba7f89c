"""A handler interrupted for real, then the request retried.

- the handler's PostgreSQL backend terminated (pg_terminate_backend) while
  the handler is inside its transaction;
- the application process killed (SIGKILL) while its handler is inside its
  transaction, then started again;
- the same in lease mode: the retry meets 409 until the lease has lapsed
  (the restarted process's connections run the ledger clock 2 minutes
  ahead, idempotency.clock_offset), then takes the key over and executes.
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys

import httpx

from fixture_app import Hooks, make_app
from support import new_key, open_pool, serving, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


async def post(url, path, key, body):
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        return await c.post(path, json=body, headers={"idempotency-key": key})


@contextlib.asynccontextmanager
async def app_process(db, hold=(), clock_offset=None, name="idem-py"):
    """tests/fixture_server.py in a process of its own; yields (url, process)."""
    env = dict(os.environ)
    env["FIXTURE"] = json.dumps({"payments": db.payments, "deferred": db.deferred,
                                 "scope_prefix": db.scope_prefix})
    env["HOLD"] = ",".join(hold)
    env["PGAPPNAME"] = name
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), HERE])
    if clock_offset:
        env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + f" -c idempotency.clock_offset={clock_offset}").strip()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.join(HERE, "fixture_server.py"), env=env, stdout=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        port = json.loads(line)["port"]
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def test_backend_terminated_inside_the_transaction_retry_executes_once(db, run):
    async def main():
        reached = asyncio.Queue()
        release = asyncio.Event()
        holding = True

        async def inside(name, info):
            await reached.put(info)

        async def hold(name):
            if holding:
                await release.wait()

        pool = await open_pool(max_size=4)
        hooks = Hooks(inside=inside, hold=hold)
        key = new_key("terminate")
        try:
            async with serving(make_app(pool, db, hooks)) as url:
                first = asyncio.ensure_future(post(url, "/payments", key, {"amount": 70}))
                info = await asyncio.wait_for(reached.get(), 10)
                [(ok,)] = await db.query("SELECT pg_terminate_backend(%s)", [info["pid"]])
                assert ok
                await wait_for(lambda: _gone(db, info["pid"]), what="the backend to exit")
                holding = False
                release.set()
                r1 = await first
                assert r1.status_code == 500
                assert await db.count(key) == 0
                assert await db.ledger(key) == []

                r2 = await post(url, "/payments", key, {"amount": 70})
                assert r2.status_code == 201
                assert "idempotent-replayed" not in r2.headers
                r3 = await post(url, "/payments", key, {"amount": 70})
                assert r3.headers["idempotent-replayed"] == "true"
                assert r3.content == r2.content
                assert await db.count(key) == 1
                assert hooks.calls[f"payments {key}"] == 2
                # the pool lost the terminated connection and still works
                async with pool.connection() as conn:
                    assert (await (await conn.execute("SELECT 1")).fetchone())[0] == 1
        finally:
            await pool.close()
    run(main())


async def _gone(db, pid):
    rows = await db.query("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
    return rows[0][0] == 0


def test_application_killed_inside_the_transaction_retry_executes_once(db, run):
    async def main():
        key = new_key("kill-tx")
        name = f"idem-py-{os.getpid()}-tx"
        async with app_process(db, hold=["payments"], name=name) as (url, proc):
            first = asyncio.ensure_future(post(url, "/payments", key, {"amount": 71}))

            # the handler has inserted its row and waits inside its open transaction
            async def inside():
                rows = await db.query(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = %s AND state = 'idle in transaction'", [name])
                return rows[0][0] == 1
            await wait_for(inside, what="the handler inside its transaction")
            proc.kill()
            await proc.wait()
            try:
                await first
                raise AssertionError("the first client got a response")
            except httpx.HTTPError:
                pass

        async with app_process(db) as (url, _):
            r2 = await post(url, "/payments", key, {"amount": 71})
            assert r2.status_code == 201
            assert "idempotent-replayed" not in r2.headers
            r3 = await post(url, "/payments", key, {"amount": 71})
            assert r3.headers["idempotent-replayed"] == "true"
            assert r3.content == r2.content
        assert await db.count(key) == 1
        [row] = await db.ledger(key)
        assert row["state"] == "completed"
        assert row["attempt"] == 1   # the killed attempt never committed
    run(main())


def test_lease_mode_application_killed_409_until_the_lease_lapses_then_once(db, run):
    async def main():
        key = new_key("kill-lease")
        async with app_process(db, hold=["lease"]) as (url, proc):
            first = asyncio.ensure_future(post(url, "/lease", key, {"amount": 72}))

            # the begin has committed: the key is held under its one-minute lease
            async def held():
                rows = await db.ledger(key)
                return len(rows) == 1 and rows[0]["state"] == "in_progress"
            await wait_for(held, what="the committed attempt")
            proc.kill()
            await proc.wait()
            try:
                await first
                raise AssertionError("the first client got a response")
            except httpx.HTTPError:
                pass

        async with app_process(db) as (now_url, _), app_process(db, clock_offset="2min") as (later_url, _):
            early = await post(now_url, "/lease", key, {"amount": 72})
            assert early.status_code == 409
            assert early.headers["retry-after"] == "1"
            assert await db.count(key) == 0

            r2 = await post(later_url, "/lease", key, {"amount": 72})
            assert r2.status_code == 201
            assert r2.json()["attempt"] == 2   # a takeover of the lapsed attempt
            r3 = await post(now_url, "/lease", key, {"amount": 72})
            assert r3.status_code == 201
            assert r3.headers["idempotent-replayed"] == "true"
            assert r3.content == r2.content
            assert await db.count(key) == 1
            assert (await post(now_url, "/lease", key, {"amount": 73})).status_code == 422
    run(main())
