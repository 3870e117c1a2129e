"""Reads of many ids on PostgreSQL take one array of them: ids of any printable characters (quotes,
commas, braces, backslashes, spaces, the word NULL, non-ASCII, 255 characters) are found as
themselves, so an event sent again is never charged twice; a read over an array is planned for
its ids each time, and so is a write over arrays (a generic plan made while a table was small
and never analysed would read it whole once it is not)."""

from __future__ import annotations

import pytest

from creditmeter.domain import Rejected
from creditmeter.engine import Engine
from creditmeter.store import driver
from creditmeter.timeutil import format_instant
from tests.conftest import at

T0 = at("2026-03-02T00:00:00Z")
ODD = ['a"b', "a'b", "x,y", "{z}", "{}", "back\\slash", "NULL", "null", " ", "é漢字🙂", "x" * 255,
       "(1,2)", 'a\\"b', "end,", ",", '"', "ANY"]


def test_statements_over_arrays_are_not_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "PREPARE", True)
    assert driver.prepare((["a", "b"],)) is False
    assert driver.prepare((["a", "b"], 5)) is False
    assert driver.prepare(([1, 2], [3, 4])) is False
    assert driver.prepare(("a", 5)) is True
    monkeypatch.setattr(driver, "PREPARE", False)
    assert driver.prepare(("a", 5)) is False


def test_odd_event_ids_are_found_as_themselves(engine: Engine) -> None:
    engine.create_account("a", T0)
    events = [{"id": eid, "account_id": "a", "timestamp": format_instant(T0 + 1 + i),
               "quantities": {"web_search": 1}} for i, eid in enumerate(ODD)]
    first = engine.record_batch(events, T0 + 100)
    assert not [r for r in first if isinstance(r, Rejected)]
    owed = engine.balance("a", T0 + 100).overage_uc
    assert owed == len(ODD) * 2_000_000
    again = engine.record_batch(events[::-1] + [dict(events[0], id="fresh")], T0 + 200)
    assert [getattr(r, "status", None) for r in again] == ["duplicate"] * len(ODD) + ["charged"]
    for event in events:  # one at a time too (the look-ahead read of a single id)
        assert engine.record(event, T0 + 300).status == "duplicate"
    assert engine.balance("a", T0 + 300).overage_uc == owed + 2_000_000
