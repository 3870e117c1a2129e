"""The cycle collector is paused while an import charges and reads (it walks every object the
process keeps, at a cost larger than the batch's), collected by the import itself every
``COLLECT_EVERY`` lines, and left as it was found however the import ends."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from creditmeter import ingest
from creditmeter.collector import collector_paused
from creditmeter.engine import Engine
from creditmeter.stream import core as stream_core
from tests.conftest import at

NOW = at("2026-03-02T10:00:00Z")
SQLITE = pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def _file(tmp_path: Path, events: int) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"id": f"e{i}", "account_id": "a", "model": "demo-small",
                                        "input_tokens": 10, "timestamp": "2026-03-02T09:00:00Z"}) + "\n"
                            for i in range(events)) + "{not json\n")
    return path


def _watch(engine: Engine, seen: list[bool]) -> None:
    record = engine.record_batch

    def watched(events: list[dict[str, Any]], at_us: int) -> Any:
        seen.append(gc.isenabled())
        return record(events, at_us)

    engine.record_batch = watched  # type: ignore[method-assign]


@SQLITE
def test_an_import_charges_with_the_collector_paused_and_collects_itself(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector_on: None) -> None:
    engine.create_account("a", NOW - 3_600_000_000)
    seen: list[bool] = []
    _watch(engine, seen)
    collected: list[bool] = []
    monkeypatch.setattr(ingest, "collect", lambda: collected.append(gc.isenabled()))
    monkeypatch.setattr(ingest, "COLLECT_EVERY", 4)
    monkeypatch.setattr(ingest, "WINDOW_BATCHES", 1)
    summary = ingest.import_jsonl(engine, _file(tmp_path, 10), NOW, batch_size=2)
    assert (summary.charged, len(summary.rejected)) == (10, 1)
    assert seen and not any(seen)  # every batch charged with the collector paused
    assert collected == [False, False]  # windows of 2 lines: at 4 and at 8 (11 lines read in all)
    assert gc.isenabled()


@SQLITE
def test_an_import_that_fails_leaves_the_collector_running(
        engine: Engine, tmp_path: Path, collector_on: None) -> None:
    engine.create_account("a", NOW - 3_600_000_000)

    def failing(events: list[dict[str, Any]], at_us: int) -> Any:
        raise RuntimeError("the store went away")

    engine.record_batch = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        ingest.import_jsonl(engine, _file(tmp_path, 3), NOW)
    assert gc.isenabled()


def test_a_paused_collector_stays_as_the_caller_left_it(collector_on: None) -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("inside")
    assert gc.isenabled()


@SQLITE
def test_a_stream_batch_is_charged_with_the_collector_paused(engine: Engine, collector_on: None) -> None:
    engine.create_account("a", NOW - 3_600_000_000)
    seen: list[bool] = []
    _watch(engine, seen)
    results = stream_core._record(engine, [{"id": "s1", "account_id": "a", "model": "demo-small",
                                            "input_tokens": 10}], NOW)
    assert [r.status for r in results] == ["charged"] and seen == [False] and gc.isenabled()
