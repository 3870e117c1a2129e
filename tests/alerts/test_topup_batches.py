"""An auto top-up that grants at once (``grant_now``) is decided charge by charge: a batch, and
an import (which puts an account's lines into one batch), tops up as the events recorded one by
one do, each crossing its own pack, usable by the next event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from creditmeter.engine import Engine
from creditmeter.ingest import import_jsonl
from creditmeter.plans import parse_plans
from creditmeter.timeutil import format_instant
from tests.conftest import EngineFactory, at

HOUR = 3_600 * 1_000_000
T0 = at("2026-03-02T00:00:00Z")
NOW = T0 + 10 * HOUR
PLANS = [
    {"id": "pro", "kind": "subscription", "name": "Pro", "credits": 100, "period": "month"},
    {"id": "pack", "kind": "addon", "name": "Add-on 50", "credits": 50, "valid_days": 30},
]


def _setup(engine: Engine, catalog: Any) -> Engine:
    engine.load_prices(catalog, at("2026-01-01"), at("2026-01-01"))
    engine.load_plans(parse_plans({"plans": PLANS}), T0 - 24 * HOUR)
    for account in ("a", "b"):
        engine.create_account(account, T0 - 24 * HOUR)
        engine.subscribe(account, "pro", T0, subscription_id=f"{account}-sub")
    engine.set_auto_topup("a", {"below": 20, "pack": "pack", "max_per_month": 5, "grant_now": True}, T0)
    return engine


def _event(event_id: str, account: str, credits: int, hour: int) -> dict[str, Any]:
    return {"id": event_id, "account_id": account, "timestamp": format_instant(T0 + hour * HOUR),
            "quantities": {"web_search": credits // 2}}


EVENTS = [_event("a1", "a", 90, 1), _event("b1", "b", 2, 1), _event("a2", "a", 50, 2),
          _event("b2", "b", 2, 2)]


def _state(engine: Engine) -> Any:
    balance = engine.balance("a", NOW)
    usage = sorted((s.event.id, s.charge.cost_uc, s.charge.overage_uc) for s in engine.usage("a"))
    return balance.available_uc, balance.overage_uc, usage


def test_an_import_tops_up_as_the_events_one_by_one(
        make_engine: EngineFactory, example_catalog: Any, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    one_by_one = _setup(make_engine(), example_catalog)
    for event in EVENTS:
        one_by_one.record_batch([event], NOW)
    file_batches = _setup(make_engine(), example_catalog)  # what the import did before: file order
    for start in range(0, len(EVENTS), 2):
        file_batches.record_batch(EVENTS[start:start + 2], NOW)
    imported = _setup(make_engine(), example_catalog)
    import_jsonl(imported, path, NOW, batch_size=2)
    expected = _state(one_by_one)
    assert _state(file_batches) == expected  # the file's order, in batches of 2: as one by one
    assert _state(imported) == expected, f"imported {_state(imported)} != one by one {expected}"


def test_an_event_ahead_of_the_import_is_paid_by_the_pack_as_one_by_one(
        make_engine: EngineFactory, example_catalog: Any, tmp_path: Path) -> None:
    """An event up to 5 minutes ahead of the import's instant may be paid by the pack an auto
    top-up grants at that instant: one by one it is; imported, it is overage."""
    events = [_event("a1", "a", 90, 9), _event("b1", "b", 2, 9),
              {**_event("a2", "a", 50, 0), "timestamp": format_instant(NOW + 60_000_000)},
              _event("b2", "b", 2, 9)]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    one_by_one = _setup(make_engine(), example_catalog)
    expected = [one_by_one.record_batch([event], NOW)[0] for event in events]
    imported = _setup(make_engine(), example_catalog)
    summary = import_jsonl(imported, path, NOW, batch_size=2)
    assert summary.charged == 4
    got = {s.event.id: s.charge.overage_uc for s in imported.usage("a")}
    want = {r.event_id: r.overage_uc for r in expected if r.event_id.startswith("a")}  # type: ignore[union-attr]
    assert got == want


def test_one_batch_that_crosses_twice_tops_up_twice(make_engine: EngineFactory, example_catalog: Any) -> None:
    batch = _setup(make_engine(), example_catalog)
    batch.record_batch([e for e in EVENTS if e["account_id"] == "a"], NOW)
    one_by_one = _setup(make_engine(), example_catalog)
    for event in EVENTS:
        if event["account_id"] == "a":
            one_by_one.record_batch([event], NOW)
    packs = [p for p in batch.balance("a", NOW).packages if p.grant.name == "Add-on 50"]
    assert len(packs) == 2
    assert _state(batch) == _state(one_by_one)
    assert batch.check_invariants() == []
