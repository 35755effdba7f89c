"""The test application in a process of its own, so that a test can kill it
in the middle of a handler and start it again.

Environment: the PG* variables; FIXTURE, the JSON {"payments", "deferred",
"scope_prefix"} of the test's database; HOLD, a comma-separated list of
routes whose handlers never go on past their hold point.  Prints
{"port": N} when it listens on 127.0.0.1.
"""

import asyncio
import json
import os
import sys
import types

from fixture_app import Hooks, make_app
from support import loopback_socket, open_pool, start_server


async def main():
    db = types.SimpleNamespace(**json.loads(os.environ["FIXTURE"]))
    holding = set(filter(None, os.environ.get("HOLD", "").split(",")))

    async def hold(name):
        if name in holding:
            await asyncio.Event().wait()   # forever

    pool = await open_pool(max_size=5)
    hooks = Hooks(hold=hold, on_error=lambda err, request: print("server:", err, file=sys.stderr))
    sock = loopback_socket()
    await start_server(make_app(pool, db, hooks), sock)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
