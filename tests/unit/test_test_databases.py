"""The tests' PostgreSQL databases (tests/conftest.py): one given back and handed out again is, to
the next test, the same as a new copy of the template; one whose layout was changed is dropped."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from creditmeter.engine import Engine
from creditmeter.store.sql import SqlStore, _driver_url
from tests.conftest import LAYOUT_SQL, Postgres, at
from tests.unit.test_bad_input import dump_tables


def state(server: Postgres, name: str) -> tuple[Any, ...]:
    """Rows, where each sequence stands, and the layout."""
    engine = sa.create_engine(_driver_url(server.url(name)), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            sequences = conn.exec_driver_sql(
                "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1").all()
            layout = conn.exec_driver_sql(LAYOUT_SQL).all()
    finally:
        engine.dispose()
    return dump_tables(server.url(name)), sequences, layout


def databases(server: Postgres) -> set[str]:
    with server.admin.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql("SELECT datname FROM pg_database")}


@pytest.fixture
def server(postgres: Postgres | str) -> Postgres:
    if isinstance(postgres, str):
        pytest.skip(postgres)
    return postgres


def test_a_database_given_back_is_handed_out_again_as_new(server: Postgres) -> None:
    new = server.fresh()
    used = server.fresh()
    try:
        engine = Engine(SqlStore(server.url(used)))
        engine.create_account("alice", at("2026-01-01"))
        engine.add_grant("alice", 5_000_000, "addon", at("2026-01-01"))
        engine.store.close()
        assert state(server, used) != state(server, new)
        forgotten = sa.create_engine(_driver_url(server.url(used)))
        connection = forgotten.connect()  # one a test left open: giving back ends it
        server.give_back(used)
        connection.invalidate()
        forgotten.dispose()
        assert server.fresh() == used
        assert state(server, used) == state(server, new)
    finally:
        server.drop(used)
        server.drop(new)


def test_a_database_whose_layout_changed_is_dropped(server: Postgres) -> None:
    name = server.fresh()
    engine = sa.create_engine(_driver_url(server.url(name)), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE accounts ADD COLUMN note TEXT")
    engine.dispose()
    server.give_back(name)
    assert name not in server.spare
    assert name not in databases(server)
