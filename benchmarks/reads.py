"""The ``reads`` benchmark: an account's usage read back as its history grows.

Accounts with 0 and then ``--sizes`` events spread over ``HISTORY_DAYS`` days (each charged by the
engine, as ingest would). Measured on each: the month's usage summary by day (what the API's
usage summary serves), the first page of usage and the 50th (100 events a page, each continuing
from the mark of the one before) and the peak memory of a CSV export of every event, in a process
of its own (so that what it holds is its own).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

from creditmeter.engine import Engine
from creditmeter.ingest import write_csv
from creditmeter.store.sql import SqlStore
from creditmeter.timeutil import US_PER_S

DAY_US = 86_400 * US_PER_S
MONTH_US = 30 * DAY_US


def _export_peak(url: str, account: str, out: Any) -> None:
    """In a child: the process's peak memory through an export of every event (the same
    whatever the number of events, if the export streams)."""
    engine = Engine(SqlStore(url))
    engine.usage_page(account, limit=10)  # connected, prices and plans loaded
    count = write_csv(engine.usage(account), _Discard())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.send({"rows": count, "peak_mb": round(peak / 1024, 1)})
    engine.store.close()


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def _median_ms(read: Callable[[], object], rounds: int) -> float:
    read()  # warm
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        read()
        samples.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(samples), 3)


def _page(engine: Engine, account: str, number: int) -> Callable[[], object]:
    """A read of page ``number`` (the marks of the pages before it found once, beforehand)."""
    mark = None
    for _ in range(number - 1):
        _, mark = engine.usage_page(account, limit=100, after=mark)
    return lambda: engine.usage_page(account, limit=100, after=mark)


def run(args: argparse.Namespace, url: str, setup: Callable[[Engine, str, int], None],
        at_us: int) -> dict[str, Any]:
    """``setup(engine, account, size)`` records an account's history of ``size`` events (ending
    before ``at_us``) on a migrated, priced database at ``url``."""
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    sizes = [0, *args.sizes]
    for size in sizes:
        setup(engine, f"hist-{size}", size)
    engine.store.close()
    engine = Engine(SqlStore(url))
    result: dict[str, Any] = {"benchmark": "reads",
                              "db": "sqlite" if url.startswith("sqlite") else "postgresql",
                              "rounds": args.rounds}
    start = at_us - MONTH_US
    for size in sizes:
        account = f"hist-{size}"
        result[f"summary_by_day_ms_{size}_events"] = _median_ms(
            lambda a=account: engine.usage_summary(a, "day", from_us=start, to_us=at_us), args.rounds)
        result[f"page_1_ms_{size}_events"] = _median_ms(_page(engine, account, 1), args.rounds)
        if size >= 50 * 100:
            result[f"page_50_ms_{size}_events"] = _median_ms(_page(engine, account, 50), args.rounds)
        parent, child = mp.Pipe()
        process = mp.get_context("spawn").Process(target=_export_peak, args=(url, account, child))
        process.start()
        export = parent.recv()
        process.join()
        result[f"export_rows_{size}_events"] = export["rows"]
        result[f"export_process_peak_mb_{size}_events"] = export["peak_mb"]
    engine.store.close()
    return result
