"""Notices on both stores: an account's alerts newest first, paged, each with its reader's read
mark; marks are per reader, idempotent, and a refused call writes none."""

from __future__ import annotations

import pytest

from creditmeter.alerts import Alert, AlertType, alert_id
from creditmeter.engine import Engine
from creditmeter.errors import InputError, NotFound
from tests.conftest import EngineFactory, at

T0 = at("2026-03-01T12:00:00Z")
HOUR_US = 3_600 * 1_000_000


def _engine(make_engine: EngineFactory) -> Engine:
    engine = make_engine()
    for account in ("acme", "other"):
        engine.create_account(account, T0)
    return engine


def _raise(engine: Engine, *alerts: Alert) -> None:
    with engine.store.transaction(write=True) as tx:
        for alert in alerts:
            assert tx.insert_alert(alert, alert.at_us)


def _depleted(n: int, account: str = "acme") -> Alert:
    return Alert(account, AlertType.DEPLETED, f"depleted:{n}", T0 + n * HOUR_US)


def test_pages_newest_first_with_a_cursor(make_engine: EngineFactory) -> None:
    engine = _engine(make_engine)
    _raise(engine, *[_depleted(n) for n in range(5)], _depleted(9, "other"))
    now = T0 + 10 * HOUR_US
    first = engine.notifications("acme", "account:acme", now, limit=2)
    assert [n.id for n in first.notices] == [alert_id("acme", f"depleted:{k}") for k in (4, 3)]
    assert first.unread == 5 and first.next_before == first.notices[-1].seq
    second = engine.notifications("acme", "account:acme", now, limit=2, before=first.next_before)
    third = engine.notifications("acme", "account:acme", now, limit=2, before=second.next_before)
    assert [n.at_us for n in second.notices + third.notices] == [T0 + k * HOUR_US for k in (2, 1, 0)]
    assert third.next_before is None  # the last page
    exact = engine.notifications("acme", "account:acme", now, limit=5)
    assert len(exact.notices) == 5 and exact.next_before is None
    notice = exact.notices[0]
    assert notice.type is AlertType.DEPLETED and notice.read is False
    assert notice.text == "Your credits are used up"


def test_marks_are_per_reader(make_engine: EngineFactory) -> None:
    engine = _engine(make_engine)
    _raise(engine, *[_depleted(n) for n in range(3)])
    now = T0 + 5 * HOUR_US
    ids = [alert_id("acme", f"depleted:{k}") for k in range(3)]
    assert engine.mark_read("acme", "account:acme", now, ids=[ids[0], ids[0]]) == (1, 2)
    assert engine.mark_read("acme", "account:acme", now, ids=[ids[0]]) == (0, 2)  # again: no change
    mine = engine.notifications("acme", "account:acme", now)
    theirs = engine.notifications("acme", "key:key_ops", now)
    assert {n.id: n.read for n in mine.notices} == {ids[0]: True, ids[1]: False, ids[2]: False}
    assert not any(n.read for n in theirs.notices) and theirs.unread == 3
    unread = engine.notifications("acme", "account:acme", now, unread_only=True)
    assert [n.id for n in unread.notices] == [ids[2], ids[1]] and unread.unread == 2
    assert engine.mark_read("acme", "key:key_ops", now) == (3, 0)
    assert engine.notifications("acme", "account:acme", now).unread == 2


def test_mark_all_through_a_seq_leaves_later_ones_unread(make_engine: EngineFactory) -> None:
    engine = _engine(make_engine)
    _raise(engine, _depleted(0), _depleted(1))
    now = T0 + 5 * HOUR_US
    shown = engine.notifications("acme", "account:acme", now)
    _raise(engine, _depleted(2))  # raised after the page was shown
    assert engine.mark_read("acme", "account:acme", now, through=shown.notices[0].seq) == (2, 1)
    assert [n.read for n in engine.notifications("acme", "account:acme", now).notices] == [False, True, True]
    assert engine.mark_read("acme", "account:acme", now) == (1, 0)
    assert engine.mark_read("other", "account:acme", now) == (0, 0)  # another account's: none


def test_refused_calls_write_nothing(make_engine: EngineFactory) -> None:
    engine = _engine(make_engine)
    _raise(engine, _depleted(0), _depleted(5, "other"))
    now = T0 + HOUR_US
    mine, theirs = alert_id("acme", "depleted:0"), alert_id("other", "depleted:5")
    with pytest.raises(NotFound, match="ids: unknown notification"):
        engine.mark_read("acme", "account:acme", now, ids=[mine, theirs])  # the other account's
    with pytest.raises(NotFound, match="account_id"):
        engine.mark_read("nobody", "account:acme", now)
    for kwargs, field in (({"ids": []}, "ids"), ({"ids": "msg_x"}, "ids"), ({"ids": [""]}, "ids[0]"),
                          ({"through": 0}, "through"), ({"through": True}, "through"),
                          ({"through": 2**63}, "through")):
        with pytest.raises(InputError) as caught:
            engine.mark_read("acme", "account:acme", now, **kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field
    for kwargs, field in (({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"before": 0}, "before"),
                          ({"before": "5"}, "before"), ({"before": 2**63}, "before")):
        with pytest.raises(InputError) as caught:
            engine.notifications("acme", "account:acme", now, **kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field
    with pytest.raises(InputError, match="reader"):
        engine.notifications("acme", "", now)
    assert engine.notifications("acme", "account:acme", now).unread == 1
    with pytest.raises(NotFound, match="account_id"):
        engine.notifications("nobody", "account:acme", now)
