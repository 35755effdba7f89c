"""The FastAPI example of clients/README.md ("From HTTP"), run as written.

Its pool gets a schema of the test's own first in its search_path, and it is
served by uvicorn on a free port of 127.0.0.1, with its startup and shutdown
handlers (which open and close the pool).
"""

import os
import re

import httpx
import psycopg
import pytest

from support import RUN, new_key, serving

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "README.md")
SCHEMA = f"http_py_readme_{RUN}"


def example_code():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## From HTTP"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


# on_startup works on every FastAPI; Debian 12's (0.92) has no lifespan argument yet
@pytest.mark.filterwarnings("ignore:The on_startup and on_shutdown parameters are deprecated")
def test_readme_fastapi_example(db, run):
    code = example_code()
    assert code.count("\n") <= 15, "fifteen lines at most"
    with psycopg.connect(autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {SCHEMA}")
        c.execute(f"CREATE TABLE {SCHEMA}.payments (id bigserial PRIMARY KEY, customer text, amount numeric)")
    saved = os.environ.get("PGOPTIONS")
    os.environ["PGOPTIONS"] = f"{saved or ''} -c search_path={SCHEMA},public".strip()

    async def main():
        namespace = {"__name__": "payments"}
        exec(compile(code, "README.md", "exec"), namespace)
        async with serving(namespace["app"], lifespan="on") as url, \
                httpx.AsyncClient(base_url=url) as client:
            key = new_key("readme")
            body = {"customer": "ann", "amount": 42}
            first = await client.post("/payments", json=body, headers={"idempotency-key": key})
            assert first.status_code == 201
            again = await client.post("/payments", json=body, headers={"idempotency-key": key})
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content
            assert (await client.post("/payments", json=body)).status_code == 400
        rows = await db.query(f"SELECT customer, amount FROM {SCHEMA}.payments")
        assert [(c, int(a)) for c, a in rows] == [("ann", 42)]

    try:
        run(main())
    finally:
        if saved is None:
            os.environ.pop("PGOPTIONS", None)
        else:
            os.environ["PGOPTIONS"] = saved
        with psycopg.connect(autocommit=True) as c:
            c.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
