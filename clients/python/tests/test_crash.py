"""A handler interrupted for real, then the request retried.

- the handler's PostgreSQL backend terminated (pg_terminate_backend) while
  the handler is inside its transaction;
- the application process killed (SIGKILL) while its handler is inside its
  transaction, then started again;
- the same in lease mode: the retry meets 409 until the lease has lapsed
  (the restarted process's connections run the ledger clock 2 minutes
  ahead, idempotency.clock_offset), then takes the key over and executes;
- a lease-mode handler stuck past its lease (its process alive): taken over,
  and its late end refused with IK003.
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


def test_lease_mode_application_killed_retry_after_the_lease_takes_over_once(db, run):
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
            r2 = await post(now_url, "/lease", key, {"amount": 72})
            if r2.status_code == 409:
                # the lease still holds the key
                assert r2.headers["retry-after"] == "1"
                assert await db.count(key) == 0
                r2 = await post(later_url, "/lease", key, {"amount": 72})
            # else: a server that takes over from an owner whose session is
            # gone did so at once, before the lease lapsed
            assert r2.status_code == 201
            assert r2.json()["attempt"] == 2   # a takeover of the crashed attempt
            r3 = await post(now_url, "/lease", key, {"amount": 72})
            assert r3.status_code == 201
            assert r3.headers["idempotent-replayed"] == "true"
            assert r3.content == r2.content
            assert await db.count(key) == 1
            assert (await post(now_url, "/lease", key, {"amount": 73})).status_code == 422
    run(main())


def test_lease_mode_handler_stuck_past_its_lease_is_taken_over_and_its_late_end_refused(db, run):
    async def main():
        key = new_key("stuck-lease")
        reached = asyncio.Event()
        release = asyncio.Event()

        async def inside(name, info):
            reached.set()

        async def hold(name):
            await release.wait()

        pool = await open_pool(max_size=4)
        later_pool = await open_pool(max_size=4, options="-c idempotency.clock_offset=2min")
        hooks = Hooks(inside=inside, hold=hold)
        try:
            async with serving(make_app(pool, db, hooks)) as stuck_url, \
                    serving(make_app(later_pool, db, Hooks())) as later_url:
                # the first request's handler is stuck (its process and session alive)
                async with httpx.AsyncClient(base_url=stuck_url, timeout=30) as c:
                    first = asyncio.ensure_future(c.post(
                        "/lease", json={"amount": 74}, headers={"idempotency-key": key, "x-fail": "throw"}))
                    await asyncio.wait_for(reached.wait(), 10)
                    assert (await post(stuck_url, "/lease", key, {"amount": 74})).status_code == 409

                    # two minutes later by the ledger's clock the one-minute lease has lapsed
                    r2 = await post(later_url, "/lease", key, {"amount": 74})
                    assert r2.status_code == 201
                    assert r2.json()["attempt"] == 2

                    # the stuck handler ends with an error: its idem_fail (attempt 1) is refused
                    release.set()
                    assert (await first).status_code == 500
                assert [e.sqlstate for e in hooks.errors] == ["IK003"]
                r3 = await post(stuck_url, "/lease", key, {"amount": 74})
                assert r3.headers["idempotent-replayed"] == "true"
                assert r3.content == r2.content
                assert await db.count(key) == 1
        finally:
            await pool.close()
            await later_pool.close()
    run(main())
