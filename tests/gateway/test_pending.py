"""Settles the database could not take are kept on disk and charged once, by whichever worker
gets to them (SPEC §5: usage that happened is always recorded, exactly once)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from creditmeter.domain import Hold
from creditmeter.engine import Engine, Usage
from creditmeter.gateway.pending import PendingSettles
from creditmeter.pricing import Catalog, rate
from creditmeter.store.sql import SqlStore
from tests.conftest import at

T = at("2026-11-10T12:00:00Z")
USAGE = Usage("gpt-4o-mini", 1_000, 200, 0, 0, (), {"gateway_request": "gw-1"})


def _held(engine: Engine, request_id: str) -> Hold:
    engine.create_account("alice", T - 10)
    engine.add_grant("alice", 50_000_000, "package", T - 10)
    hold = engine.reserve("alice", 10_000_000, T, hold_id=request_id)
    assert isinstance(hold, Hold)
    return hold


def test_a_kept_settle_is_charged_once_by_another_worker_after_a_restart(engine: Engine,
                                                                        tmp_path: Path) -> None:
    _held(engine, "gw-1")
    directory = tmp_path / "pending"
    first = PendingSettles(directory, engine, lambda: T + 5, pause_s=3600)  # its retries never come
    first.add("gw-1", USAGE)
    assert [p.name for p in directory.iterdir()] == ["gw-1.json"]
    # Another worker (or this one, started again) finds it and charges it.
    second = PendingSettles(directory, engine, lambda: T + 10)
    assert second.drain() == 0
    assert list(directory.iterdir()) == []
    [event] = list(engine.usage("alice"))
    assert event.event.id == "gw-1" and event.charge.hold_id == "gw-1"
    assert (event.event.input_tokens, event.event.output_tokens) == (1_000, 200)
    # gpt-4o-mini in the example catalog: 15 credits per 1M input tokens, 60 per 1M output tokens
    assert event.charge.cost_uc == 1_000 * 15 + 200 * 60
    balance = engine.balance("alice", T + 10)
    assert balance.held_uc == 0 and balance.available_uc == 50_000_000 - event.charge.cost_uc
    # Both workers had it: the second settle of the same request is a duplicate, not a charge.
    first.add("gw-1", USAGE)
    assert first.drain() == 0
    assert len(list(engine.usage("alice"))) == 1
    assert engine.check_invariants() == []


def test_while_the_database_is_down_the_settle_waits_on_disk(tmp_path: Path) -> None:
    down = Engine(SqlStore("postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1"))
    directory = tmp_path / "pending"
    pending = PendingSettles(directory, down, lambda: T, pause_s=0.05)
    pending.add("gw-2", USAGE)
    time.sleep(0.5)  # several background passes, each refused
    assert pending.drain() == 1
    assert [p.name for p in directory.iterdir()] == ["gw-2.json"]
    pending.stop()


def test_a_refused_settle_is_not_retried_for_ever(engine: Engine, tmp_path: Path) -> None:
    _held(engine, "gw-3")
    engine.release("gw-3", T + 1)  # a released hold cannot be settled: a conflict, not an outage
    pending = PendingSettles(tmp_path / "pending", engine, lambda: T + 5, pause_s=3600)
    pending.add("gw-3", USAGE)
    assert pending.drain() == 0
    assert list((tmp_path / "pending").iterdir()) == []
    assert list(engine.usage("alice")) == []


NEW_FIELDS = ("reasoning_tokens", "cache_write_1h_tokens", "service_tier")


def test_kept_settles_keep_every_kind_of_token_and_the_tier_and_older_files_still_load(
        engine: Engine, example_catalog: Catalog, tmp_path: Path) -> None:
    """A file kept now records reasoning tokens, 1-hour cache writes and the tier; one kept before
    they were recorded (no such keys) settles as it always did: none of them, the standard tier."""
    _held(engine, "gw-new")
    assert isinstance(engine.reserve("alice", 10_000_000, T, hold_id="gw-old"), Hold)
    directory = tmp_path / "pending"
    usage = Usage("gpt-4o-mini", 1_000, 200, 0, 30, (), {"gateway_request": "gw-new"},
                  reasoning_tokens=700, cache_write_1h_tokens=40, service_tier="flex")
    PendingSettles(directory, engine, lambda: T + 5, pause_s=3600).add("gw-new", usage)
    kept = orjson.loads((directory / "gw-new.json").read_bytes())
    assert [kept[k] for k in NEW_FIELDS] == [700, 40, "flex"]
    (directory / "gw-old.json").write_bytes(orjson.dumps({  # as the previous version wrote it
        "request_id": "gw-old", "model": "gpt-4o-mini", "input_tokens": 1_000, "output_tokens": 200,
        "cached_input_tokens": 0, "cache_write_tokens": 0, "quantities": [],
        "metadata": {"gateway_request": "gw-old"}}))
    assert PendingSettles(directory, engine, lambda: T + 10).drain() == 0
    assert list(directory.iterdir()) == []
    events = {e.event.id: e for e in engine.usage("alice")}
    new, old = events["gw-new"], events["gw-old"]
    assert [getattr(new.event, k) for k in NEW_FIELDS] == [700, 40, "flex"]
    assert new.charge.cost_uc == rate(example_catalog, "gpt-4o-mini", 1_000, 200, 0, 30,
                                      reasoning_tokens=700, cache_write_1h_tokens=40,
                                      service_tier="flex", at_us=T + 10)
    assert [getattr(old.event, k) for k in NEW_FIELDS] == [0, 0, None]
    assert old.charge.cost_uc == 1_000 * 15 + 200 * 60
    assert engine.check_invariants() == []
