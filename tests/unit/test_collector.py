"""The cycle collector is paused while an import reads and charges (it walks every object the
process keeps, at a cost larger than the batch's), collected by the import itself every
``COLLECT_EVERY`` lines, and left as it was found however the import ends. An import makes no
reference cycle, rejected lines and retried writes included, so nothing waits for a collection."""

from __future__ import annotations

import gc
import json
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from creditmeter import ingest
from creditmeter.collector import collect, collector_paused
from creditmeter.engine import Engine
from creditmeter.engine.usage import UsageCommands
from creditmeter.store.base import EventTaken
from creditmeter.store.reads import Reads
from creditmeter.stream import core as stream_core
from tests.conftest import at
from tests.unit.test_review_regressions import _FlakyStore

NOW = at("2026-03-02T10:00:00Z")
SQLITE = pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def _file(tmp_path: Path, events: int, *, bad: bool = True) -> Path:
    lines = [json.dumps({"id": f"e{i}", "account_id": "a", "model": "demo-small", "input_tokens": 10,
                         "timestamp": "2026-03-02T09:00:00Z"}) for i in range(events)]
    if bad:
        lines += ["{not json", json.dumps({"id": "x1", "account_id": "a", "input_tokens": -1}),
                  json.dumps({"id": "x2", "account_id": "nobody", "model": "demo-small"}),
                  json.dumps({"id": "x3", "account_id": "a", "model": "no-such-model"})]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _watch(engine: Engine, seen: list[bool]) -> None:
    record = engine.record_batch

    def watched(events: list[dict[str, Any]], at_us: int) -> Any:
        seen.append(gc.isenabled())
        return record(events, at_us)

    engine.record_batch = watched  # type: ignore[method-assign]


@SQLITE
def test_an_import_reads_and_charges_with_the_collector_paused_and_collects_itself(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector_on: None) -> None:
    engine.create_account("a", NOW - 3_600_000_000)
    charged: list[bool] = []
    _watch(engine, charged)
    read: list[bool] = []
    reader = ingest.read_batches

    def watched_reader(path: Path, size: int) -> Iterator[Any]:
        for window in reader(path, size):
            read.append(gc.isenabled())
            yield window

    monkeypatch.setattr(ingest, "read_batches", watched_reader)
    collected: list[bool] = []
    monkeypatch.setattr(ingest, "collect", lambda: collected.append(gc.isenabled()))
    monkeypatch.setattr(ingest, "COLLECT_EVERY", 4)
    monkeypatch.setattr(ingest, "WINDOW_BATCHES", 1)
    summary = ingest.import_jsonl(engine, _file(tmp_path, 10, bad=False), NOW, batch_size=2)
    assert (summary.charged, len(summary.rejected)) == (10, 0)
    assert len(read) == 5 and not any(read)  # every window read with the collector paused
    assert charged and not any(charged)  # every batch charged with it paused
    assert collected == [False, False]  # windows of 2 lines: at 4 and at 8
    assert gc.isenabled()


def test_an_import_leaves_no_cycle_behind_with_rejected_lines_and_retried_writes(
        engine: Engine, tmp_path: Path, collector_on: None) -> None:
    engine.create_account("a", NOW - 3_600_000_000)
    flaky = Engine(_FlakyStore(engine.store, failures=2), engine.settings)  # type: ignore[arg-type]
    path = _file(tmp_path, 30)
    gc.collect()
    gc.disable()  # off when the import's pause ends too: no collection may run before the count
    summary = ingest.import_jsonl(flaky, path, NOW, batch_size=8)
    assert (summary.charged, len(summary.rejected)) == (30, 4)
    assert flaky.store.failures == 0  # type: ignore[attr-defined]  # both retries happened
    assert _left_for_the_collector() == []  # nothing the import made waits for the collector


def _left_for_the_collector() -> list[str]:
    """What only a collection would free of the import's making: frames, tracebacks, errors and
    the objects of this package and of its database layers (another thread of the test process
    may leave garbage of its own meanwhile)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    ours = ("creditmeter", "sqlalchemy", "psycopg", "sqlite3")
    return [type(o).__name__ for o in garbage
            if isinstance(o, (types.FrameType, types.TracebackType, BaseException))
            or type(o).__module__.split(".")[0] in ours]


@SQLITE
@pytest.mark.parametrize("visible", ["in the same transaction", "only to the next"])
def test_an_event_taken_meanwhile_leaves_no_frame_behind(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, collector_on: None, visible: str) -> None:
    """Another account's writer stores one of the batch's ids after the batch looked for them:
    charged again in the same transaction when the id is seen stored then, else retried whole.
    Neither leaves anything for the collector to free (the batch's frames, events, errors, or the
    lookup of the stored id)."""
    for account in ("a", "b"):
        engine.create_account(account, NOW - 3_600_000_000)
    engine.record({"id": "t0", "account_id": "b", "model": "demo-small", "input_tokens": 10}, NOW)
    charge_new, find_events = UsageCommands._charge_new, Reads.find_events
    taken: list[bool] = []
    looks: list[bool] = []

    def once_taken(self: Any, *args: Any) -> None:
        if not taken:
            taken.append(True)
            raise EventTaken("simulated")
        charge_new(self, *args)

    def seen_late(self: Any, event_ids: Any) -> Any:  # t0 is hidden from the first look(s)
        looks.append(True)
        found = find_events(self, event_ids)
        hidden = 1 if visible == "in the same transaction" else 2
        return found if len(looks) > hidden else {k: v for k, v in found.items() if k != "t0"}

    monkeypatch.setattr(UsageCommands, "_charge_new", once_taken)
    monkeypatch.setattr(Reads, "find_events", seen_late)
    events = [{"id": f"t{i}", "account_id": "a", "model": "demo-small", "input_tokens": 10} for i in range(5)]
    gc.collect()
    gc.disable()
    results = engine.record_batch(events, NOW)
    assert taken and results[0].status == "rejected" and [r.status for r in results[1:]] == ["charged"] * 4
    assert _left_for_the_collector() == []


def test_a_file_run_again_leaves_no_cycle_behind(engine: Engine, tmp_path: Path, collector_on: None) -> None:
    engine.create_account("a", NOW - 3_600_000_000)
    path = _file(tmp_path, 30)
    ingest.import_jsonl(engine, path, NOW, batch_size=8)
    gc.collect()
    gc.disable()
    again = ingest.import_jsonl(engine, path, NOW, batch_size=8)  # every event is found stored
    assert (again.charged, again.duplicate, len(again.rejected)) == (0, 30, 4)
    assert _left_for_the_collector() == []


@SQLITE
def test_an_import_that_fails_leaves_the_collector_as_it_was(
        engine: Engine, tmp_path: Path, collector_on: None) -> None:
    engine.create_account("a", NOW - 3_600_000_000)

    def failing(events: list[dict[str, Any]], at_us: int) -> Any:
        raise RuntimeError("the store went away")

    def progress(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest.import_jsonl(engine, _file(tmp_path, 3), NOW, progress=progress)
    assert gc.isenabled()
    engine.record_batch = failing  # type: ignore[method-assign]
    gc.disable()  # a caller that had it off keeps it off
    with pytest.raises(RuntimeError):
        ingest.import_jsonl(engine, _file(tmp_path, 3), NOW)
    assert not gc.isenabled()


def test_overlapping_pauses_end_with_the_last(collector_on: None) -> None:
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # a batch on another thread is still charging
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("inside")
    assert gc.isenabled()


def test_collect_frees_cycles_while_paused(collector_on: None) -> None:
    class Node:
        other: Any = None

    with collector_paused():
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None
        collect()
        assert gone() is None


@SQLITE
def test_a_stream_batch_is_charged_with_the_collector_paused(engine: Engine, collector_on: None) -> None:
    engine.create_account("a", NOW - 3_600_000_000)
    seen: list[bool] = []
    _watch(engine, seen)
    results = stream_core._record(engine, [{"id": "s1", "account_id": "a", "model": "demo-small",
                                            "input_tokens": 10}], NOW)
    assert [r.status for r in results] == ["charged"] and seen == [False] and gc.isenabled()
