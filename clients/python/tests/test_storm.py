"""20 clients send the same request 5 times each, all at once."""

import asyncio

import httpx

from fixture_app import Hooks, make_app
from support import new_key, open_pool, serving


def test_100_concurrent_duplicates_execute_once(db, run):
    """One execution, one business row, 100 identical responses, 99 replays."""
    async def main():
        pool = await open_pool(min_size=10, max_size=10)
        hooks = Hooks()
        key = new_key("storm")
        try:
            async with serving(make_app(pool, db, hooks)) as url:
                clients = [httpx.AsyncClient(base_url=url, timeout=60,
                                             limits=httpx.Limits(max_connections=5))
                           for _ in range(20)]
                # the handler sleeps 0.3 s inside its transaction, so the
                # duplicates arrive while the first one is still running
                sends = [c.post("/payments", json={"amount": 100, "currency": "eur"},
                                headers={"idempotency-key": key, "x-sleep": "0.3"})
                         for c in clients for _ in range(5)]
                responses = await asyncio.gather(*sends)
                for c in clients:
                    await c.aclose()
        finally:
            await pool.close()

        assert await db.count(key) == 1, "business rows"
        assert hooks.calls[f"payments {key}"] == 1, "handler executions"
        assert {r.status_code for r in responses} == {201}
        assert len({r.content for r in responses}) == 1, "every body identical"
        assert len({r.headers["location"] for r in responses}) == 1, "every Location identical"
        replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
        assert len(replayed) == 99, "replays marked"
        [row] = await db.ledger(key)
        assert row["state"] == "completed"
        assert row["attempt"] == 1
    run(main())
