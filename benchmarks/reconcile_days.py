"""Reconcile's memory by the number of (account, day, model) rows of usage.

``python benchmarks/reconcile_days.py [--db URL] [--pairs N ...]``: for each N, a fresh database
where N / DAYS accounts each had one event a day for DAYS days (so N day rows of the rollup and N
events), then ``check_invariants()`` over everything (what ``creditmeter reconcile`` runs) in a
process of its own, for its own peak memory (VmHWM) and time. Writes
``benchmarks/results/reconcile_days[-postgresql].json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's package, first

from creditmeter.demo import example_catalog_text  # noqa: E402
from creditmeter.engine import Engine  # noqa: E402
from creditmeter.pricing import load_yaml, parse_catalog  # noqa: E402
from creditmeter.store.sql import SqlStore  # noqa: E402
from creditmeter.timeutil import US_PER_S, format_instant  # noqa: E402
from reads import _in_child, _peak_mb  # noqa: E402
from run import AT, DAY_US, RESULTS, WORK, fresh_database  # noqa: E402

DAYS = 100


def _reconcile_all(url: str, _: str, out: Any) -> None:
    engine = Engine(SqlStore(url))
    engine.balance("a-0", AT)  # connected, prices loaded
    started = time.perf_counter()
    problems = engine.check_invariants()
    out.send({"problems": len(problems), "seconds": round(time.perf_counter() - started, 2),
              "peak_mb": _peak_mb()})
    engine.store.close()


def _setup(url: str, pairs: int) -> None:
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    start = AT - (DAYS + 1) * DAY_US
    engine.load_prices(parse_catalog(load_yaml(example_catalog_text())), start, start)
    accounts = [f"a-{i}" for i in range(max(1, pairs // DAYS))]
    for account in accounts:
        engine.create_account(account, start)
        engine.add_grant(account, 10**9 * US_PER_S, "package", start, grant_id=f"{account}-pack")
    for day in range(DAYS):
        ts = start + day * DAY_US + 3_600 * US_PER_S
        engine.record_batch([{"id": f"{a}-{day}", "account_id": a, "model": "gpt-4o-mini",
                              "input_tokens": 100 + day, "timestamp": format_instant(ts)}
                             for a in accounts], ts)
    engine.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", help="a PostgreSQL server URL to run on (default: fresh SQLite files)")
    parser.add_argument("--pairs", type=int, nargs="+", default=[20_000, 200_000])
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"benchmark": "reconcile_days", "days": DAYS}
    for pairs in args.pairs:
        url = fresh_database(args.db, f"reconcile-{pairs}")
        _setup(url, pairs)
        check = _in_child(_reconcile_all, url, "")
        result[f"reconcile_peak_mb_{pairs}_day_rows"] = check["peak_mb"]
        result[f"reconcile_seconds_{pairs}_day_rows"] = check["seconds"]
        result[f"reconcile_problems_{pairs}_day_rows"] = check["problems"]
    result["db"] = "sqlite" if args.db is None else "postgresql"
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "reconcile_days" if args.db is None else "reconcile_days-postgresql"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    mp.set_start_method("spawn")
    main()
