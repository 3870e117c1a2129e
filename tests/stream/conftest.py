"""Fixtures for the stream tests: a NATS server of their own, a PostgreSQL database with
accounts, packages and the test prices, and the same on a SQLite file (``engine``)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from creditmeter.engine import Engine, open_engine
from creditmeter.pricing import parse_catalog
from creditmeter.store.sql import SqlStore, _driver_url
from tests import forked
from tests.concurrency.prices import PRICES
from tests.conftest import Postgres
from tests.forked import Forked
from tests.stream.harness import ACCOUNTS, CREDIT, NatsServer, nats_server_binary


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    nats_server_binary()
    with tempfile.TemporaryDirectory(prefix="cm-nats-") as directory:
        server = NatsServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.kill()


@dataclass
class Ledger:
    """A fresh PostgreSQL database with the test accounts (each with a package larger than any
    run charges) and the test prices, effective from a day before now."""

    url: str
    engine: Engine
    db: sa.Engine

    def charged(self) -> list[tuple[str, str, int]]:
        """(event id, account, cost µc) of every stored event, read from the table itself."""
        with self.db.connect() as conn:
            return [(r[0], r[1], r[2]) for r in
                    conn.exec_driver_sql("SELECT id, account_id, cost_uc FROM events").all()]


def funded_ledger(url: str) -> Ledger:
    """The test prices and accounts on the database at ``url`` (its schema made if missing)."""
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    db = sa.create_engine(_driver_url(url), poolclass=sa.pool.NullPool)
    start_us = (int(time.time()) - 86400) * 1_000_000
    engine.load_prices(parse_catalog({"models": PRICES}), start_us, start_us)
    for account in ACCOUNTS:
        engine.create_account(account, start_us)
        engine.add_grant(account, 100_000 * CREDIT, "addon", start_us, grant_id=f"{account}-addon")
    return Ledger(url, engine, db)


def close_ledger(ledger: Ledger) -> None:
    ledger.engine.store.close()
    ledger.db.dispose()


@pytest.fixture
def ledger(postgres: Postgres | str) -> Iterator[Ledger]:
    if isinstance(postgres, str):
        pytest.skip(postgres)
    name = postgres.fresh()
    made = funded_ledger(postgres.url(name))
    try:
        yield made
    finally:
        close_ledger(made)
        postgres.give_back(name)


def start_consumer(nats_url: str, db_url: str, out: Path, *extra: str) -> Forked:
    """A ``creditmeter consume`` process (forked: see tests/forked.py); its output in ``out``.*."""
    env = {k: v for k, v in os.environ.items() if k != "CREDITMETER_DB"}
    return forked.start(["consume", nats_url, "--stream", "USAGE", "--subject", "usage.>",
                         "--durable", "charger", "--dead-letter", "dead.usage", "--db", db_url,
                         "--batch-size", "500", "--ack-wait", "3", "--progress", "1", "--json", *extra],
                        stdout=out.with_suffix(".out"), stderr=out.with_suffix(".err"), env=env)


def stop(process: Forked, timeout: float = 20) -> int:
    """SIGTERM (the consumer finishes its batch and exits), then wait."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """An engine on a SQLite file: prices from a day ago, 100,000 credits on each account."""
    e = open_engine(f"sqlite:///{tmp_path / 'stream.db'}")
    start_us = (int(time.time()) - 86400) * 1_000_000
    e.load_prices(parse_catalog({"models": PRICES}), start_us, start_us)
    for account in ACCOUNTS:
        e.create_account(account, start_us)
        e.add_grant(account, 100_000 * CREDIT, "addon", start_us, grant_id=f"{account}-addon")
    return e
