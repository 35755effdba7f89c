"""A reference model of the idempotency contract: the API, error codes and
edges as the README states them, and its choices where the contract is
silent.

It keeps the ledger as PostgreSQL would, per session: committed rows, each
session's uncommitted writes, its savepoints and its settings, and predicts
what every call returns or which SQLSTATE it raises.  test_contract.py holds
a real server to it.

Time is whole minutes of the ledger clock: a session's clock is its
idempotency.clock_offset, so a row's lease_until and expires_at are minutes
too.  The server adds the wall clock to both sides; as long as a test runs
for less than the smallest step of the clock, comparing minutes here gives
the server's answer (a row whose expiry equals "now" here was written a
little earlier there, so it has expired in both).
"""

import json
from dataclasses import dataclass, replace
from decimal import Decimal

MAX_KEY_BYTES = 255
MAX_INTERVAL = 100 * 12 * 30 * 24 * 60  # 100 years, as interval comparison counts them
DEFAULT_SETTINGS = {"clock_offset": 0, "default_ttl": 24 * 60, "default_lease": 5,
                    "max_lease": MAX_INTERVAL}


class SqlError(Exception):
    """An ERROR the server must raise: SqlError(sqlstate, message)."""
    sqlstate = property(lambda self: self.args[0])


def jsonb(text):
    """A JSON document as jsonb compares it: key order and white space do
    not matter, numbers compare by value (1.0 = 1), true is not 1.  None
    (SQL NULL) stays None, distinct from JSON null."""
    if text is None:
        return None

    def canon(v):
        if isinstance(v, bool):
            return ("bool", v)
        if isinstance(v, Decimal):
            return ("number", v.normalize() if v else Decimal(0))
        if isinstance(v, list):
            return ("array", tuple(canon(x) for x in v))
        if isinstance(v, dict):
            return ("object", frozenset((k, canon(x)) for k, x in v.items()))
        return ("string" if isinstance(v, str) else "null", v)

    return canon(json.loads(text, parse_float=Decimal, parse_int=Decimal))


@dataclass(frozen=True)
class Row:
    """One ledger row.  lease_until is None once released or completed."""
    state: str          # 'in_progress' or 'completed'
    attempt: int
    request: object     # jsonb(request); None for no request
    expires_at: int
    lease_until: object
    status: object = None
    response: object = None  # the response document as the caller wrote it


def standing(row, now):
    """How a caller arriving at now sees a row (ledger.c's row_standing)."""
    if row.expires_at <= now:
        return "expired"      # counts as absent, swept or not
    if row.state == "completed":
        return "completed"
    if row.lease_until is None:
        return "released"
    if row.lease_until <= now:
        return "lapsed"
    return "held"


class Session:
    """One connection: settings, and inside a transaction block its
    uncommitted writes and a frame per BEGIN/SAVEPOINT to roll back to."""

    def __init__(self):
        self.settings = dict(DEFAULT_SETTINGS)
        self.writes = {}      # (scope, key) -> Row, or None for a deleted row
        self.frames = None    # None outside a block; else [(name, writes, settings)]
        self.aborted = False  # an error happened; only ROLLBACK (TO) helps

    @property
    def now(self):
        return self.settings["clock_offset"]

    def restore(self, frame):
        self.writes, self.settings = dict(frame[1]), dict(frame[2])


class Model:
    """The ledger and its sessions.  Each API method takes the session index
    first and returns what the call returns, or raises SqlError."""

    def __init__(self, sessions=2):
        self.committed = {}
        self.sessions = [Session() for _ in range(sessions)]

    # -- visibility -------------------------------------------------------

    def view(self, s, k):
        """Key k's row as session s reads it: its own write, else the committed one."""
        w = self.sessions[s].writes
        return w[k] if k in w else self.committed.get(k)

    def held_by_other(self, s, k):
        """True while another session's open transaction has written key k:
        a wait => true call on k from s would wait for it."""
        return any(k in o.writes for i, o in enumerate(self.sessions) if i != s)

    def _standing(self, s, k, row, now):
        # The caller's own uncommitted attempt holds the key even when its
        # lease has lapsed (README: a begin meeting its own attempt gets
        # in_progress); a lease only matters once a competitor arrives.
        st = standing(row, now)
        if st == "lapsed" and k in self.sessions[s].writes:
            return "held"
        return st

    # -- statements -------------------------------------------------------

    def _run(self, s, op):
        """Run one statement: op(session) returns (result, writes).  Writes
        go to the ledger at once outside a block, else to the session's
        uncommitted writes.  An error changes nothing; inside a block it
        aborts the innermost (sub)transaction until ROLLBACK (TO)."""
        sess = self.sessions[s]
        if sess.aborted:
            raise SqlError("25P02", "current transaction is aborted")
        try:
            result, writes = op(sess)
        except SqlError:
            if sess.frames is not None:
                sess.restore(sess.frames[-1])
                sess.aborted = True
            raise
        if sess.frames is None:
            self._apply(writes)
        else:
            sess.writes.update(writes)
        return result

    def _apply(self, writes):
        for k, row in writes.items():
            self.committed[k] = row
            if row is None:
                del self.committed[k]

    @staticmethod
    def _text(value, name, empty_ok):
        if value is None:
            raise SqlError("22004", f"{name} must not be NULL")
        if not value and not empty_ok:
            raise SqlError("22023", f"{name} must not be empty")
        if len(value.encode("utf-8")) > MAX_KEY_BYTES:
            raise SqlError("22023", f"{name} is too long")
        return value

    def _key(self, key, scope):
        """The (scope, key) a call names, checked in the server's order."""
        key = self._text(key, "key", False)
        return (self._text(scope, "scope", True), key)

    @staticmethod
    def _interval(minutes, default, name, positive=True):
        """A ttl, lease or setting in minutes; None means the default.  Not
        positive (or a part negative: callers say so with -1) or over 100
        years is 22023."""
        if minutes is None:
            return default
        if (positive and minutes <= 0) or abs(minutes) > MAX_INTERVAL:
            raise SqlError("22023", f"{name} is not a valid interval here")
        return minutes

    @staticmethod
    def _next_attempt(row, st):
        """An expired completed key starts afresh; any other takeover counts
        on, so that a late finish by an earlier owner meets IK003."""
        return 1 if st == "expired" and row.state == "completed" else row.attempt + 1

    def begin(self, s, key, request=None, scope="", ttl=None, lease=None, wait=True):
        """idem_begin: (outcome, status, response, attempt)."""
        def op(sess):
            k = self._key(key, scope)
            ttl_m = self._interval(ttl, sess.settings["default_ttl"], "ttl")
            lease_m = self._interval(lease, sess.settings["default_lease"], "lease")
            if wait is None:
                raise SqlError("22004", "wait must not be NULL")
            if lease_m > sess.settings["max_lease"]:
                raise SqlError("22023", "lease is longer than idempotency.max_lease")
            req, now = jsonb(request), sess.now
            if not wait and self.held_by_other(s, k):
                return ("in_progress", None, None, None), {}
            new = Row("in_progress", 1, req, now + lease_m + ttl_m, now + lease_m)
            row = self.view(s, k)
            if row is None:
                return ("started", None, None, 1), {k: new}
            st = self._standing(s, k, row, now)
            if st in ("completed", "held", "lapsed") and row.request != req:
                raise SqlError("IK001", "key reused with a different request")
            if st == "completed":
                return ("replayed", row.status, row.response, row.attempt), {}
            if st == "held":
                return ("in_progress", None, None, row.attempt), {}
            attempt = self._next_attempt(row, st)
            return ("started", None, None, attempt), {k: replace(new, attempt=attempt)}
        return self._run(s, op)

    def _attempt(self, s, k, attempt, now):
        """The attempt in progress that finish or fail acts on."""
        row = self.view(s, k)
        if (row is not None and row.state == "in_progress" and row.lease_until is not None
                and row.expires_at > now and attempt in (None, row.attempt)):
            return row
        if row is not None and attempt is not None and 0 < attempt < row.attempt \
                and row.expires_at > now:
            raise SqlError("IK003", "attempt superseded")  # attempts count from 1
        raise SqlError("IK002", "no attempt in progress")

    def finish(self, s, key, response=None, status=200, scope="", attempt=None):
        """idem_finish: ('completed', status, response, attempt)."""
        def op(sess):
            key_ = self._text(key, "key", False)
            if status is None:
                raise SqlError("22004", "status must not be NULL")
            k = (self._text(scope, "scope", True), key_)
            row = self._attempt(s, k, attempt, sess.now)
            done = replace(row, state="completed", status=status, response=response,
                           expires_at=sess.now + row.expires_at - row.lease_until,
                           lease_until=None)
            return ("completed", status, response, row.attempt), {k: done}
        return self._run(s, op)

    def fail(self, s, key, scope="", attempt=None):
        """idem_fail: releases the attempt; the ttl now counts from here."""
        def op(sess):
            k = self._key(key, scope)
            row = self._attempt(s, k, attempt, sess.now)
            return None, {k: replace(row, lease_until=None,
                                     expires_at=sess.now + row.expires_at - row.lease_until)}
        return self._run(s, op)

    def once(self, s, key, scope="", ttl=None):
        """idem_once: True the first time, False while the record lives."""
        def op(sess):
            k = self._key(key, scope)
            ttl_m = self._interval(ttl, sess.settings["default_ttl"], "ttl")
            new = Row("completed", 1, None, sess.now + ttl_m, None)
            row = self.view(s, k)
            if row is None:
                return True, {k: new}
            st = self._standing(s, k, row, sess.now)
            if st in ("completed", "held"):
                return False, {}
            return True, {k: replace(new, attempt=self._next_attempt(row, st))}
        return self._run(s, op)

    def expired_keys(self, s):
        """The rows a sweep from session s would delete: expired, visible to
        it, and not locked by another session's open transaction."""
        keys = set(self.committed) | set(self.sessions[s].writes)
        now = self.sessions[s].now
        return sorted(k for k in keys if (row := self.view(s, k)) is not None
                      and row.expires_at <= now and not self.held_by_other(s, k))

    def sweep(self, s, batch_size=None):
        """idem_sweep: how many expired rows one batch deleted.  Which rows
        a short batch takes is the server's choice: callers keep batch_size
        at least the number of expired keys."""
        def op(sess):
            if batch_size is not None and batch_size <= 0:
                raise SqlError("22023", "batch_size must be greater than zero")
            gone = self.expired_keys(s)
            assert batch_size is None or len(gone) <= batch_size, "batch too short to predict"
            return len(gone), {k: None for k in gone}
        return self._run(s, op)

    # -- transaction control and settings ---------------------------------

    def set(self, s, name, value):
        """SET idempotency.name = value (None: RESET); undone with the
        (sub)transaction.  Only the clock may be 0 or go back."""
        def op(sess):
            sess.settings[name] = self._interval(value, DEFAULT_SETTINGS[name], name,
                                                 name != "clock_offset")
            return None, {}
        return self._run(s, op)

    def begin_block(self, s):
        sess = self.sessions[s]
        assert sess.frames is None, "already in a transaction block"
        sess.frames = [("", {}, dict(sess.settings))]

    def savepoint(self, s, name):
        def op(sess):
            sess.frames.append((name, dict(sess.writes), dict(sess.settings)))
            return None, {}
        self._run(s, op)

    def _frame(self, s, name):
        """The index of the innermost savepoint called name."""
        return max(i for i, f in enumerate(self.sessions[s].frames) if i and f[0] == name)

    def rollback_to(self, s, name):
        sess, i = self.sessions[s], self._frame(s, name)
        del sess.frames[i + 1:]
        sess.restore(sess.frames[i])
        sess.aborted = False

    def release(self, s, name):
        def op(sess):
            del sess.frames[self._frame(s, name):]
            return None, {}
        self._run(s, op)

    def commit(self, s):
        """COMMIT; in an aborted block it rolls back, as the server does."""
        sess = self.sessions[s]
        if not sess.aborted:
            self._apply(sess.writes)
            sess.frames[0] = ("", {}, sess.settings)  # keep what the block SET
        self.rollback(s)

    def rollback(self, s):
        sess = self.sessions[s]
        sess.restore(sess.frames[0])
        sess.frames, sess.aborted = None, False
