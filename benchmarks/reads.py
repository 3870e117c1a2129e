"""The ``reads`` benchmark: an account's reads as its history grows.

Accounts with 0 and then ``--sizes`` events spread over ``HISTORY_DAYS`` days (each charged by the
engine, as ingest would). Measured on each, the accounts taking turns round by round: the month's
usage summary by day (what the API's usage summary serves), the first page of usage and the 50th
(100 events a page, each continuing from the mark of the one before), the balance; then the peak
memory of a CSV export of every event and of a reconcile of the account, each in a process of its
own (so that what it holds is its own). On PostgreSQL, autovacuum is off on every table from the
start: the database is never analysed, and the plans of the page-50, balance and summary reads
are recorded to show it.
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

import sqlalchemy as sa

from creditmeter.engine import Engine
from creditmeter.ingest import write_csv
from creditmeter.store.driver import DriverTransaction
from creditmeter.store.schema import metadata
from creditmeter.store.sql import SqlStore, _driver_url
from creditmeter.timeutil import US_PER_S

DAY_US = 86_400 * US_PER_S
MONTH_US = 30 * DAY_US
FLAT = 1.2  # the largest history's read within 20% of the smallest's


def _peak_mb() -> float:
    """The process's own peak resident memory: the kernel's high-water mark of its address space
    (made anew by exec, unlike ``ru_maxrss``, which a spawned child inherits from its parent)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # not Linux


def _export_peak(url: str, account: str, out: Any) -> None:
    """In a child: the process's peak memory through an export of every event (the same
    whatever the number of events, if the export streams)."""
    engine = Engine(SqlStore(url))
    engine.usage_page(account, limit=10)  # connected, prices and plans loaded
    count = write_csv(engine.usage(account), _Discard())
    out.send({"rows": count, "peak_mb": _peak_mb()})
    engine.store.close()


def _reconcile_peak(url: str, account: str, out: Any) -> None:
    """In a child: the process's peak memory through a reconcile of the account (every event
    read, its day sums compared with the rollup's)."""
    engine = Engine(SqlStore(url))
    engine.usage_page(account, limit=10)
    started = time.perf_counter()
    problems = engine.check_invariants([account])
    seconds = time.perf_counter() - started
    out.send({"problems": len(problems), "seconds": round(seconds, 2), "peak_mb": _peak_mb()})
    engine.store.close()


def _in_child(target: Callable[[str, str, Any], None], url: str, account: str) -> dict[str, Any]:
    parent, child = mp.Pipe()
    process = mp.get_context("spawn").Process(target=target, args=(url, account, child))
    process.start()
    answer: dict[str, Any] = parent.recv()
    process.join()
    return answer


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def _medians_ms(reads: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """The median time of each read, the reads taking turns round by round (so that a load on
    the machine that comes and goes falls on all of them alike)."""
    samples: dict[str, list[float]] = {name: [] for name in reads}
    for read in reads.values():
        read()  # warm
    for _ in range(rounds):
        for name, read in reads.items():
            t = time.perf_counter()
            read()
            samples[name].append((time.perf_counter() - t) * 1000)
    return {name: round(statistics.median(times), 3) for name, times in samples.items()}


def _page(engine: Engine, account: str, number: int) -> Callable[[], object]:
    """A read of page ``number`` (the marks of the pages before it found once, beforehand)."""
    mark = None
    for _ in range(number - 1):
        _, mark = engine.usage_page(account, limit=100, after=mark)
    return lambda: engine.usage_page(account, limit=100, after=mark)


def _plans(engine: Engine, read: Callable[[], object]) -> list[str]:
    """How the database answers each statement ``read()`` sends (EXPLAIN on PostgreSQL, EXPLAIN
    QUERY PLAN on SQLite), each explained on the statement's own connection just before it runs
    (so with the settings it runs with): through SQLAlchemy and through the driver alike."""
    sqlite = engine.store.url.startswith("sqlite")  # type: ignore[attr-defined]
    plans: list[str] = []

    def explain(connection: Any, sql: str, params: Any) -> None:
        if not sql.lstrip().upper().startswith("SELECT"):
            return
        rows = connection.execute(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + sql, params).fetchall()
        text = " ".join(sql.split())
        if text.find(" FROM ") > 40:  # a long column list: shown as …
            text = "SELECT … " + text[text.find(" FROM ") + 1:]
        plans.append(text + " => " + " | ".join(str(r[-1] if sqlite else r[0]).strip() for r in rows))

    def listen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        explain(cursor.connection, sql, params)

    fetch, fetch_all = DriverTransaction._fetch, DriverTransaction._fetch_all

    def record_one(self: DriverTransaction, sql: str, params: Any) -> list[Any]:
        explain(self._driver, sql, params)
        return fetch(self, sql, params)

    def record_all(self: DriverTransaction, queries: Any) -> list[list[Any]]:
        for sql, params in queries:
            explain(self._driver, sql, params)
        return fetch_all(self, queries)

    sa_engine = engine.store.engine  # type: ignore[attr-defined]
    sa.event.listen(sa_engine, "before_cursor_execute", listen)
    DriverTransaction._fetch, DriverTransaction._fetch_all = record_one, record_all  # type: ignore[method-assign]
    try:
        read()
    finally:
        DriverTransaction._fetch, DriverTransaction._fetch_all = fetch, fetch_all  # type: ignore[method-assign]
        sa.event.remove(sa_engine, "before_cursor_execute", listen)
    return plans


def _never_analysed(url: str) -> None:
    """No autovacuum (nor its ANALYZE) on any table of the benchmark's PostgreSQL database."""
    sa_engine = sa.create_engine(_driver_url(url))
    with sa_engine.begin() as conn:
        for table in metadata.sorted_tables:
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" SET (autovacuum_enabled = false)')
    sa_engine.dispose()


def _analysed(engine: Engine) -> bool:
    with engine.store.engine.connect() as conn:  # type: ignore[attr-defined]
        return bool(conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL "
            "OR last_autoanalyze IS NOT NULL").scalar())


def _reads(engine: Engine, account: str, size: int, at_us: int) -> dict[str, Callable[[], object]]:
    """The timed reads of one account, by measure name."""
    start = at_us - MONTH_US
    reads: dict[str, Callable[[], object]] = {
        f"summary_by_day_ms_{size}_events":
            lambda: engine.usage_summary(account, "day", from_us=start, to_us=at_us),
        f"page_1_ms_{size}_events": _page(engine, account, 1)}
    if size >= 50 * 100:
        reads[f"page_50_ms_{size}_events"] = _page(engine, account, 50)
    reads[f"balance_ms_{size}_events"] = lambda: engine.balance(account, at_us)
    return reads


def _measure(url: str, account: str, size: int) -> dict[str, Any]:
    """An export's and a reconcile's peak memory, each in a process of its own."""
    out: dict[str, Any] = {}
    export = _in_child(_export_peak, url, account)
    out[f"export_rows_{size}_events"] = export["rows"]
    out[f"export_process_peak_mb_{size}_events"] = export["peak_mb"]
    check = _in_child(_reconcile_peak, url, account)
    out[f"reconcile_process_peak_mb_{size}_events"] = check["peak_mb"]
    out[f"reconcile_seconds_{size}_events"] = check["seconds"]
    out[f"reconcile_problems_{size}_events"] = check["problems"]
    return out


def run(args: argparse.Namespace, url: str, setup: Callable[[Engine, str, int], None],
        at_us: int) -> dict[str, Any]:
    """``setup(engine, account, size)`` records an account's history of ``size`` events (ending
    before ``at_us``) on a migrated, priced database at ``url``."""
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    postgres = not url.startswith("sqlite")
    if postgres:
        _never_analysed(url)
    sizes = [0, *args.sizes]
    started = time.perf_counter()
    for size in sizes:
        setup(engine, f"hist-{size}", size)
    setup_s = time.perf_counter() - started
    engine.store.close()
    engine = Engine(SqlStore(url))
    result: dict[str, Any] = {"benchmark": "reads", "db": "postgresql" if postgres else "sqlite",
                              "rounds": args.rounds, "setup_seconds": round(setup_s, 1)}
    reads: dict[str, Callable[[], object]] = {}
    for size in sizes:
        reads.update(_reads(engine, f"hist-{size}", size, at_us))
    result.update(_medians_ms(reads, args.rounds))
    for size in sizes:
        result.update(_measure(url, f"hist-{size}", size))
        if size:
            timed = ("summary_by_day", "balance", "page_1", "page_50")
            result[f"query_plans_{size}_events"] = {
                what: _plans(engine, reads[f"{what}_ms_{size}_events"])
                for what in timed if f"{what}_ms_{size}_events" in reads}
    if postgres:
        result["analysed"] = _analysed(engine)
    smallest, largest = sizes[1] if len(sizes) > 2 else sizes[0], sizes[-1]
    flat = {}
    for read in ("summary_by_day_ms", "page_1_ms", "page_50_ms", "balance_ms", "export_process_peak_mb",
                 "reconcile_process_peak_mb"):
        low, high = result.get(f"{read}_{smallest}_events"), result.get(f"{read}_{largest}_events")
        if low and high:
            result[f"{read}_{largest}_to_{smallest}"] = round(high / low, 3)
            flat[f"{read}: {largest} events within 20% of {smallest}"] = high / low <= FLAT
    result["targets"] = flat
    engine.store.close()
    return result
