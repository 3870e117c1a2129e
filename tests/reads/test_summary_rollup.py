"""The usage summary read from the daily rollup (whole days, per model) and the events (the
part-days at either end) gives the answer of the events alone, by day or by model, of every
model or of one, for any bounds (UTC days), on both stores; reconcile checks the rollup's
tokens."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditmeter.domain import StoredEvent, SummaryRow
from creditmeter.engine import Engine, Settings
from creditmeter.timeutil import format_instant
from tests.conftest import EXAMPLE_CATALOG, EngineFactory, at

DAY = 86_400_000_000
T0 = at("2026-03-01T00:00:00Z")
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4")


def _engine_with_usage(make_engine: EngineFactory) -> Engine:
    from creditmeter.pricing import load_yaml, parse_catalog

    engine = make_engine(Settings(lateness_window_s=30 * 86_400))
    engine.load_prices(parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text())), T0 - DAY, T0 - DAY)
    rng = random.Random(11)
    for account in ("u", "v"):  # v's events share u's days: a summary of u counts none of them
        engine.create_account(account, T0 - DAY)
        engine.add_grant(account, 10**12, "addon", T0 - DAY)
        batch = []
        for i in range(300):  # over 10 days, some on exact day boundaries and their last µs
            ts = (T0 + rng.randrange(11) * DAY - rng.randrange(2) if i % 10 == 0
                  else T0 + rng.randrange(10 * DAY))
            event = {"id": f"{account}{i}", "account_id": account, "timestamp": format_instant(ts),
                     "input_tokens": rng.randrange(1, 50_000), "output_tokens": rng.randrange(0, 3_000),
                     "cached_input_tokens": rng.randrange(0, 2), "cache_write_tokens": rng.randrange(0, 500),
                     "reasoning_tokens": rng.randrange(0, 900), "cache_write_1h_tokens": rng.randrange(0, 50),
                     "model": MODELS[i % len(MODELS)]}
            batch.append(event)
        assert all(r.status == "charged" for r in engine.record_batch(batch, T0 + 12 * DAY))
    return engine


def _oracle(stored: Sequence[StoredEvent], from_us: int | None, to_us: int | None,
            model: str | None, group_by: str) -> list[SummaryRow]:
    """The summary added up in Python from the events, one by one."""
    groups: dict[int | str, list[int]] = {}
    for s in stored:
        ts, e = s.charge.timestamp_us, s.event
        if (from_us is not None and ts < from_us) or (to_us is not None and ts >= to_us):
            continue
        if model is not None and e.model != model:
            continue
        key: int | str = ts - ts % DAY if group_by == "day" else (e.model or "")
        totals = groups.setdefault(key, [0] * 8)
        for i, v in enumerate((1, e.input_tokens, e.output_tokens, e.cached_input_tokens,
                               e.cache_write_tokens, e.reasoning_tokens, e.cache_write_1h_tokens,
                               s.charge.cost_uc)):
            totals[i] += v
    return [SummaryRow(k, *groups[k]) for k in sorted(groups)]  # type: ignore[type-var]


def test_the_summary_equals_the_events_for_any_bounds_model_and_grouping(make_engine: EngineFactory) -> None:
    engine = _engine_with_usage(make_engine)
    stored = list(engine.usage("u"))
    bounds = st.one_of(st.none(), st.integers(min_value=T0 - DAY, max_value=T0 + 11 * DAY),
                       st.integers(min_value=-1, max_value=11).map(lambda d: T0 + d * DAY),
                       st.integers(min_value=0, max_value=11).map(lambda d: T0 + d * DAY - 1))
    models = st.sampled_from([None, *MODELS, "nothing-like-it"])

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
              derandomize=True)
    @given(bounds, bounds, models, st.sampled_from(["day", "model"]))
    def check(from_us: int | None, to_us: int | None, model: str | None, group_by: str) -> None:
        expected = _oracle(stored, from_us, to_us, model, group_by)
        assert engine.usage_summary("u", group_by, from_us=from_us, to_us=to_us, model=model) == expected
        with engine.store.transaction() as tx:  # the events alone (how it was read before)
            old = tx._summary_of_events(["u"], from_us, to_us, model, group_by)  # type: ignore[attr-defined]
            assert old == expected

    check()


def test_part_days_at_both_ends_and_within_one_day(make_engine: EngineFactory) -> None:
    engine = _engine_with_usage(make_engine)
    stored = list(engine.usage("u"))
    table = [(None, None), (T0, T0 + 10 * DAY), (T0 + 1, T0 + 10 * DAY - 1),
             (T0 + DAY // 2, T0 + 5 * DAY + DAY // 3), (T0 + 3 * DAY - 1, T0 + 3 * DAY + 1),
             (T0 + 2 * DAY + 5, T0 + 2 * DAY + DAY // 2), (T0 + 4 * DAY, T0 + 4 * DAY),
             (T0 + 6 * DAY, T0 + 2 * DAY), (T0 + DAY // 2, None), (None, T0 + 7 * DAY + 17),
             # past the instants any event can have, up to the ends of 64-bit integers
             (-(2**63), 2**63 - 1), (2**63 - 1, None), (None, -(2**63)), (-(2**63), T0 + DAY // 2)]
    for from_us, to_us in table:
        got = engine.usage_summary("u", "day", from_us=from_us, to_us=to_us)
        assert got == _oracle(stored, from_us, to_us, None, "day"), (from_us, to_us)
    ends = engine.usage_summary("u", "day", from_us=T0 + DAY // 2, to_us=T0 + 5 * DAY + DAY // 3)
    assert [r.key for r in ends][:1] == [T0] and ends[-1].key == T0 + 5 * DAY


def test_summaries_by_model_and_of_one_model(make_engine: EngineFactory) -> None:
    engine = _engine_with_usage(make_engine)
    stored = list(engine.usage("u"))
    for from_us, to_us in ((None, None), (T0 + DAY // 3, T0 + 8 * DAY + 7), (T0 + DAY, T0 + 2 * DAY)):
        for model in ("gpt-4o", "gpt-4o-mini", "nothing-like-it", ""):
            got = engine.usage_summary("u", "day", from_us=from_us, to_us=to_us, model=model)
            assert got == _oracle(stored, from_us, to_us, model, "day")
        got = engine.usage_summary("u", "model", from_us=from_us, to_us=to_us)
        assert got == _oracle(stored, from_us, to_us, None, "model")
        assert [r.key for r in got] == ["claude-sonnet-4", "gpt-4o", "gpt-4o-mini"]


def test_the_month_views_read_the_rollup_and_reconcile_checks_its_tokens(make_engine: EngineFactory) -> None:
    """A rollup row changed behind the engine's back shows in the summaries by day, by model and
    of its model (they read it), not in another model's; reconcile names the row."""
    engine = _engine_with_usage(make_engine)
    assert engine.check_invariants() == []
    day, span = T0 + 3 * DAY, {"from_us": T0, "to_us": T0 + 10 * DAY}
    views = [("day", None), ("day", "gpt-4o"), ("day", "gpt-4o-mini"), ("model", None)]
    before = [engine.usage_summary("u", g, model=m, **span) for g, m in views]  # type: ignore[arg-type]
    with engine.store.transaction(write=True) as tx:
        tx.conn.exec_driver_sql("UPDATE usage_days SET reasoning_tokens = reasoning_tokens + 1 "  # type: ignore[attr-defined]
                                f"WHERE account_id = 'u' AND day_us = {day} AND model = 'gpt-4o'")
    after = [engine.usage_summary("u", g, model=m, **span) for g, m in views]  # type: ignore[arg-type]
    changed = [[r.key for r, b in zip(a, b_rows, strict=True) if r.reasoning_tokens != b.reasoning_tokens]
               for a, b_rows in zip(after, before, strict=True)]
    assert changed == [[day], [day], [], ["gpt-4o"]]
    problems = engine.check_invariants()
    assert problems == [f"usage rollup u {day} gpt-4o: its credits, event count or tokens differ "
                        "from the events"], problems
