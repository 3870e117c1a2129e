"""Shared fixtures: engines on fresh SQLite databases, the example catalog, instants."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from creditmeter.engine import Engine, Settings
from creditmeter.pricing import Catalog, load_yaml, parse_catalog
from creditmeter.store.sql import SqlStore
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


@pytest.fixture
def make_engine(template_db: Path, tmp_path: Path) -> Iterator[EngineFactory]:
    """Build engines on fresh databases: ``make_engine()`` or ``make_engine(Settings(...))``."""
    made: list[Engine] = []
    counter = iter(range(1_000_000))

    def factory(settings: Settings | None = None) -> Engine:
        path = tmp_path / f"engine-{next(counter)}.db"
        shutil.copy(template_db, path)
        engine = Engine(SqlStore(f"sqlite:///{path}"), settings)
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        engine.store.close()


@pytest.fixture
def example_catalog() -> Catalog:
    return parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text()))


@pytest.fixture
def engine(make_engine: EngineFactory, example_catalog: Catalog) -> Engine:
    """An engine with the example catalog effective from 2026-01-01."""
    e = make_engine()
    e.load_prices(example_catalog, at("2026-01-01"), at("2026-01-01"))
    return e
