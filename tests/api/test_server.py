"""The API against a real ``creditmeter serve`` process: a whole flow, keys, pagination while
events arrive, CSV, metrics, limits."""

from __future__ import annotations

import csv
import io
import threading
import time
import uuid

import pytest

from tests import forked
from tests.api.conftest import ADMIN_KEY, Server


def _setup_user(server: Server, account: str = "alice", credits: str = "1000") -> str:
    with server.client() as op:
        assert op.post("/api/accounts", json={"id": account}).status_code == 201
        grant = op.post(f"/api/accounts/{account}/grants", json={"amount_credits": credits, "kind": "trial"})
        assert grant.status_code == 201, grant.text
        key = op.post(f"/api/accounts/{account}/keys", json={"name": "tests"})
        assert key.status_code == 201
        return str(key.json()["key"])


def test_a_whole_flow_on_a_real_server(server: Server) -> None:
    key = _setup_user(server)
    with server.client() as op, server.client(key) as user:
        me = user.get("/api/me").json()
        assert me["role"] == "account" and me["account_id"] == "alice"
        # gpt-4o: 250 credits / 1M input, 1000 / 1M output → 1,000 in + 500 out = 0.25 + 0.5
        body = {"events": [{"id": "e1", "account_id": "alice", "model": "gpt-4o",
                            "input_tokens": 1000, "output_tokens": 500}]}
        first = op.post("/api/usage", json=body).json()
        assert first["charged"] == 1 and first["results"][0]["cost_credits"] == "0.75"
        again = op.post("/api/usage", json=body).json()
        assert again["duplicate"] == 1 and again["charged"] == 0
        assert again["results"][0]["cost_credits"] == "0.75"
        balance = user.get("/api/accounts/alice/balance").json()
        assert balance["available_credits"] == "999.25"
        assert balance["period_used_credits"] == "0.75"
        assert balance["period"]["basis"] == "calendar_month"
        hold = op.post("/api/accounts/alice/holds", json={"amount_credits": "10"})
        assert hold.status_code == 201
        assert user.get("/api/accounts/alice/balance").json()["held_credits"] == "10"
        settled = op.post(f"/api/holds/{hold.json()['hold_id']}/settle",
                          json={"model": "gpt-4o", "input_tokens": 4000})
        assert settled.status_code == 200 and settled.json()["cost_credits"] == "1"
        balance = user.get("/api/accounts/alice/balance").json()
        assert balance["held_credits"] == "0" and balance["available_credits"] == "998.25"
        page = user.get("/api/accounts/alice/usage").json()
        assert [e["event_id"] for e in page["events"]] == [f"hold:{hold.json()['hold_id']}", "e1"]
        refused = op.post("/api/accounts/alice/holds", json={"amount_credits": "5000"})
        assert refused.status_code == 402
        assert refused.json()["error"]["available_credits"] == "998.25"


def test_a_revoked_key_stops_working_at_once(server: Server) -> None:
    key = _setup_user(server)
    with server.client(key) as user, server.client() as op:
        assert user.get("/api/me").status_code == 200
        key_id = user.get("/api/me").json()["key_id"]
        assert op.post(f"/api/keys/{key_id}/revoke").status_code == 200
        denied = user.get("/api/accounts/alice/balance")
        assert denied.status_code == 401
        assert denied.json()["error"]["type"] == "unauthorized"
        assert denied.headers["www-authenticate"] == "Bearer"


def test_the_key_is_stored_only_as_a_hash(server: Server) -> None:
    key = _setup_user(server)
    import sqlalchemy as sa

    from creditmeter.store.sql import _driver_url

    db = sa.create_engine(_driver_url(server.db_url))
    with db.connect() as conn:
        rows = [tuple(str(v) for v in row) for row in conn.exec_driver_sql("SELECT * FROM api_keys")]
    db.dispose()
    assert rows and not any(key in value for row in rows for value in row)


def test_paging_5000_events_while_new_ones_arrive_neither_repeats_nor_skips(server: Server) -> None:
    _setup_user(server, credits="1000000")
    with server.client() as op:
        existing = [f"old-{i:05d}" for i in range(5000)]
        for start in range(0, 5000, 1000):
            # The same second for many events: order falls back on recording order.
            body = {"events": [{"id": eid, "account_id": "alice", "model": "gpt-4o-mini",
                                "input_tokens": 10} for eid in existing[start:start + 1000]]}
            assert op.post("/api/usage", json=body).json()["charged"] == 1000
        stop = threading.Event()
        arrived: list[str] = []

        def producer() -> None:
            with server.client() as writer:
                while not stop.is_set():
                    eid = f"new-{uuid.uuid4().hex}"
                    body = {"events": [{"id": eid, "account_id": "alice", "model": "gpt-4o-mini",
                                        "input_tokens": 10}]}
                    assert writer.post("/api/usage", json=body).json()["charged"] == 1
                    arrived.append(eid)

        thread = threading.Thread(target=producer)
        thread.start()
        try:
            seen: list[str] = []
            cursor = None
            pages = 0
            while True:
                params: dict[str, str | int] = {"limit": 97}
                if cursor:
                    params["cursor"] = cursor
                page = op.get("/api/accounts/alice/usage", params=params).json()
                seen += [e["event_id"] for e in page["events"]]
                pages += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    break
                time.sleep(0.002)
        finally:
            stop.set()
            thread.join()
    assert len(arrived) > 20, "new events kept arriving while paging"
    assert len(seen) == len(set(seen)), "an event was repeated"
    assert set(existing) <= set(seen), f"{len(set(existing) - set(seen))} events were skipped"
    assert pages == -(-len(seen) // 97)
    # Whatever arrived after the first page is not in this pass; a new pass starts with it.
    with server.client() as op:
        newest = op.get("/api/accounts/alice/usage", params={"limit": 1}).json()["events"][0]
    assert newest["event_id"] == arrived[-1]


def test_csv_export_streams_every_event_with_full_precision(server: Server) -> None:
    _setup_user(server)
    with server.client() as op:
        events = [{"id": f"c{i}", "account_id": "alice", "model": "gpt-4o-mini", "input_tokens": i + 1}
                  for i in range(1200)]
        assert op.post("/api/usage", json={"events": events[:1000]}).json()["charged"] == 1000
        assert op.post("/api/usage", json={"events": events[1000:]}).json()["charged"] == 200
        with op.stream("GET", "/api/accounts/alice/usage.csv") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/csv")
            assert "content-length" not in response.headers  # streamed, not built first
            text = b"".join(response.iter_bytes()).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1200
    by_id = {r["event_id"]: r for r in rows}
    # 1 input token of gpt-4o-mini = 15 credits / 1M = 0.000015
    assert by_id["c0"]["cost_credits"] == "0.000015"
    assert by_id["c1199"]["cost_credits"] == "0.018"


def test_metrics_count_requests_credits_and_rejections(server: Server) -> None:
    _setup_user(server)
    with server.client() as op:
        op.post("/api/usage", json={"events": [
            {"id": "m1", "account_id": "alice", "model": "gpt-4o", "input_tokens": 4000},
            {"id": "m2", "account_id": "alice", "model": "no-such-model"}]})
        text = op.get("/metrics").text
    assert 'creditmeter_http_requests_total{method="POST",route="/api/usage",status="200"} 1.0' in text
    assert "creditmeter_credits_charged_total 1.0" in text
    assert 'creditmeter_usage_events_rejected_total{reason="invalid_input:model"} 1.0' in text
    assert "creditmeter_http_request_duration_seconds_bucket" in text


def test_a_body_over_the_limit_is_413_and_writes_nothing(server: Server) -> None:
    with server.client() as op:
        huge = {"events": [{"id": f"x{i}", "account_id": "nobody", "model": "gpt-4o",
                            "metadata": {"pad": "p" * 3000}} for i in range(1000)]}
        response = op.post("/api/usage", json=huge)
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "too_large"
        # Chunked, with no declared length, is measured as it arrives.
        chunks = (b"x" * 65536 for _ in range(64))
        response = op.post("/api/accounts", content=chunks, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert op.get("/api/accounts").json() == []


@pytest.mark.parametrize("path", ["/api/me", "/api/accounts/alice/balance", "/metrics"])
def test_no_key_is_401_in_the_error_shape(server: Server, path: str) -> None:
    with server.client(None) as anonymous:
        response = anonymous.get(path)
    assert response.status_code == 401
    assert set(response.json()["error"]) >= {"type", "message"}


def test_the_operator_key_from_the_environment_must_be_long(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "creditmeter.cli", "serve", "--db", f"sqlite:///{tmp_path}/x.db",
         "--port", "1"], env={**__import__("os").environ, "CREDITMETER_ADMIN_KEY": "short"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "CREDITMETER_ADMIN_KEY" in result.stderr
    assert ADMIN_KEY not in result.stderr


def test_serve_renews_subscriptions_in_the_background(make_engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The tick loop inside serve grants a period that became due, with no manual tick."""
    import datetime as dt

    from tests.api.conftest import start_server, stop_server

    engine = make_engine()
    now = dt.datetime.now(dt.UTC)
    started = int((now - dt.timedelta(days=40)).timestamp() * 1_000_000)
    engine.create_account("sub-user", started)
    engine.subscribe("sub-user", "professional-monthly", started, subscription_id="s-bg")
    config = tmp_path / "serve.yaml"
    config.write_text("server:\n  tick_interval_s: 0.2\nengine:\n  hold_ttl_s: 120\n")
    server = start_server(engine.store.url, tmp_path / "serve.log", extra_args=["--config", str(config)])
    try:
        deadline = time.monotonic() + 20
        packages: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            with server.client() as op:
                packages = op.get("/api/accounts/sub-user/grants").json()
            if len(packages) == 2:
                break
            time.sleep(0.2)
        assert len(packages) == 2, packages  # period 0 at subscribe, period 1 by the background tick
        with server.client() as op:
            hold = op.post("/api/accounts/sub-user/holds", json={"amount_credits": "1"}).json()
        # The engine section reached the workers: holds last 120 s.
        ttl = (dt.datetime.fromisoformat(hold["expires_at"]) - now).total_seconds()
        assert 100 < ttl < 180, hold
    finally:
        stop_server(server)


def test_serve_refuses_a_bad_config_naming_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    cases = {"server:\n  threads: 0\n": "server.threads", "server:\n  tread: 4\n": "server.tread",
             "gateway: [1]\n": "gateway", "- 1\n": "config"}
    for text, field in cases.items():  # each in a forked process (tests/forked.py)
        config = tmp_path / "bad.yaml"
        config.write_text(text)
        result = forked.run(["serve", "--db", f"sqlite:///{tmp_path}/x.db", "--port", "1",
                             "--config", str(config)], tmp_path / "runs",
                            env={k: v for k, v in os.environ.items() if not k.startswith("CREDITMETER_")})
        assert result.returncode == 2, (text, result.stderr)
        assert result.stderr.startswith(f"error: {field}"), (text, result.stderr)
    bad_env = subprocess.run(  # and the command as a new interpreter runs it
        [sys.executable, "-m", "creditmeter.cli", "serve", "--db", f"sqlite:///{tmp_path}/x.db",
         "--port", "1"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "CREDITMETER_THREADS": "lots"})
    assert bad_env.returncode == 2 and bad_env.stderr.startswith("error: server.threads"), bad_env.stderr
    assert "CREDITMETER_THREADS" in bad_env.stderr


def test_posting_prices_without_effective_at_follows_the_cli_rule(make_engine, clock) -> None:  # type: ignore[no-untyped-def]
    """The first catalog ever loaded is effective from the start of time, later ones from now;
    an effective_at given is taken as given."""
    from fastapi.testclient import TestClient

    from creditmeter.server import create_app
    from tests.api.conftest import NOW, OPERATOR

    catalog = {"models": {"gpt-4o": {"input": "2.5", "output": "10"}}}
    with TestClient(create_app(make_engine(), admin_key=ADMIN_KEY, clock=clock)) as api:
        first = api.post("/api/prices", headers=OPERATOR, json={"catalog": catalog})
        assert first.status_code == 201, first.text
        assert (first.json()["version"], first.json()["effective_at"]) == (1, "1970-01-01T00:00:00Z")
        second = api.post("/api/prices", headers=OPERATOR, json={"catalog": catalog})
        assert (second.json()["version"], second.json()["effective_at"]) == (2, NOW)
        given = api.post("/api/prices", headers=OPERATOR,
                         json={"catalog": catalog, "effective_at": "2027-01-01T00:00:00Z"})
        assert (given.json()["version"], given.json()["effective_at"]) == (3, "2027-01-01T00:00:00Z")
        versions = api.get("/api/prices", headers=OPERATOR).json()["versions"]
        assert [v["effective_at"] for v in versions] == ["1970-01-01T00:00:00Z", NOW, "2027-01-01T00:00:00Z"]
