"""Fixtures for the HTTP API: an in-process client with a settable clock, and a real
``creditmeter serve`` process on a free port (forked: tests/forked.py). Both run on each store
(SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient

from creditmeter.engine import Engine
from creditmeter.server import create_app
from tests import forked
from tests.conftest import EXAMPLE_CATALOG, EngineFactory, at
from tests.forked import Forked

ADMIN_KEY = "test-operator-key-" + "k" * 32
NOW = "2026-11-10T12:00:00Z"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


OPERATOR = bearer(ADMIN_KEY)


class Clock:
    """The API's clock in tests: a settable instant (µs)."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += int(seconds * 1_000_000)


@pytest.fixture
def clock() -> Clock:
    return Clock(at(NOW))


@pytest.fixture
def api(engine: Engine, clock: Clock) -> Iterator[TestClient]:
    """An in-process client over a fresh engine with the example catalog; ``OPERATOR`` headers
    carry the operator key."""
    with TestClient(create_app(engine, admin_key=ADMIN_KEY, clock=clock)) as client:
        yield client


@pytest.fixture
def alice(api: TestClient) -> TestClient:
    """``api`` with an account ``alice`` holding a 100-credit add-on."""
    assert api.post("/api/accounts", json={"id": "alice"}, headers=OPERATOR).status_code == 201
    assert api.post("/api/accounts/alice/grants", json={"amount_credits": "100", "kind": "addon"},
                    headers=OPERATOR).status_code == 201
    return api


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``creditmeter serve`` process."""

    base_url: str
    db_url: str
    process: Forked
    log: Path

    def client(self, key: str | None = ADMIN_KEY, **kwargs: object) -> httpx2.Client:
        headers = bearer(key) if key else {}
        return httpx2.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def start_server(db_url: str, log: Path, *, workers: int = 1, env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None) -> Server:
    """``creditmeter serve`` on a free port, forked from a process that has already imported it
    (tests/forked.py), once it answers ``/healthz``."""
    port = free_port()
    # Delivery runs only where a test turns it on.
    environ = {**os.environ, "CREDITMETER_ADMIN_KEY": ADMIN_KEY, "CREDITMETER_DELIVER": "false",
               **(env or {})}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = forked.start(["serve", "--db", db_url, "--port", str(port), "--workers", str(workers),
                            "--no-access-log", *(extra_args or [])], stdout=log, env=environ)
    server = Server(f"http://127.0.0.1:{port}", db_url, process, log)
    # Workers are spawned interpreters, each importing the app: on a busy machine that takes a while.
    patience_s = 30 if workers == 1 else 90
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"creditmeter serve exited {process.returncode}: {log.read_text()}")
        try:
            if httpx2.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    process.kill()  # with the workers it spawned
    process.wait()
    raise RuntimeError(f"creditmeter serve did not answer within {patience_s} s: {log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    server.process.kill_group()  # no worker outlives its server


@pytest.fixture
def server(make_engine: EngineFactory, tmp_path: Path) -> Iterator[Server]:
    """A real server on a fresh database (each store) with the example catalog loaded."""
    engine = make_engine()
    from creditmeter.pricing import load_yaml, parse_catalog

    catalog = parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text()))
    engine.load_prices(catalog, at("2026-01-01"), at("2026-01-01"))
    running = start_server(engine.store.url, tmp_path / "serve.log")
    yield running
    stop_server(running)
