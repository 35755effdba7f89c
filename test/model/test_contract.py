"""Hold a real server to the model of the contract (model.py).

Hypothesis drives two sessions, s1 and s2, through random sequences of
idem_begin / idem_finish / idem_fail / idem_once / idem_sweep over a few keys
and scopes, with transactions, savepoints, rollbacks, clock moves
(idempotency.clock_offset) past leases and TTLs, changed defaults and hostile
arguments.  Every statement's result or SQLSTATE is compared with the
model's prediction, and after every step that can change it the committed
ledger (read by a third connection) is compared row by row.  A failure is shrunk, and its
message holds the SQL that reproduces it.

No step ever waits for the other session: a call on a key that the other
session's open transaction has written is made with wait => false (begin),
or not made (finish, fail, once).  So the run is deterministic; no sleeps.

Connection: PGHOST, PGPORT, PGDATABASE, PGUSER (libpq's variables).  The
role must be a superuser (clock_offset) and the database must have the
extension; the test empties idem_ledger, so give it a database of its own.
Size: IDEM_MODEL_STEPS (total steps, default 6000), IDEM_MODEL_STEP_COUNT
(steps per example, default 40).  IDEM_MODEL_LEDGER=sql-path,unlogged runs
the same test with the direct path turned off, or an UNLOGGED ledger.
"""

import os

import psycopg
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from model import Model, SqlError, jsonb

OMIT = "<default>"   # an argument left out of the call

LONG_KEY = "é" * 127 + "x"        # 255 bytes: the longest key
KEYS = ["a", "a", "a", "b", "b", LONG_KEY]
SCOPES = [OMIT, OMIT, OMIT, "", "s"]
REQUESTS = [OMIT, None, "null",
            '{"amount": 10, "currency": "eur"}', '{"currency":"eur","amount":10.0}',
            '{ "amount" : 10.00 , "currency" : "eur" }', '{"amount": 99, "currency": "eur"}',
            "[1, 2.5]", "[1.0,2.50]", "[2.5, 1]",
            '{"a": {"b": [true, "x"]}}', '{"a":{"b":[true,"x"]}}', '{"a": {"b": [1, "x"]}}']
RESPONSES = [OMIT, None, '{"id": 1}', '{"id": 1.0}', '{"total": 9.50, "tags": ["a", "b"]}',
             '"done"', "null", '{"note": "café ☕"}']
STATUSES = [OMIT, OMIT, 200, 201, 422, 500]
ATTEMPTS = [OMIT, OMIT, "mine", "mine", "mine", 1, 2, 3]  # mine: the last one this session started
# Intervals in minutes; all steps are multiples of 5 minutes.  Valid ones have
# no months: their length depends on the date, which the model does not
# follow.  -1 stands for an interval with a negative part (22023).
MINUTES = {"5 minutes": 5, "10 minutes": 10, "1 hour": 60, "2 hours": 120, "1 day": 1440,
           "0": 0, "0 seconds": 0, "-5 minutes": -5, "1 day -23 hours": -1,
           "1 month -29 days": -1, "101 years": 101 * 12 * 30 * 1440}
TTLS = [OMIT, OMIT, None, "5 minutes", "1 hour", "1 hour", "2 hours", "1 day"]
LEASES = [OMIT, OMIT, None, "5 minutes", "5 minutes", "10 minutes", "1 hour"]
BATCHES = [OMIT, OMIT, OMIT, None, 1, 100]
# Hostile arguments, one or two per call: NULL key or scope, empty key, keys
# and scopes over 255 bytes, ttl or lease not positive, with a negative part
# or over 100 years, attempt numbers that no begin ever returns, ...
BAD = {"key": [None, "", "k" * 256, "é" * 128], "scope": [None, "s" * 256],
       "ttl": ["0", "-5 minutes", "1 day -23 hours", "1 month -29 days", "101 years"],
       "lease": ["0 seconds", "-5 minutes", "1 day -23 hours", "101 years"],
       "wait": [None], "status": [None],
       "attempt": [0, -1], "batch": [0, -1]}
BAD_ARGS = {"begin": ["key", "scope", "ttl", "lease", "wait"],
            "finish": ["key", "scope", "status", "attempt"], "fail": ["key", "scope", "attempt"],
            "once": ["key", "scope", "ttl"], "sweep": ["batch"]}
CLOCK_STEPS = [5, 5, 10, 60, 60, 120, 1440, 2880, "reset"]
# Settings: None is RESET; the last value of each is refused (22023)
SETTINGS = {"default_ttl": [None, None, "1 hour", "2 hours", "0"],
            "default_lease": [None, None, "10 minutes", "1 hour", "-5 minutes"],
            "max_lease": [None, None, "10 minutes", "1 hour", "1 day -23 hours"]}
TX_ACTIONS = ["BEGIN", "BEGIN", "COMMIT", "COMMIT", "ROLLBACK", "SAVEPOINT", "ROLLBACK TO",
              "RELEASE"]

SESSIONS = st.sampled_from([0, 1])
# The ledger the run uses: sql-path (a CHECK constraint turns the direct
# heap and index path off: every call takes SQL), unlogged, or both
LEDGER = os.environ.get("IDEM_MODEL_LEDGER", "").split(",")
# UTC: a day is 24 hours.  lock_timeout: a call that should not wait but does
# fails with 55P03 instead of hanging.  LOAD: with the library loaded before
# the first SET, idempotency.clock_offset is a real setting, not a placeholder
# (PostgreSQL loses a RESET of a placeholder made inside a transaction block
# when the library is loaded later in that block).
SESSION_SETUP = ["SET timezone = 'UTC'", "SET lock_timeout = '5s'", "LOAD 'idempotency'"]


def lit(v):
    """A SQL literal; long runs of one character as repeat(), for reading."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    run = len(v) - len(v.lstrip(v[:1]))
    if run > 16:
        rest = v[run:]
        return f"repeat({lit(v[0])}, {run})" + (f" || {lit(rest)}" if rest else "")
    return "'" + v.replace("'", "''") + "'"


def call(fn, first, named):
    """fn(first, name => value, ...), leaving out OMIT arguments."""
    args = [lit(first)] + [f"{n} => {lit(v)}" for n, v in named if v is not OMIT]
    return f"{fn}({', '.join(args)})"


def given(v, default=None):
    return default if v is OMIT else v


def minutes(v):
    return None if v is OMIT or v is None else MINUTES[v]


class Server:
    """What the whole run shares: the observer connection, and the server's
    own rendering of the documents the steps use."""

    observer = None
    rendered = {}       # document text -> jsonb::text
    fingerprints = {}   # jsonb(document) -> idem_fingerprint hex

    @classmethod
    def get(cls):
        if cls.observer is None or cls.observer.closed:
            cls.observer = connect()
            row = cls.observer.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            assert row and row[0], "connect as a superuser: the test sets idempotency.clock_offset"
            cls.observer.execute(
                "ALTER TABLE idem_ledger DROP CONSTRAINT IF EXISTS idem_model_sql_path")
            if "sql-path" in LEDGER:
                cls.observer.execute("ALTER TABLE idem_ledger"
                                     " ADD CONSTRAINT idem_model_sql_path CHECK (true)")
            cls.observer.execute("SELECT idem_set_logged(%s)", ("unlogged" not in LEDGER,))
            for doc in RESPONSES + REQUESTS:
                if doc not in (OMIT, None):
                    text, fp = cls.observer.execute(
                        "SELECT %s::jsonb::text, idem_fingerprint(%s::jsonb)",
                        (doc, doc)).fetchone()
                    cls.rendered[doc] = text
                    assert cls.fingerprints.setdefault(jsonb(doc), fp) == fp, \
                        f"requests equal as jsonb with different fingerprints: {doc}"
            assert len(set(cls.fingerprints.values())) == len(cls.fingerprints), \
                "requests that differ as jsonb share a fingerprint"
        return cls.observer


def connect():
    try:
        conn = psycopg.connect("", autocommit=True)
    except psycopg.OperationalError as e:
        raise AssertionError("cannot connect: set PGHOST, PGPORT and PGDATABASE (a database "
                             f"with the extension) and PGUSER (a superuser)\n{e}") from None
    for sql in SESSION_SETUP:
        conn.execute(sql)
    return conn


class Contract(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        observer = Server.get()
        observer.execute("DELETE FROM idem_ledger")
        self.t0 = observer.execute("SELECT clock_timestamp()").fetchone()[0]
        self.db = [connect(), connect()]
        self.model = Model(2)
        self.mine = [{}, {}]      # session -> (scope, key) -> attempt it last started
        self.dirty = False        # the committed ledger may have changed since it was read
        self.requests = {}        # (scope, key) -> request of its first started begin
        self.log = ["-- two sessions, s1 and s2, on a database with the extension and an",
                    "-- empty idem_ledger; each began with: " + "; ".join(SESSION_SETUP) + ";"]

    def teardown(self):
        for conn in self.db:
            try:
                conn.execute("ROLLBACK")
                conn.close()
            except psycopg.Error:
                pass

    # -- running statements ---------------------------------------------------

    def fail_with(self, what):
        raise AssertionError(f"{what}\n\nSQL that reproduces it:\n" + "\n".join(self.log))

    def run(self, s, sql, predict, shape=lambda rows: None):
        """Run sql in session s and compare with predict(), the model's call."""
        # what a statement can change in the committed ledger is read back
        self.dirty |= self.model.sessions[s].frames is None or sql == "COMMIT"
        try:
            expected = ("ok", predict())
        except SqlError as e:
            expected = ("error", e.sqlstate)
        try:
            cur = self.db[s].execute(sql)
            got = ("ok", shape(cur.fetchall() if cur.description else None))
        except psycopg.Error as e:
            got = ("error", e.sqlstate)
            if e.sqlstate is None:      # the connection broke: no SQLSTATE
                self.log.append(f"s{s + 1}: {sql};")
                self.fail_with(f"s{s + 1}: {e}")
        shown = got[1] if got[0] == "ok" else f"ERROR {got[1]}"
        if sql.startswith("SELECT"):
            event(f"{sql.split('(')[0].split()[-1]}: "
                  f"{shown[0] if isinstance(shown, tuple) else shown}")
        self.log.append(f"s{s + 1}: {sql};" + ("" if shown is None else f"  -- {shown}"))
        if got != expected:
            self.fail_with(f"model and server disagree on the last statement\n"
                           f"  model:  {expected}\n  server: {got}")
        return expected[1]

    def pick(self, s):
        """Session s, or the other one when only s is in an aborted block."""
        sessions = self.model.sessions
        return 1 - s if sessions[s].aborted and not sessions[1 - s].aborted else s

    def blocked(self, s, key, scope):
        """The (scope, key) named, if valid and another session holds it."""
        if key is None or scope is None or not key or len(key.encode()) > 255 \
                or len(given(scope, "").encode()) > 255:
            return None
        k = (given(scope, ""), key)
        return k if self.model.held_by_other(s, k) else None

    def render(self, result):
        """A model result with its response document as the server prints it."""
        outcome, status, response, attempt = result
        return (outcome, status, Server.rendered.get(response), attempt)

    # -- the API --------------------------------------------------------------

    def _begin(self, s, key, scope=OMIT, request=OMIT, ttl=OMIT, lease=OMIT, wait=OMIT):
        s = self.pick(s)
        if self.blocked(s, key, scope):
            wait = False        # a waiting begin would block on the other session
            event("idem_begin: wait => false on a key the other session holds")
        sql = "SELECT outcome, status, response::text, attempt FROM " + call(
            "idem_begin", key, [("request", request), ("scope", scope), ("ttl", ttl),
                                ("lease", lease), ("wait", wait)])
        result = self.run(s, sql, lambda: self.render(self.model.begin(
            s, key, given(request), given(scope, ""), minutes(ttl), minutes(lease),
            given(wait, True))), lambda rows: tuple(rows[0]))
        if result and result[0] == "started":
            k = (given(scope, ""), key)
            self.mine[s][k] = result[3]
            self.requests[k] = given(request)

    def _finish(self, s, key, scope=OMIT, response=OMIT, status=OMIT, attempt=OMIT):
        s = self.pick(s)
        if self.blocked(s, key, scope):
            return              # it could wait for the other session's row lock
        if attempt == "mine":
            attempt = self.mine[s].get((given(scope, ""), key), 1)
        sql = "SELECT outcome, status, response::text, attempt FROM " + call(
            "idem_finish", key, [("response", response), ("status", status),
                                 ("scope", scope), ("attempt", attempt)])
        self.run(s, sql, lambda: self.render(self.model.finish(
            s, key, given(response), given(status, 200), given(scope, ""), given(attempt))),
            lambda rows: tuple(rows[0]))

    def _fail(self, s, key, scope=OMIT, attempt=OMIT):
        s = self.pick(s)
        if self.blocked(s, key, scope):
            return
        if attempt == "mine":
            attempt = self.mine[s].get((given(scope, ""), key), 1)
        sql = "SELECT " + call("idem_fail", key, [("scope", scope), ("attempt", attempt)])
        self.run(s, sql, lambda: self.model.fail(s, key, given(scope, ""), given(attempt)))

    def _once(self, s, key, scope=OMIT, ttl=OMIT):
        s = self.pick(s)
        if self.blocked(s, key, scope):
            return
        sql = "SELECT " + call("idem_once", key, [("scope", scope), ("ttl", ttl)])
        self.run(s, sql, lambda: self.model.once(s, key, given(scope, ""), minutes(ttl)),
                 lambda rows: rows[0][0])

    def _sweep(self, s, batch=OMIT):
        s = self.pick(s)
        if batch == 1 and len(self.model.expired_keys(s)) > 1:
            batch = 100         # which row a short batch takes is not the model's to say
        sql = "SELECT " + (f"idem_sweep({lit(batch)})" if batch is not OMIT else "idem_sweep()")
        self.run(s, sql, lambda: self.model.sweep(s, given(batch)), lambda rows: rows[0][0])

    @rule(s=SESSIONS, key=st.sampled_from(KEYS), scope=st.sampled_from(SCOPES),
          request=st.sampled_from(REQUESTS), ttl=st.sampled_from(TTLS),
          lease=st.sampled_from(LEASES), wait=st.sampled_from([OMIT, OMIT, True, False]))
    def begin(self, s, key, scope, request, ttl, lease, wait):
        self._begin(s, key, scope, request, ttl, lease, wait)

    @rule(s=SESSIONS, which=st.integers(0, 7), spelling=st.integers(0, 3),
          lease=st.sampled_from(LEASES), wait=st.sampled_from([OMIT, OMIT, False]))
    def retry(self, s, which, spelling, lease, wait):
        """A retry: begin a key begun before, with a request equal as jsonb,
        perhaps spelt differently; half the time one the other session's open
        transaction holds, if it holds any."""
        s = self.pick(s)
        held = sorted(k for k in self.requests if self.model.held_by_other(s, k))
        keys = held if held and which % 2 else sorted(self.requests) or [("", "a")]
        scope, key = keys[which // 2 % len(keys)]
        first = self.requests.get((scope, key))
        same = [r for r in REQUESTS if r is not OMIT and jsonb(r) == jsonb(first)]
        request = same[spelling % len(same)] if first is not None else OMIT
        self._begin(s, key, scope or OMIT, request, OMIT, lease, wait)

    @rule(s=SESSIONS, key=st.sampled_from(KEYS), scope=st.sampled_from(SCOPES),
          response=st.sampled_from(RESPONSES), status=st.sampled_from(STATUSES),
          attempt=st.sampled_from(ATTEMPTS))
    def finish(self, s, key, scope, response, status, attempt):
        self._finish(s, key, scope, response, status, attempt)

    @rule(s=SESSIONS, which=st.integers(0, 7), response=st.sampled_from(RESPONSES),
          status=st.sampled_from(STATUSES), attempt=st.sampled_from(["mine", "mine", OMIT]),
          release=st.booleans())
    def settle(self, s, which, response, status, attempt, release):
        """An owner finishes or releases an attempt it started (perhaps late,
        perhaps superseded), an attempt in progress if it can see one."""
        s = self.pick(s)
        keys = sorted(self.mine[s]) or sorted(self.requests) or [("", "a")]
        open_ = [k for k in keys if (row := self.model.view(s, k)) and row.state == "in_progress"]
        scope, key = (open_ or keys)[which % len(open_ or keys)]
        if release:
            self._fail(s, key, scope or OMIT, attempt)
        else:
            self._finish(s, key, scope or OMIT, response, status, attempt)

    @rule(s=SESSIONS, key=st.sampled_from(KEYS), scope=st.sampled_from(SCOPES),
          attempt=st.sampled_from(ATTEMPTS))
    def fail(self, s, key, scope, attempt):
        self._fail(s, key, scope, attempt)

    @rule(s=SESSIONS, key=st.sampled_from(KEYS), scope=st.sampled_from(SCOPES),
          ttl=st.sampled_from(TTLS))
    def once(self, s, key, scope, ttl):
        self._once(s, key, scope, ttl)

    @rule(s=SESSIONS, batch=st.sampled_from(BATCHES))
    def sweep(self, s, batch):
        self._sweep(s, batch)

    @rule(s=SESSIONS, fn=st.sampled_from(sorted(BAD_ARGS)), data=st.data())
    def hostile(self, s, fn, data):
        """A call with one or two bad arguments: an ERROR that changes nothing
        (inside a transaction block, it aborts the block)."""
        bad = data.draw(st.lists(st.sampled_from(BAD_ARGS[fn]), min_size=1, max_size=2,
                                 unique=True))
        args = {name: data.draw(st.sampled_from(BAD[name])) for name in bad}
        if fn != "sweep":
            args.setdefault("key", data.draw(st.sampled_from(KEYS)))
        getattr(self, "_" + fn)(s, **args)

    # -- clock, settings and transactions ---------------------------------------

    @rule(step=st.sampled_from(CLOCK_STEPS), who=st.sampled_from(["both", "both", 0, 1]))
    def clock(self, step, who):
        """Move the ledger clock forward (or back to 0) in one session or both."""
        for s in [0, 1] if who == "both" else [who]:
            offset = None if step == "reset" else self.model.sessions[s].now + step
            sql = ("RESET idempotency.clock_offset" if offset is None
                   else f"SET idempotency.clock_offset = '{offset} minutes'")
            self.run(s, sql, lambda: self.model.set(s, "clock_offset", offset))

    @rule(s=SESSIONS, name=st.sampled_from(sorted(SETTINGS)), data=st.data())
    def setting(self, s, name, data):
        """Change a default, or idempotency.max_lease."""
        s = self.pick(s)
        value = data.draw(st.sampled_from(SETTINGS[name]))
        sql = (f"RESET idempotency.{name}" if value is None
               else f"SET idempotency.{name} = {lit(value)}")
        self.run(s, sql, lambda: self.model.set(s, name, minutes(value)))

    @rule(s=SESSIONS, action=st.sampled_from(TX_ACTIONS), which=st.integers(0, 3))
    def transaction(self, s, action, which):
        """BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ROLLBACK TO SAVEPOINT, RELEASE.
        Outside a block any action is BEGIN; in an aborted one, ROLLBACK TO or
        ROLLBACK; without a savepoint, ROLLBACK TO and RELEASE make one."""
        m, sess = self.model, self.model.sessions[s]
        if sess.frames is None:
            action = "BEGIN"
        elif sess.aborted and action not in ("COMMIT", "ROLLBACK"):
            action = "ROLLBACK TO" if len(sess.frames) > 1 else "ROLLBACK"
        elif action == "BEGIN" or (action in ("ROLLBACK TO", "RELEASE") and len(sess.frames) < 2):
            action = "SAVEPOINT"
        if action == "SAVEPOINT":
            name = f"sp{len(sess.frames)}"
            sql, predict = f"SAVEPOINT {name}", lambda: m.savepoint(s, name)
        elif action in ("ROLLBACK TO", "RELEASE"):
            name = sess.frames[1 + which % (len(sess.frames) - 1)][0]
            sql, predict = ((f"ROLLBACK TO SAVEPOINT {name}", lambda: m.rollback_to(s, name))
                            if action == "ROLLBACK TO" else
                            (f"RELEASE SAVEPOINT {name}", lambda: m.release(s, name)))
        else:
            sql, predict = action, {"BEGIN": lambda: m.begin_block(s),
                                    "COMMIT": lambda: m.commit(s),
                                    "ROLLBACK": lambda: m.rollback(s)}[action]
        self.run(s, sql, predict)

    # -- what must hold after every step -------------------------------------------

    @invariant()
    def sessions_and_ledger_agree(self):
        """Each session's transaction state, and the committed rows as a third
        session reads them: times in whole minutes of the clock since the
        example began (plus the seconds it has taken)."""
        for s, sess in enumerate(self.model.sessions):
            expected = ("IDLE" if sess.frames is None else "INERROR" if sess.aborted else "INTRANS")
            got = self.db[s].info.transaction_status.name
            if got != expected:
                self.fail_with(f"s{s + 1} is {got}, the model says {expected}")
        if not self.dirty:
            return
        self.dirty = False
        rows = Server.get().execute(
            "SELECT scope, key, state, status, response::text, attempt, encode(fingerprint, 'hex'),"
            " extract(epoch FROM lease_until - %(t0)s), extract(epoch FROM expires_at - %(t0)s)"
            " FROM idem_ledger", {"t0": self.t0}).fetchall()
        got = {(r[0], r[1]): r[2:] for r in rows}
        expected = {}
        for k, row in self.model.committed.items():
            expected[k] = (row.state, row.status, Server.rendered.get(row.response), row.attempt,
                           Server.fingerprints.get(row.request), row.lease_until, row.expires_at)
        for k in set(got) | set(expected):
            g, e = got.get(k), expected.get(k)
            if g is not None and e is not None and g[:5] == e[:5] and all(
                    (gm is None) == (em is None) and (em is None or 0 <= float(gm) - 60 * em < 60)
                    for gm, em in zip(g[5:], e[5:])):
                continue
            self.fail_with(f"the committed ledger row {k} differs\n  model (times in minutes):"
                           f"  {e}\n  server (times in seconds): {g}")


STEP_COUNT = int(os.environ.get("IDEM_MODEL_STEP_COUNT", "40"))
TOTAL_STEPS = int(os.environ.get("IDEM_MODEL_STEPS", "6000"))

TestContract = Contract.TestCase
TestContract.settings = settings(
    max_examples=max(1, TOTAL_STEPS // STEP_COUNT), stateful_step_count=STEP_COUNT,
    deadline=None, database=None, print_blob=True,
    suppress_health_check=list(HealthCheck))
