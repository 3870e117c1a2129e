"""Current consumption (SPEC §9) read from the daily rollup plus the part-days at either end
equals the plain sum of the events in the period, for any bounds; reconcile checks the rollup."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditmeter.engine import Engine, Settings
from tests.conftest import EXAMPLE_CATALOG, EngineFactory, at

DAY = 86_400_000_000
T0 = at("2026-03-01T00:00:00Z")


def _engine_with_usage(make_engine: EngineFactory) -> tuple[Engine, list[tuple[int, int]]]:
    from creditmeter.pricing import load_yaml, parse_catalog

    engine = make_engine(Settings(lateness_window_s=30 * 86_400))
    engine.load_prices(parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text())), T0 - DAY, T0 - DAY)
    engine.create_account("u", T0 - DAY)
    engine.add_grant("u", 10**9, "addon", T0 - DAY)
    rng = random.Random(7)
    now = T0 + 12 * DAY
    batch = []
    for i in range(400):  # timestamps over 10 days, some on exact day boundaries
        ts = T0 + rng.randrange(10) * DAY if i % 10 == 0 else T0 + rng.randrange(10 * DAY)
        batch.append({"id": f"e{i}", "account_id": "u", "model": "gpt-4o-mini",
                      "input_tokens": rng.randrange(1, 50_000), "timestamp": _iso(ts)})
    results = engine.record_batch(batch, now)
    charged = [(r.timestamp_us, r.cost_uc) for r in results]  # type: ignore[union-attr]
    return engine, charged


def _iso(us: int) -> str:
    from creditmeter.timeutil import format_instant

    return format_instant(us) or ""


def test_period_usage_equals_the_events_sum_for_any_bounds(make_engine: EngineFactory) -> None:
    engine, charged = _engine_with_usage(make_engine)
    bounds = st.integers(min_value=T0 - DAY, max_value=T0 + 11 * DAY)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
              derandomize=True)
    @given(bounds, bounds)
    def check(a: int, b: int) -> None:
        start, end = min(a, b), max(a, b)
        expected = sum(cost for ts, cost in charged if start <= ts < end)
        with engine.store.transaction() as tx:
            assert tx.used_between("u", start, end) == expected

    check()
    # Exact day boundaries and the whole range.
    for start, end in ((T0, T0 + DAY), (T0 + DAY - 1, T0 + 2 * DAY + 1), (T0 - DAY, T0 + 11 * DAY)):
        with engine.store.transaction() as tx:
            assert tx.used_between("u", start, end) == sum(c for ts, c in charged if start <= ts < end)
    assert engine.check_invariants() == []


def test_reconcile_notices_a_rollup_that_disagrees_with_the_events(make_engine: EngineFactory) -> None:
    engine, _ = _engine_with_usage(make_engine)
    with engine.store.transaction(write=True) as tx:
        tx.conn.exec_driver_sql("UPDATE usage_days SET cost_uc = cost_uc + 1 "  # type: ignore[attr-defined]
                                f"WHERE day_us = {T0 + 3 * DAY}")
    problems = engine.check_invariants()
    assert any("usage rollup u" in p for p in problems), problems
