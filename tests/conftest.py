"""Shared fixtures: engines on fresh databases of each store, the example catalog, instants.

Every test that takes ``make_engine`` or ``engine`` runs twice: on SQLite and on PostgreSQL.
PostgreSQL is ``CREDITMETER_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
each engine gets a database of its own, copied from a migrated template and dropped afterwards.
In CI (``CI=true``) a missing PostgreSQL fails the run; elsewhere those tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from creditmeter.engine import Engine, Settings
from creditmeter.pricing import Catalog, load_yaml, parse_catalog
from creditmeter.store.sql import SqlStore, _driver_url
from creditmeter.timeutil import parse_instant

EXAMPLE_CATALOG = Path(__file__).parents[1] / "src/creditmeter/catalogs/example.yaml"


def at(text: str) -> int:
    """An instant in µs from ISO 8601 (a bare date is 00:00 UTC)."""
    return parse_instant(text, "at")


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated empty SQLite database, copied for each engine (migrating once is faster)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    store = SqlStore(f"sqlite:///{path}")
    store.upgrade()
    store.close()
    return path


EngineFactory = Callable[..., Engine]
PG_ADMIN_URL = os.environ.get("CREDITMETER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


class Postgres:
    """A PostgreSQL server for tests: a migrated template database, and copies of it."""

    def __init__(self, admin_url: str) -> None:
        self.admin = sa.create_engine(_driver_url(admin_url), isolation_level="AUTOCOMMIT",
                                      poolclass=sa.pool.NullPool)
        self.base = sa.engine.make_url(_driver_url(admin_url))
        self.template = f"cm_tpl_{uuid.uuid4().hex[:12]}"
        self._run(f'CREATE DATABASE "{self.template}"')
        store = SqlStore(self.url(self.template))
        store.upgrade()
        store.close()

    def url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def _run(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(sql)

    def fresh(self) -> str:
        name = f"cm_{uuid.uuid4().hex[:12]}"
        self._run(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def drop(self, name: str) -> None:
        self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.drop(self.template)
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres | str]:
    """The test PostgreSQL, or the reason it cannot be had (a failure in CI)."""
    try:
        server = Postgres(PG_ADMIN_URL)
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is reported as such
        reason = f"PostgreSQL at {PG_ADMIN_URL} is not available: {exc.__class__.__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(f"{reason} (CI needs it)") from exc
        yield reason
        return
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_engine(store_kind: str, template_db: Path, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[EngineFactory]:
    """Build engines on fresh databases: ``make_engine()`` or ``make_engine(Settings(...))``."""
    made: list[Engine] = []
    databases: list[str] = []
    counter = iter(range(1_000_000))
    server: Postgres | str | None = None
    if store_kind == "postgres":
        server = request.getfixturevalue("postgres")
        if isinstance(server, str):
            pytest.skip(server)

    def factory(settings: Settings | None = None) -> Engine:
        if isinstance(server, Postgres):
            name = server.fresh()
            databases.append(name)
            url = server.url(name)
        else:
            path = tmp_path / f"engine-{next(counter)}.db"
            shutil.copy(template_db, path)
            url = f"sqlite:///{path}"
        engine = Engine(SqlStore(url), settings)
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        engine.store.close()
    if isinstance(server, Postgres):
        for name in databases:
            server.drop(name)


@pytest.fixture
def example_catalog() -> Catalog:
    return parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text()))


@pytest.fixture
def engine(make_engine: EngineFactory, example_catalog: Catalog) -> Engine:
    """An engine with the example catalog effective from 2026-01-01."""
    e = make_engine()
    e.load_prices(example_catalog, at("2026-01-01"), at("2026-01-01"))
    return e
