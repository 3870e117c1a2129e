"""Two first catalogs loaded at once: only one of them counts from the start of time.

The first load is held between its look at the catalog table and its write; the second starts
meanwhile. On PostgreSQL the second must wait for the first and then see it (effective from its
own now); on SQLite writers take turns anyway.
"""

from __future__ import annotations

import threading
import time

import pytest

from creditmeter.engine import Engine
from creditmeter.pricing import Catalog
from creditmeter.store.reads import Reads
from creditmeter.store.sql import SqlStore
from creditmeter.timeutil import MIN_US
from tests.conftest import EngineFactory, at


def test_two_first_catalogs_at_once_make_one_first(make_engine: EngineFactory, example_catalog: Catalog,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_engine()
    second = Engine(SqlStore(first.store.url))
    looked, release = threading.Event(), threading.Event()
    original = Reads.latest_price_version

    def held(self: Reads) -> int:
        found = original(self)
        if threading.current_thread().name == "held":
            looked.set()
            release.wait(10)
        return found

    monkeypatch.setattr(Reads, "latest_price_version", held)
    effective: dict[str, int] = {}

    def load(engine: Engine, name: str, at_us: int) -> None:
        effective[name] = engine.load_prices(example_catalog, None, at_us).effective_at_us

    held_load = threading.Thread(target=load, args=(first, "held", at("2026-03-01")), name="held")
    held_load.start()
    assert looked.wait(10)
    other = threading.Thread(target=load, args=(second, "other", at("2026-03-02")), name="other")
    other.start()
    time.sleep(0.5)  # the other load reaches the table (and waits there, where it must)
    release.set()
    held_load.join(10)
    other.join(10)
    second.store.close()
    assert sorted(effective.values()) == [MIN_US, at("2026-03-02")], effective
