"""The model on its own, no server: the README's examples, replayed.

If one of these fails, the model (not the server) has drifted from the
documented contract.
"""

import pytest

from model import Model, SqlError

REQ = '{"amount": 4200, "currency": "eur"}'


def error(call, *args, **kwargs):
    with pytest.raises(SqlError) as e:
        call(*args, **kwargs)
    return e.value.sqlstate


def test_quick_start():
    m = Model()
    assert m.begin(0, "order-7f3a", REQ) == ("started", None, None, 1)
    assert m.finish(0, "order-7f3a", '{"payment_id": 91}', 201) == \
        ("completed", 201, '{"payment_id": 91}', 1)
    assert m.begin(0, "order-7f3a", '{"currency": "eur", "amount": 4200.0}') == \
        ("replayed", 201, '{"payment_id": 91}', 1)
    assert error(m.begin, 0, "order-7f3a", '{"amount": 9900, "currency": "eur"}') == "IK001"


def test_lease_takeover_and_late_finish():
    m = Model()
    assert m.begin(0, "k", REQ, lease=5) == ("started", None, None, 1)
    assert m.begin(1, "k", REQ) == ("in_progress", None, None, 1)
    for s in (0, 1):
        m.set(s, "clock_offset", 5)
    assert error(m.begin, 1, "k", "{}") == "IK001"     # a lapsed lease keeps its request
    assert m.begin(1, "k", REQ) == ("started", None, None, 2)
    assert error(m.finish, 0, "k", attempt=1) == "IK003"
    assert error(m.finish, 0, "k", attempt=0) == "IK002"
    assert m.finish(1, "k", attempt=2)[0] == "completed"


def test_owner_finishes_after_its_lease_while_nobody_took_over():
    m = Model()
    m.begin(0, "k", lease=5, ttl=60)
    m.set(0, "clock_offset", 30)
    assert m.finish(0, "k", attempt=1) == ("completed", 200, None, 1)
    m.set(0, "clock_offset", 30 + 60)                   # the ttl counts from the finish
    assert m.begin(0, "k") == ("started", None, None, 1)


def test_release_forgets_the_request():
    m = Model()
    m.begin(0, "job", '{"run": 1}')
    m.fail(0, "job")
    assert error(m.fail, 0, "job") == "IK002"
    assert m.begin(0, "job", '{"run": 2}') == ("started", None, None, 2)


def test_once_rolls_back_with_its_transaction_and_savepoint():
    m = Model()
    m.begin_block(0)
    m.savepoint(0, "sp1")
    assert m.once(0, "msg") is True
    m.rollback_to(0, "sp1")
    assert m.once(0, "msg") is True
    assert m.once(0, "msg") is False
    m.rollback(0)
    assert m.once(0, "msg") is True


def test_an_error_aborts_the_block_and_changes_nothing():
    m = Model()
    m.begin_block(0)
    m.begin(0, "a")
    assert error(m.begin, 0, "b", ttl=0) == "22023"
    assert error(m.begin, 0, "c") == "25P02"
    m.commit(0)                                         # COMMIT of an aborted block rolls back
    assert m.committed == {}
    assert error(m.begin, 0, None) == "22004"
    assert error(m.begin, 0, "é" * 128) == "22023"


def test_sessions_see_committed_rows_and_never_wait():
    m = Model()
    m.begin_block(0)
    m.begin(0, "a")
    assert m.begin(1, "a", wait=False) == ("in_progress", None, None, None)
    m.set(1, "clock_offset", 3 * 24 * 60)
    assert m.sweep(1) == 0                              # s1's row is locked and uncommitted
    m.commit(0)
    assert m.sweep(1) == 1
    assert m.begin(1, "a") == ("started", None, None, 1)
