"""The extension's calls, one SQL statement each, on a psycopg 3 AsyncConnection."""

import datetime


def interval_text(value):
    """A ttl or lease as interval text: a timedelta, seconds, or text as it is."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds()} seconds"
    if isinstance(value, (int, float)):
        return f"{value} seconds"
    return str(value)


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


class Ledger:
    """schema: where CREATE EXTENSION put the functions (None: the search_path).
    await_interval: passed to idem_begin as `await` (when the server supports await)."""

    def __init__(self, schema=None, await_interval=None):
        q = _quote_ident(schema) + "." if schema else ""
        self.await_interval = interval_text(await_interval)
        await_arg = "" if self.await_interval is None else ", await => %s::interval"
        self.begin_sql = (
            "SELECT outcome, status, response, attempt FROM " + q + "idem_begin("
            "key => %s, request => %s::jsonb, scope => %s, ttl => %s::interval, "
            "lease => %s::interval, wait => %s" + await_arg + ")")
        self.finish_sql = (
            "SELECT outcome FROM " + q + "idem_finish("
            "key => %s, response => %s::jsonb, status => %s, scope => %s, attempt => %s)")
        self.fail_sql = "SELECT " + q + "idem_fail(key => %s, scope => %s, attempt => %s)"

    async def begin(self, conn, call):
        """(outcome, status, response, attempt)."""
        params = [call.key, call.request, call.scope, interval_text(call.ttl),
                  interval_text(call.lease), call.wait]
        if self.await_interval is not None:
            params.append(self.await_interval)
        cur = await conn.execute(self.begin_sql, params)
        return await cur.fetchone()

    async def finish(self, conn, call, response_json, status):
        await conn.execute(self.finish_sql, [call.key, response_json, status, call.scope, call.attempt])

    async def fail(self, conn, call):
        await conn.execute(self.fail_sql, [call.key, call.scope, call.attempt])
