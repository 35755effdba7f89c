"""A database, HTTP servers on 127.0.0.1 and a pool, for the tests.

The server comes from the environment (PGHOST, PGPORT, PGUSER, PGDATABASE),
as a superuser: the tests create the extension if it is missing, make their
own tables (names carry a random suffix), read the ledger to check it, and
drop everything they made at the end.
"""

import asyncio
import contextlib
import itertools
import secrets
import socket
import time

import psycopg
import uvicorn
from psycopg_pool import AsyncConnectionPool

RUN = secrets.token_hex(4)
_counter = itertools.count(1)


def new_key(label="k"):
    """A fresh key for each use, so that tests never meet each other's keys."""
    return f"{label}-{RUN}-{next(_counter)}"


class Database:
    def __init__(self):
        self.payments = f"http_py_payments_{RUN}"
        self.deferred = f"http_py_deferred_{RUN}"
        self.scope_prefix = f"py-test-{RUN}"
        with psycopg.connect(autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS idempotency")
            c.execute(f"CREATE TABLE {self.payments} "
                      "(id bigserial PRIMARY KEY, key text NOT NULL, amount numeric NOT NULL)")
            c.execute(f"CREATE TABLE {self.deferred} (id int, CONSTRAINT {self.deferred}_u "
                      "UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)")
            c.execute(f"INSERT INTO {self.deferred} VALUES (1)")

    def teardown(self):
        with psycopg.connect(autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {self.payments}, {self.deferred}")
            c.execute("DELETE FROM idem_ledger WHERE key LIKE %s", [f"%-{RUN}-%"])

    async def query(self, sql, params=()):
        async with await psycopg.AsyncConnection.connect(autocommit=True) as c:
            cur = await c.execute(sql, params)
            return await cur.fetchall() if cur.description else None

    async def count(self, key):
        rows = await self.query(f"SELECT count(*) FROM {self.payments} WHERE key = %s", [key])
        return rows[0][0]

    async def ledger(self, key):
        """The key's ledger rows as dicts, one per scope."""
        rows = await self.query(
            "SELECT scope, state, status, response, attempt, expires_at - created_at "
            "FROM idem_ledger WHERE key = %s ORDER BY scope", [key])
        names = ["scope", "state", "status", "response", "attempt", "ttl"]
        return [dict(zip(names, r)) for r in rows]


async def open_pool(max_size=10, min_size=1, **kwargs):
    pool = AsyncConnectionPool(conninfo="", min_size=min_size, max_size=max_size, kwargs=kwargs, open=False)
    await pool.open(wait=True)
    return pool


def loopback_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


async def start_server(app, sock=None, lifespan="off"):
    """Serve app with uvicorn on 127.0.0.1, in this event loop.  Returns (url, stop)."""
    sock = sock or loopback_socket()
    config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)

    async def stop():
        server.should_exit = True
        server.force_exit = True
        await task
        sock.close()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


@contextlib.asynccontextmanager
async def serving(app, lifespan="off"):
    url, stop = await start_server(app, lifespan=lifespan)
    try:
        yield url
    finally:
        await stop()


async def wait_for(fn, timeout=10.0, what="condition"):
    """Wait until await fn() is truthy, checking every 20 ms."""
    until = time.monotonic() + timeout
    while True:
        v = await fn()
        if v:
            return v
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
