"""``creditmeter serve --workers N`` on PostgreSQL: several processes behind one port, no
overspend, every event charged once, metrics summed over the workers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from creditmeter.engine import Engine
from creditmeter.pricing import load_yaml, parse_catalog
from tests.api.conftest import start_server, stop_server
from tests.conftest import EXAMPLE_CATALOG, EngineFactory, at


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_several_workers_share_one_ledger(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine: Engine = make_engine()
    engine.load_prices(parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text())), at("2026-01-01"),
                       at("2026-01-01"))
    server = start_server(engine.store.url, tmp_path / "serve.log", workers=3)
    try:
        with server.client() as op:
            op.post("/api/accounts", json={"id": "team"}).raise_for_status()
            op.post("/api/accounts/team/grants", json={"amount_credits": "100", "kind": "addon"}
                    ).raise_for_status()
        outcomes: list[tuple[int, str]] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            with server.client() as c:
                for i in range(25):
                    # 1M input tokens of gpt-4o-mini = 15 credits; each event twice (a retry).
                    body = {"events": [{"id": f"w{n}-{i}", "account_id": "team", "model": "gpt-4o-mini",
                                        "input_tokens": 1_000_000}]}
                    for _ in range(2):
                        response = c.post("/api/usage", json=body)
                        with lock:
                            outcomes.append((response.status_code, response.json()["results"][0]["status"]))
                    hold = c.post("/api/accounts/team/holds", json={"amount_credits": "5"})
                    with lock:
                        outcomes.append((hold.status_code, "hold"))
                    if hold.status_code == 201:
                        c.post(f"/api/holds/{hold.json()['hold_id']}/release").raise_for_status()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = [s for s, _ in outcomes]
        assert set(statuses) <= {200, 201, 402}, sorted(set(statuses))
        charged = sum(1 for s, what in outcomes if what == "charged")
        duplicates = sum(1 for s, what in outcomes if what == "duplicate")
        assert charged == 150 and duplicates == 150
        with server.client() as op:
            balance = op.get("/api/accounts/team/balance").json()
            metrics = op.get("/metrics").text
        # 150 events × 15 credits = 2,250 credits against 100 granted: 100 used, 2,150 overage.
        assert balance["packages"][0]["used_credits"] == "100"
        assert balance["overage_credits"] == "2150"
        assert balance["held_credits"] == "0"
        assert engine.check_invariants() == []
        # Summed over the three workers (each request went to one of them).
        line = next(x for x in metrics.splitlines()
                    if x.startswith('creditmeter_http_requests_total{method="POST",route="/api/usage"'))
        assert float(line.rsplit(" ", 1)[1]) == 300.0
    finally:
        stop_server(server)
    assert "3 workers" in (tmp_path / "serve.log").read_text()
