"""The ``scale`` benchmark: ``python benchmarks/run.py scale [--db URL] [--parts ingest reads streams]``.

Three parts, each with a table of its own, together in ``benchmarks/results/scale.json``
(``scale-postgresql.json`` with ``--db``; a run of some parts keeps the others' last figures):

- **ingest**: ``--events`` events (1,000,000) over ``--accounts`` accounts (10,000) charged through
  ``creditmeter.ingest.import_jsonl`` (run.py's ingest phases, each in a process of its own), the
  same file inserted as bare rows for the baseline, and the bytes each event takes on disk;
- **reads**: what ``run.py reads --sizes 10000 1000000`` measures (its own code, called);
- **streams**: N concurrent ~2-second streamed chat completions through the gateway, all on one
  account and spread over N accounts (and through LiteLLM's proxy with ``--litellm PATH``): first
  chunk latency, gateway CPU per stream, errors, and whether each stream was charged once.

The machine's load average is sampled every 5 s through each part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import run as bench
import scale_streams
from creditmeter.engine import Engine
from creditmeter.store.sql import SqlStore, _driver_url

FLAT = 1.2  # "within 20%"


class LoadAverage:
    """The 1-minute load average, sampled every ``every`` seconds while in a ``with``."""

    def __init__(self, every: float = 5.0) -> None:
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadAverage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {"min": round(min(self.samples), 2), "mean": round(sum(self.samples) / len(self.samples), 2),
                "max": round(max(self.samples), 2)}


# -- ingest ----------------------------------------------------------------------------------------

def disk_bytes(url: str) -> int:
    """The database's size on disk: a SQLite file and its WAL after a checkpoint, or on
    PostgreSQL ``pg_database_size``."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        lite = sqlite3.connect(path)
        lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        lite.close()
        return sum(os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix))
    import sqlalchemy as sa

    engine = sa.create_engine(_driver_url(url), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        size = int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar() or 0)
    engine.dispose()
    return size


def ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Charge the file through the engine and insert it as bare rows, each once, in processes of
    their own; the bytes on disk each added, per event."""
    bench.WORK.mkdir(parents=True, exist_ok=True)
    events_path = bench.WORK / f"scale-{args.events}-{args.accounts}.jsonl"
    if not events_path.exists():
        started = time.perf_counter()
        bench.write_events(events_path, args.events, args.accounts)
        print(f"wrote {events_path} in {time.perf_counter() - started:.0f} s")
    engine_url = bench.fresh_database(args.db, "scale-engine")
    baseline_url = bench.fresh_database(args.db, "scale-baseline")
    started = time.perf_counter()
    bench.setup_engine(engine_url, args.accounts).store.close()
    setup_s = time.perf_counter() - started
    empty_engine = disk_bytes(engine_url)
    empty_baseline = disk_bytes(baseline_url)
    engine_run = bench._in_process(bench._engine_phase, engine_url, str(events_path), args.batch)
    engine_bytes = disk_bytes(engine_url)
    baseline_run = bench._in_process(bench._baseline_phase, baseline_url, str(events_path), args.batch)
    baseline_bytes = disk_bytes(baseline_url)
    started = time.perf_counter()
    violations = Engine(SqlStore(engine_url)).check_invariants()
    reconcile_s = time.perf_counter() - started
    events_per_s = args.events / engine_run["seconds"]
    ratio = engine_run["seconds"] / baseline_run["seconds"]
    per_event = (engine_bytes - empty_engine) / args.events
    result = {
        "events": args.events, "accounts": args.accounts, "batch_size": args.batch,
        "setup_seconds": round(setup_s, 1),
        "engine_seconds": round(engine_run["seconds"], 2),
        "engine_cpu_seconds": round(engine_run["cpu_seconds"], 2),
        "events_per_s": round(events_per_s),
        "baseline_seconds": round(baseline_run["seconds"], 2),
        "baseline_rows_per_s": round(args.events / baseline_run["seconds"]),
        "ratio": round(ratio, 3),
        "charged": engine_run["charged"], "rejected": engine_run["rejected"],
        "engine_peak_rss_mb": round(engine_run["peak_rss_mb"], 1),
        "db_bytes_before_import": empty_engine, "db_bytes_after_import": engine_bytes,
        "bytes_per_event": round(per_event, 1),
        "bytes_per_event_whole_db": round(engine_bytes / args.events, 1),
        "baseline_bytes_per_row": round((baseline_bytes - empty_baseline) / args.events, 1),
        "reconcile_seconds": round(reconcile_s, 1), "reconcile_ok": not violations,
    }
    if engine_url.startswith("sqlite"):
        targets = {"events_per_s >= 50000": events_per_s >= 50_000, "ratio <= 2": ratio <= 2}
    else:
        targets = {"events_per_s >= 20000": events_per_s >= 20_000}
    result["targets"] = {**targets, "reconcile ok": not violations}
    return result


# -- reads -----------------------------------------------------------------------------------------

def reads(args: argparse.Namespace) -> dict[str, Any]:
    """``run.py reads --sizes …`` itself, timed as a whole."""
    started = time.perf_counter()
    result = bench.reads(argparse.Namespace(db=args.db, sizes=args.sizes, rounds=args.rounds))
    result["part_seconds"] = round(time.perf_counter() - started, 1)
    for key in ("benchmark", "db", "load_average", "machine"):
        result.pop(key, None)
    return result


# -- the command -----------------------------------------------------------------------------------

def show(title: str, part: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in part.items():
        if key == "load_average":
            table.add_row("load average (1 min: min / mean / max)", " / ".join(map(str, value.values())))
        if key == "targets" or isinstance(value, dict | list):
            continue
        shown = f"{value:,}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)
        table.add_row(key, shown)
    for target, met in part.get("targets", {}).items():
        table.add_row(f"target {target}", "met" if met else "NOT met")
    Console().print(table)


PARTS = {"ingest": ingest, "reads": reads, "streams": scale_streams.run}


def main(args: argparse.Namespace) -> None:
    postgres = bool(args.db) and not args.db.startswith("sqlite")
    name = "scale-postgresql" if postgres else "scale"
    path = bench.RESULTS / f"{name}.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    result.update({"benchmark": "scale", "db": "postgresql" if postgres else "sqlite"})
    for part in args.parts:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with LoadAverage() as load:
            figures = PARTS[part](args)
        figures = {"started": started, **figures, "load_average": load.summary()}
        result[part] = figures
        show(f"creditmeter benchmark: scale — {part} ({result['db']})", figures)
        _write(path, result)
    result["targets"] = {f"{part}: {target}": met for part in PARTS if part in result
                         for target, met in result[part].get("targets", {}).items()}
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    _write(path, result)
    print(f"wrote {path}")


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
