"""A `creditmeter usage import` killed with SIGKILL at random moments, then run to completion.

SPEC §5: every event is charged exactly once, whatever the crashes; a crash mid-batch leaves each
event either fully charged or not at all. The import runs on a real PostgreSQL database; each run
is killed a random moment after it started charging (so mid-transaction, mid-commit or between
batches), and the file is imported once more at the end. Each state a kill leaves must already be
whole: the first whole batches in the order the import charges them (each window of lines by
account, see ``creditmeter.ingest``), with every invariant holding.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from creditmeter.engine import Engine
from creditmeter.ingest import by_account, window_lines
from creditmeter.pricing import parse_catalog
from creditmeter.store.sql import SqlStore, _driver_url
from tests.concurrency.prices import PRICES, expected_cost_uc
from tests.conftest import Postgres, at

CREDITMETER = Path(sys.executable).parent / "creditmeter"
CREDIT = 1_000_000
T0 = at("2026-11-01")
AT = "2026-11-02T12:00:00Z"
EVENTS = 8_000
BATCH = 200
KILLS = 10
ACCOUNTS = [f"crash-{i}" for i in range(4)]
def make_events(rng: random.Random) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    for i in range(EVENTS):
        minute = rng.randrange(12 * 60)
        events.append({
            "id": f"crash-evt-{i:05d}", "account_id": rng.choice(ACCOUNTS),
            "timestamp": f"2026-11-02T{minute // 60:02d}:{minute % 60:02d}:{rng.randrange(60):02d}Z",
            "model": rng.choice(sorted(PRICES)), "input_tokens": rng.randint(0, 8_000),
            "output_tokens": rng.randint(0, 3_000),
        })
    return events


def import_order(events: list[dict[str, object]]) -> list[str]:
    """The event ids in the order the import charges them, batch after batch."""
    lines = list(enumerate(events, start=1))
    window = window_lines(BATCH)
    return [str(e["id"]) for start in range(0, len(lines), window)
            for batch in by_account(lines[start:start + window], BATCH) for _, e in batch]


def start_import(path: Path, url: str, *, as_json: bool = False) -> subprocess.Popen[str]:
    args = [str(CREDITMETER), "usage", "import", str(path), "--db", url, "--at", AT,
            "--batch-size", str(BATCH)]
    env = {k: v for k, v in os.environ.items() if k != "CREDITMETER_DB"}
    return subprocess.Popen(args + (["--json"] if as_json else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def stored_ids(db: sa.Engine) -> list[str]:
    with db.connect() as conn:
        return sorted(row[0] for row in conn.exec_driver_sql("SELECT id FROM events"))


def count_events(db: sa.Engine) -> int:
    with db.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one())


def test_import_killed_at_random_charges_every_event_exactly_once(
        postgres: Postgres | str, tmp_path: Path) -> None:
    if isinstance(postgres, str):
        pytest.skip(postgres)
    assert CREDITMETER.exists(), f"the creditmeter command is not installed at {CREDITMETER}"
    name = postgres.fresh()
    url = postgres.url(name)
    engine = Engine(SqlStore(url))
    db = sa.create_engine(_driver_url(url), poolclass=sa.pool.NullPool)
    running: subprocess.Popen[str] | None = None
    try:
        engine.load_prices(parse_catalog({"models": PRICES}), at("2026-01-01"), T0)
        for account in ACCOUNTS:
            engine.create_account(account, T0)
            # A small trial first and a large add-on, so charges span packages.
            engine.add_grant(account, 20 * CREDIT, "trial", T0, grant_id=f"{account}-trial",
                             expires_at_us=at("2026-12-01"))
            engine.add_grant(account, 5_000 * CREDIT, "addon", T0, grant_id=f"{account}-addon")
        seed = random.randrange(1 << 30)
        rng = random.Random(seed)
        events = make_events(rng)
        file_ids = [str(e["id"]) for e in events]
        order = import_order(events)
        path = tmp_path / "usage.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))

        after_kills: list[int] = []
        finished_early = 0
        for kill in range(KILLS):
            before = count_events(db)
            running = start_import(path, url)
            deadline = time.monotonic() + 15
            # Wait until this run has committed a charge of its own, then let it go on a while.
            while count_events(db) == before and running.poll() is None:
                assert time.monotonic() < deadline, "the import charged nothing within 15 s"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.04))
            if running.poll() is None:
                running.send_signal(signal.SIGKILL)
            else:
                finished_early += 1
            _, err = running.communicate(timeout=15)
            if running.returncode not in (0, -signal.SIGKILL):
                pytest.fail(f"run {kill} (seed {seed}) exited {running.returncode}: {err}")
            running = None

            # What a kill leaves is whole: the first batches of the file, every invariant holding.
            ids = stored_ids(db)
            after_kills.append(len(ids))
            assert len(ids) == EVENTS or len(ids) % BATCH == 0, (
                f"kill {kill} (seed {seed}) left {len(ids)} events: part of a batch was written")
            assert ids == sorted(order[:len(ids)]), (
                f"kill {kill} (seed {seed}): not the first batches the import charges")
            assert engine.check_invariants() == [], f"kill {kill} (seed {seed})"

        mid_import = [n for n in after_kills if 0 < n < EVENTS]
        assert len(mid_import) >= KILLS // 2, (
            f"too few kills landed mid-import (seed {seed}): events after each kill {after_kills}, "
            f"{finished_early} runs finished before their kill")
        assert after_kills == sorted(after_kills), after_kills

        before = count_events(db)
        running = start_import(path, url, as_json=True)
        out, err = running.communicate(timeout=60)
        assert running.returncode == 0 and "Traceback" not in err, err
        running = None
        summary = json.loads(out)
        assert (summary["events"], summary["charged"], summary["duplicate"], summary["rejected"]) == (
            EVENTS, EVENTS - before, before, 0), summary

        # Exactly the file's events, each charged once at its independently computed cost.
        with db.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, account_id, cost_uc, overage_uc FROM events").all()
        assert sorted(r[0] for r in rows) == sorted(file_ids)
        by_id = {str(e["id"]): e for e in events}
        wrong = [(r[0], r[2], expected_cost_uc(by_id[r[0]])) for r in rows
                 if r[2] != expected_cost_uc(by_id[r[0]]) or r[1] != by_id[r[0]]["account_id"]]
        assert wrong == [], f"events charged at the wrong cost or account (id, stored, expected): {wrong[:5]}"
        total = sum(expected_cost_uc(e) for e in events)
        assert sum(r[2] for r in rows) == total
        balances = [engine.balance(account, at(AT)) for account in ACCOUNTS]
        used = sum(p.used_uc for b in balances for p in b.packages)
        assert used + sum(b.overage_uc for b in balances) == total
        assert sum(b.held_uc for b in balances) == 0
        assert engine.check_invariants() == []

        reconcile = subprocess.run([str(CREDITMETER), "reconcile", "--db", url], capture_output=True,
                                   text=True, timeout=60)
        assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    finally:
        if running is not None and running.poll() is None:
            running.kill()
            running.communicate()
        engine.store.close()
        db.dispose()
        postgres.give_back(name)
