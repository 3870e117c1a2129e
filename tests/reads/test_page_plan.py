"""A usage page on PostgreSQL reads the account's events in the order of the (account, time,
seq) index, even on a database never analysed: no plan that fetches the older events and sorts
them (which costs the page as much as the account's whole history)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from creditmeter.engine import Engine
from creditmeter.timeutil import format_instant
from tests.conftest import EngineFactory, at

T0 = at("2026-03-01T00:00:00Z")


def _plans(engine: Engine, read: Any) -> list[str]:
    """The plans of the statements on ``events`` that ``read()`` runs, each made by PostgreSQL
    on the same connection and at the same point as the statement itself."""
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM events" in statement and "ORDER BY" in statement:
            rows = cursor.connection.execute("EXPLAIN " + statement, parameters).fetchall()
            plans.append("\n".join(r[0] for r in rows))

    sa_engine = engine.store.engine  # type: ignore[attr-defined]
    sa.event.listen(sa_engine, "before_cursor_execute", explain)
    try:
        read()
    finally:
        sa.event.remove(sa_engine, "before_cursor_execute", explain)
    return plans


def _first(stream: Iterator[Any]) -> Any:
    with contextlib.closing(stream):  # type: ignore[type-var]
        return next(stream)


def test_pages_follow_the_index_on_a_database_never_analysed(make_engine: EngineFactory,
                                                             store_kind: str,
                                                             example_catalog: Any) -> None:
    if store_kind != "postgres":
        pytest.skip("the plan checked is PostgreSQL's")
    engine = make_engine()
    engine.load_prices(example_catalog, at("2026-01-01"), at("2026-01-01"))
    for account in ("u", "v"):
        engine.create_account(account, T0)
        engine.add_grant(account, 10**12, "addon", T0)
        engine.record_batch([{"id": f"{account}{i}", "account_id": account, "model": "gpt-4o-mini",
                              "input_tokens": 10, "timestamp": format_instant(T0 + i * 1_000_000)}
                             for i in range(3_000)], T0 + 3_600_000_000)
    with engine.store.engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.exec_driver_sql("SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
                                    "WHERE relname = 'events'").one() == (None, None)
    first, mark = engine.usage_page("u", limit=100)
    for _ in range(10):
        _, mark = engine.usage_page("u", limit=100, after=mark)
    plans = _plans(engine, lambda: (engine.usage_page("u", limit=100),
                                    engine.usage_page("u", limit=100, after=mark),
                                    engine.usage_page("u", limit=100, model="gpt-4o-mini", after=mark),
                                    _first(engine.usage("u"))))
    assert len(plans) == 4
    for plan in plans:
        assert "Index Scan Backward using ix_events_account_ts" in plan, plan
        assert "Sort" not in plan, plan
    assert first[0].event.id == "u2999"
