"""The ``holds`` benchmark: reserve and settle on one account as its open holds grow.

An account per size (0, then ``--sizes`` open holds, each with a ttl of a day, so none lapses);
on each, ``--rounds`` reserve + settle pairs one after the other, in process, taking turns
between the accounts so that the machine's ups and downs fall on every size alike. Each pair
leaves the account with as many open holds as before. Reported: the median and the 90th
percentile of each reserve and each settle (ms), and how the largest size compares with none.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from creditmeter.engine import Engine, Usage
from creditmeter.store.sql import SqlStore
from creditmeter.timeutil import US_PER_S

HOLD_UC = 2 * US_PER_S
TTL_S = 86_400


def _open_holds(engine: Engine, account: str, count: int, at_us: int) -> None:
    for i in range(count):
        engine.reserve(account, HOLD_UC, at_us, hold_id=f"{account}-open-{i}", ttl_s=TTL_S)


def run(args: argparse.Namespace, url: str, setup: Any, at_us: int) -> dict[str, Any]:
    """``setup(engine, account)`` makes an account with credits enough on a migrated, priced
    database at ``url``; holds are made and timed at ``at_us`` and just after."""
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    sizes = [0, *args.sizes]
    for size in sizes:
        setup(engine, f"holds-{size}")
        _open_holds(engine, f"holds-{size}", size, at_us - US_PER_S)
    engine.store.close()
    engine = Engine(SqlStore(url))
    reserve: dict[int, list[float]] = {size: [] for size in sizes}
    settle: dict[int, list[float]] = {size: [] for size in sizes}
    usage = Usage("demo-small", 1_000, 200)
    for i in range(-3, args.rounds):  # three rounds to warm up, not counted
        for size in sizes:
            account = f"holds-{size}"
            t = time.perf_counter()
            hold = engine.reserve(account, HOLD_UC, at_us + i, hold_id=f"{account}-{i}", ttl_s=60)
            t_reserve = time.perf_counter()
            assert hasattr(hold, "parts"), hold
            engine.settle(hold.id, usage, at_us + i)
            t_settle = time.perf_counter()
            if i >= 0:
                reserve[size].append((t_reserve - t) * 1000)
                settle[size].append((t_settle - t_reserve) * 1000)
    violations = engine.check_invariants()
    engine.store.close()
    db = "sqlite" if url.startswith("sqlite") else "postgresql"
    result: dict[str, Any] = {"benchmark": "holds", "db": db, "rounds": args.rounds}
    for size in sizes:
        for name, samples in (("reserve", reserve[size]), ("settle", settle[size])):
            result[f"{name}_ms_{size}_open"] = round(statistics.median(samples), 3)
            result[f"{name}_p90_ms_{size}_open"] = round(statistics.quantiles(samples, n=10)[-1], 3)
    top = sizes[-1]
    ratios = {name: result[f"{name}_ms_{top}_open"] / result[f"{name}_ms_0_open"]
              for name in ("reserve", "settle")}
    result[f"reserve_ratio_{top}_to_0"] = round(ratios["reserve"], 2)
    result[f"settle_ratio_{top}_to_0"] = round(ratios["settle"], 2)
    result["reconcile_ok"] = not violations
    result["targets"] = {f"{name} at {top} open holds within 20% of none": ratio <= 1.2
                         for name, ratio in ratios.items()}
    return result
