"""Eight `creditmeter usage import` processes at once on PostgreSQL, their files sharing a fifth of
their event ids.

SPEC §5: an event is charged exactly once, whatever the concurrency. An importer that finds an
event already charged by another one answers it as a duplicate and goes on: every process exits
0, every shared id is charged once, at its price, and the ledger reconciles. Each run starts on a
database of its own. The importers are forked from a process that has already imported the command
(tests/forked.py), so that a run costs the race, not eight interpreters starting.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import sqlalchemy as sa

from creditmeter.engine import Engine
from creditmeter.pricing import parse_catalog
from creditmeter.store.sql import SqlStore, _driver_url
from tests import forked
from tests.concurrency.prices import PRICES, expected_cost_uc
from tests.conftest import Postgres, at
from tests.forked import Forked

CREDIT = 1_000_000
T0 = at("2026-11-01")
AT = "2026-11-02T12:00:00Z"
WORKERS = 8
RUNS = 20
PER_FILE = 200
SHARED_PER_FILE = PER_FILE // 5
SHARED_POOL = 80  # each shared event is in about four of the eight files
ACCOUNTS = [f"race-{i}" for i in range(4)]
MODELS = ("odd", "small")


def make_event(rng: random.Random, event_id: str) -> dict[str, object]:
    minute = rng.randrange(12 * 60)
    return {"id": event_id, "account_id": rng.choice(ACCOUNTS),
            "timestamp": f"2026-11-02T{minute // 60:02d}:{minute % 60:02d}:{rng.randrange(60):02d}Z",
            "model": rng.choice(MODELS), "input_tokens": rng.randint(1, 8_000),
            "output_tokens": rng.randint(0, 3_000)}


def make_files(rng: random.Random, run: int) -> list[list[dict[str, object]]]:
    """Eight files: each has its own events and a fifth taken from a pool they share, shuffled."""
    shared = [make_event(rng, f"r{run}-shared-{i:03d}") for i in range(SHARED_POOL)]
    files = []
    for worker in range(WORKERS):
        own = [make_event(rng, f"r{run}-w{worker}-{i:03d}") for i in range(PER_FILE - SHARED_PER_FILE)]
        events = own + rng.sample(shared, SHARED_PER_FILE)
        rng.shuffle(events)
        files.append(events)
    return files


def start_import(path: Path, url: str) -> Forked:
    env = {k: v for k, v in os.environ.items() if k != "CREDITMETER_DB"}
    return forked.start(["usage", "import", str(path), "--db", url, "--at", AT, "--json"],
                        stdout=path.with_suffix(".out"), stderr=path.with_suffix(".err"), env=env)


def one_run(postgres: Postgres, tmp_path: Path, run: int, seed: int) -> None:
    name = postgres.fresh()
    url = postgres.url(name)
    engine = Engine(SqlStore(url))
    db = sa.create_engine(_driver_url(url), poolclass=sa.pool.NullPool)
    running: list[Forked] = []
    try:
        engine.load_prices(parse_catalog({"models": PRICES}), at("2026-01-01"), T0)
        for account in ACCOUNTS:
            engine.create_account(account, T0)
            # A small trial first, then an add-on, so charges span packages.
            engine.add_grant(account, 5 * CREDIT, "trial", T0, grant_id=f"{account}-trial",
                             expires_at_us=at("2026-12-01"))
            engine.add_grant(account, 50 * CREDIT, "addon", T0, grant_id=f"{account}-addon")
        files = make_files(random.Random(seed), run)
        paths = []
        for worker, events in enumerate(files):
            path = tmp_path / f"run{run}-w{worker}.jsonl"
            path.write_text("".join(json.dumps(e) + "\n" for e in events))
            paths.append(path)
        running = [start_import(path, url) for path in paths]
        codes = [p.wait(timeout=120) for p in running]
        where = f"run {run} (seed {seed})"
        for worker, (code, path) in enumerate(zip(codes, paths, strict=True)):
            err = path.with_suffix(".err").read_text()
            assert code == 0, f"{where}: importer {worker} exited {code}: {err.strip()}"
        summaries = [json.loads(path.with_suffix(".out").read_text()) for path in paths]

        unique = {str(e["id"]): e for events in files for e in events}
        assert sum(s["charged"] for s in summaries) == len(unique), (where, summaries)
        assert sum(s["duplicate"] for s in summaries) == WORKERS * PER_FILE - len(unique), where
        with db.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id, account_id, cost_uc FROM events").all()
        assert sorted(r[0] for r in rows) == sorted(unique), f"{where}: not each id exactly once"
        wrong = [r for r in rows if r[2] != expected_cost_uc(unique[r[0]])
                 or r[1] != unique[r[0]]["account_id"]]
        assert wrong == [], f"{where}: charged wrong (id, account, cost): {wrong[:5]}"
        total = sum(expected_cost_uc(e) for e in unique.values())
        assert sum(r[2] for r in rows) == total, where
        balances = [engine.balance(account, at(AT)) for account in ACCOUNTS]
        assert sum(p.used_uc for b in balances for p in b.packages) + sum(
            b.overage_uc for b in balances) == total, where
        assert engine.check_invariants() == [], where
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
                p.wait()
        engine.store.close()
        db.dispose()
        postgres.give_back(name)


def test_concurrent_imports_sharing_event_ids_charge_each_once(
        postgres: Postgres | str, tmp_path: Path) -> None:
    if isinstance(postgres, str):
        pytest.skip(postgres)
    seed = random.randrange(1 << 30)
    for run in range(RUNS):
        one_run(postgres, tmp_path, run, seed + run)
