"""``POST /api/usage`` from eight clients at once on PostgreSQL, their batches sharing a fifth of
their event ids: every request succeeds, each id is charged once (SPEC §5), the others answer
duplicate with the original's cost."""

from __future__ import annotations

import random
import threading
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from creditmeter.engine import Engine
from creditmeter.money import parse_credits
from creditmeter.pricing import parse_catalog
from creditmeter.store.sql import _driver_url
from tests.api.conftest import start_server, stop_server
from tests.conftest import EngineFactory, at

CLIENTS = 8
ROUNDS = 5
PER_CLIENT = 200  # a round: one request from each client at once
ACCOUNTS = ["team-0", "team-1", "team-2"]
PRICES = {"odd": {"input": "3.333333", "output": "13.000007"}}


def expected_cost_uc(event: dict[str, Any]) -> int:
    """Σ tokens × price (credits per 1M tokens = µc per token), rounded up once per event."""
    price = PRICES[event["model"]]
    exact = (Decimal(event["input_tokens"]) * Decimal(price["input"])
             + Decimal(event["output_tokens"]) * Decimal(price["output"]))
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_parallel_clients_sharing_event_ids_charge_each_once(make_engine: EngineFactory,
                                                              tmp_path: Path) -> None:
    engine: Engine = make_engine()
    engine.load_prices(parse_catalog({"models": PRICES}), at("2026-01-01"), at("2026-01-01"))
    for account in ACCOUNTS:
        engine.create_account(account, at("2026-01-01"))
    rng = random.Random(7)

    def event(event_id: str) -> dict[str, Any]:  # no timestamp: charged at the server's now
        return {"id": event_id, "account_id": rng.choice(ACCOUNTS), "model": "odd",
                "input_tokens": rng.randint(0, 9_000), "output_tokens": rng.randint(0, 2_000)}

    bodies: list[list[list[dict[str, Any]]]] = [[] for _ in range(CLIENTS)]
    for r in range(ROUNDS):
        shared = [event(f"r{r}-shared-{i}") for i in range(80)]  # each in about four requests
        for n in range(CLIENTS):
            events = [event(f"r{r}-c{n}-{i}") for i in range(PER_CLIENT - PER_CLIENT // 5)]
            events += rng.sample(shared, PER_CLIENT // 5)
            rng.shuffle(events)
            bodies[n].append(events)
    unique = {e["id"]: e for batches in bodies for batch in batches for e in batch}

    server = start_server(engine.store.url, tmp_path / "serve.log")
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(batches: list[list[dict[str, Any]]]) -> None:
        with server.client() as c:
            for batch in batches:
                start.wait(timeout=60)
                response = c.post("/api/usage", json={"events": batch})
                with lock:
                    answers.append((response.status_code, response.json()))

    try:
        threads = [threading.Thread(target=client, args=(b,)) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop_server(server)

    assert [(s, a) for s, a in answers if s != 200] == []
    results = [r for _, a in answers for r in a["results"]]
    assert [r for r in results if r["status"] not in ("charged", "duplicate")] == []
    charged = {r["event_id"]: r for r in results if r["status"] == "charged"}
    assert sorted(charged) == sorted(unique)
    assert len(results) - len(charged) == ROUNDS * CLIENTS * PER_CLIENT - len(unique)
    for r in results:  # a duplicate answers the original charge
        assert parse_credits(r["cost_credits"], "cost_credits") == expected_cost_uc(unique[r["event_id"]]), r
        assert r["allocations"] == charged[r["event_id"]]["allocations"], r
    db = sa.create_engine(_driver_url(engine.store.url), poolclass=sa.pool.NullPool)  # type: ignore[attr-defined]
    try:
        with db.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id, cost_uc FROM events").all()
    finally:
        db.dispose()
    assert sorted(r[0] for r in rows) == sorted(unique)
    assert sum(r[1] for r in rows) == sum(expected_cost_uc(e) for e in unique.values())
    assert engine.check_invariants() == []
