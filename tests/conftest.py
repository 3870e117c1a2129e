"""Shared fixtures: engines on fresh databases of each store, the example catalog, instants.

Every test that takes ``make_engine`` or ``engine`` runs twice: on SQLite and on PostgreSQL.
PostgreSQL is ``CREDITMETER_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
each engine gets a database of its own: a copy of a migrated template, or one a finished test gave
back, emptied to the template's state (dropping a database forces a checkpoint, which costs far
more than emptying one). In CI (``CI=true``) a missing PostgreSQL fails the run; elsewhere those
tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
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


# Modules whose tests take longest, run first (each module's tests kept together and in order):
# with ``-n 2`` the workers then end on short tests and finish together, rather than one waiting
# on the other's long test at the end of the run.
LONG_FIRST = ("tests/properties/test_properties.py", "tests/api/test_schemathesis.py",
              "tests/unit/test_lint.py", "tests/docs/test_readme.py", "tests/gateway/test_burst_limits.py",
              "tests/properties/test_allowances_oracle.py", "tests/concurrency/test_crash.py",
              "tests/properties/test_stateful.py", "tests/scenarios/test_member_usage.py",
              "tests/concurrency/test_webhook_workers.py", "tests/gateway/test_burst.py",
              "tests/concurrency/test_import_race.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {module: n for n, module in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated empty SQLite database, copied for each engine (migrating once is faster)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    store = SqlStore(f"sqlite:///{path}")
    store.upgrade()
    store.close()
    return path


PG_ADMIN_URL = os.environ.get("CREDITMETER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


# What a database is made of, beyond its rows: relations and their columns, constraints, indexes,
# triggers and functions outside the system schemas, and the schema revision. A database given back
# is only handed out again if this is still the template's.
LAYOUT_SQL = """
WITH ns AS (SELECT oid FROM pg_namespace
            WHERE nspname <> 'information_schema' AND left(nspname, 3) <> 'pg_')
SELECT 'column', c.relname || ':' || c.relkind::text, coalesce(a.attname, ''),
       format_type(a.atttypid, a.atttypmod) || ' ' || coalesce(a.attnotnull::text, '')
       || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_class c
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relnamespace IN (SELECT oid FROM ns)
UNION ALL
SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace IN (SELECT oid FROM ns)
UNION ALL
SELECT 'index', indrelid::regclass::text, indexrelid::regclass::text, pg_get_indexdef(indexrelid)
  FROM pg_index WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace IN (SELECT oid FROM ns))
UNION ALL
SELECT 'trigger', tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
  FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'function', pronamespace::regnamespace::text, proname, pg_get_function_identity_arguments(oid)
  FROM pg_proc WHERE pronamespace IN (SELECT oid FROM ns)
UNION ALL
SELECT 'revision', '', version_num, '' FROM alembic_version
ORDER BY 1, 2, 3, 4
"""


class Postgres:
    """A PostgreSQL server for tests: a migrated template database, copies of it, and the copies
    tests gave back (emptied: no rows, every sequence restarted), which are handed out first."""

    def __init__(self, admin_url: str) -> None:
        self.admin = sa.create_engine(_driver_url(admin_url), isolation_level="AUTOCOMMIT",
                                      poolclass=sa.pool.NullPool)
        self.base = sa.engine.make_url(_driver_url(admin_url))
        self.template = f"cm_tpl_{uuid.uuid4().hex[:12]}"
        self.spare: list[str] = []
        self._run(f'CREATE DATABASE "{self.template}"')
        store = SqlStore(self.url(self.template))
        store.upgrade()
        store.close()
        metadata = sa.MetaData()
        metadata.reflect(reader := sa.create_engine(_driver_url(self.url(self.template)),
                                                    poolclass=sa.pool.NullPool))
        reader.dispose()
        with psycopg.connect(self._conninfo(self.template)) as conn:
            self.layout = conn.execute(LAYOUT_SQL).fetchall()
            sequences = [r[0] for r in conn.execute("SELECT format('%I.%I', schemaname, sequencename)"
                                                    " FROM pg_sequences")]
            superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        # Rows that refer to others go first. Everything goes, so a superuser skips checking each
        # foreign key row by row.
        tables = [t.name for t in reversed(metadata.sorted_tables) if t.name != "alembic_version"]
        self.emptying = ";".join([
            *(["SET LOCAL session_replication_role = replica"] if superuser and superuser[0] else []),
            *(f'DELETE FROM "{table}"' for table in tables),
            *(f"ALTER SEQUENCE {sequence} RESTART" for sequence in sequences)])

    def url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def _conninfo(self, name: str) -> str:
        return self.base.set(drivername="postgresql", database=name).render_as_string(hide_password=False)

    def _run(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(sql)

    def fresh(self) -> str:
        """A database in the template's state, of its own until given back or dropped."""
        if self.spare:
            return self.spare.pop()
        name = f"cm_{uuid.uuid4().hex[:12]}"
        self._run(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def give_back(self, name: str) -> None:
        """Return a database from ``fresh`` once nothing uses it: it is emptied to the template's
        state for the next ``fresh`` (any connection still open to it is ended), or dropped if its
        layout is no longer the template's."""
        with psycopg.connect(self._conninfo(name)) as conn:  # one transaction, committed at the end
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = current_database() AND pid <> pg_backend_pid()")
            same = conn.execute(LAYOUT_SQL).fetchall() == self.layout
            if same:
                conn.execute(self.emptying)
        if same:
            self.spare.append(name)
        else:
            self.drop(name)

    def drop(self, name: str) -> None:
        self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for name in self.spare:
            self.drop(name)
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


class Engines:
    """Makes engines on fresh databases of one store: ``make_engine()`` or
    ``make_engine(Settings(...))``. ``close()`` closes the engines made so far and gives their
    databases back: a property test does so at the end of each example, so that every example
    starts on fresh databases without hundreds of them waiting for the end of the test."""

    def __init__(self, server: Postgres | None, template_db: Path, directory: Path) -> None:
        self.server = server
        self.template_db = template_db
        self.directory = directory
        self.made: list[tuple[Engine, str | None]] = []  # with its PostgreSQL database
        self.counter = iter(range(1_000_000))

    def __call__(self, settings: Settings | None = None) -> Engine:
        database = None
        if self.server is not None:
            database = self.server.fresh()
            url = self.server.url(database)
        else:
            path = self.directory / f"engine-{next(self.counter)}.db"
            shutil.copy(self.template_db, path)
            url = f"sqlite:///{path}"
        engine = Engine(SqlStore(url), settings)
        self.made.append((engine, database))
        return engine

    def close(self) -> None:
        made, self.made = self.made, []
        for engine, _ in made:
            engine.store.close()
        for _, database in made:
            if database is not None:
                assert self.server is not None
                self.server.give_back(database)


EngineFactory = Engines


@pytest.fixture
def make_engine(store_kind: str, template_db: Path, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[Engines]:
    """Build engines on fresh databases: ``make_engine()`` or ``make_engine(Settings(...))``."""
    server: Postgres | None = None
    if store_kind == "postgres":
        found = request.getfixturevalue("postgres")
        if isinstance(found, str):
            pytest.skip(found)
        server = found
    engines = Engines(server, template_db, tmp_path)
    yield engines
    engines.close()


@pytest.fixture
def example_catalog() -> Catalog:
    return parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text()))


@pytest.fixture
def engine(make_engine: EngineFactory, example_catalog: Catalog) -> Engine:
    """An engine with the example catalog effective from 2026-01-01."""
    e = make_engine()
    e.load_prices(example_catalog, at("2026-01-01"), at("2026-01-01"))
    return e
