"""Histories the allowance oracle (``test_allowances_oracle.py``) found the engine getting wrong,
written out as plain scenarios on the engine alone (SPEC §12, §4, §5).

Each says what the engine must answer, per the oracle's rules. Where the fault is that the answer
depends on when the account happened to be written (the package of a period "is usable at t
whether or not tick ran"), the test also runs the same history with a tick at the period
boundary, and both must answer the same. The last one pins the order the oracle assumes where a
rollover and the next period's package tie (the engine keeps it, with a tick or without).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from creditmeter.domain import Charge, Hold, Refused
from creditmeter.engine import Engine, Usage
from creditmeter.plans import parse_plans
from tests.conftest import Engines
from tests.properties.allowance_oracle import DAY, HOUR, OCharge, iso, us_of
from tests.properties.test_allowances_oracle import CATALOG, MINUTE, charge_of, packages

T = us_of(datetime.fromisoformat("2026-11-10T00:00:00+00:00"))
DAILY = {"id": "daily", "every": "1d", "credits": "0.00005"}  # 50 µc a day, from the start


def subscribed(make_engine: Engines, **plan: Any) -> Engine:
    engine = make_engine()
    engine.load_prices(CATALOG, T - 30 * DAY, T - 30 * DAY)
    engine.load_plans(parse_plans({"plans": [{"id": "p", "kind": "subscription", "name": "Pro",
                                              "period": "month", **plan}]}), T - DAY)
    engine.create_account("a", T - DAY)
    engine.subscribe("a", "p", T, subscription_id="s1")
    return engine


def spend(engine: Engine, event_id: str, cost_uc: int, at_us: int) -> Charge:
    """An event costing ``cost_uc`` (a multiple of 3: output tokens at 3 µc), timestamped now."""
    assert cost_uc % 3 == 0
    return engine.record({"id": event_id, "account_id": "a", "model": "m",
                          "output_tokens": cost_uc // 3}, at_us)


def day_package(start: int) -> str:
    return f"sub:s1@{iso(start)}:daily"


MONTH_PACKAGE = f"sub:s1@{iso(T)}"


def test_a_hold_past_the_credits_under_the_overage_policy_breaks_no_invariant(make_engine: Engines) -> None:
    """Under ``overage``, and for a fallback, a hold may hold more than the credits it took: that
    is not a broken hold, and ``reconcile`` must not say so."""
    engine = subscribed(make_engine, credits="0.0001", when_out_of_credits={"overage": "0.0005"})
    hold = engine.reserve("a", 300, T + HOUR, hold_id="h1")
    assert isinstance(hold, Hold) and sum(p.amount_uc for p in hold.parts) == 100
    assert engine.check_invariants() == []

    engine = subscribed(make_engine, credits="0.0001", when_out_of_credits={"fallback": "basic"})
    refused = engine.reserve("a", 300, T + HOUR, hold_id="h1")
    assert isinstance(refused, Refused) and refused.fallback_model == "basic"
    hold, estimate = engine.reserve_estimate("a", "basic", 0, 300, T + HOUR, hold_id="h2", fallback=True)
    assert isinstance(hold, Hold) and estimate == 300 and sum(p.amount_uc for p in hold.parts) == 100
    assert engine.check_invariants() == []


def test_a_settle_in_a_period_nothing_has_written_yet_uses_that_periods_package(make_engine: Engines,
                                                                                ) -> None:
    """The package of the period containing t is usable at t whether or not anything ran at the
    period's start: a settle just after midnight draws on the new day's allowance, not overage."""
    charges = []
    for tick_at_midnight in (False, True):
        engine = subscribed(make_engine, credits="0.0001", allowances=[DAILY])
        hold = engine.reserve("a", 10, T + DAY - 10 * MINUTE, ttl_s=3600, hold_id="h1")
        assert isinstance(hold, Hold)
        if tick_at_midnight:
            engine.tick(T + DAY)
        charges.append(charge_of(engine.settle("h1", Usage("m", 0, 50), T + DAY + 10 * MINUTE)))
    assert charges[0] == charges[1] == OCharge(150, {day_package(T): 10, day_package(T + DAY): 50,
                                                     MONTH_PACKAGE: 90}, 0)


def test_overage_is_paid_by_the_next_periods_package_whether_or_not_anything_ran(make_engine: Engines,
                                                                                ) -> None:
    """Overage at day 1 is paid by day 2's allowance, at day 2's start, even when nothing wrote the
    account that day: day 4 still has all of its own."""
    balances = []
    for tick_each_midnight in (False, True):
        engine = subscribed(make_engine, credits="0.0001", allowances=[DAILY])
        assert spend(engine, "e1", 180, T + HOUR).overage_uc == 30
        if tick_each_midnight:
            for day in (1, 2, 3):
                engine.tick(T + day * DAY)
        balances.append(engine.balance("a", T + 3 * DAY + HOUR))
    assert [b.available_uc for b in balances] == [50, 50]
    assert [b.overage_uc for b in balances] == [0, 0]


def test_a_late_event_draws_on_the_rollover_usable_at_its_time_whether_or_not_anything_ran(
        make_engine: Engines) -> None:
    """Day 1 leaves its 50 µc unused; they carry over into day 2. An event of day 2 recorded late
    on day 4 draws on that rollover (then day 2's own 50, then the month's), as it does when a
    tick ran each midnight."""
    months = []
    for tick_each_midnight in (False, True):
        engine = subscribed(make_engine, credits="0.0001",
                            allowances=[{**DAILY, "rollover": {"max_percent": 100}}])
        if tick_each_midnight:
            for day in (1, 2, 3):
                engine.tick(T + day * DAY)
        late = engine.record({"id": "e1", "account_id": "a", "model": "m", "output_tokens": 40,
                              "timestamp": iso(T + DAY + 12 * HOUR)}, T + 3 * DAY + HOUR)
        assert late.overage_uc == 0
        months.append(next(p.remaining_uc for p in engine.balance("a", T + 3 * DAY + HOUR).packages
                           if p.grant.id == MONTH_PACKAGE))
    assert months == [80, 80]


def test_the_rollover_is_what_the_period_left_unused_at_its_end(make_engine: Engines) -> None:
    """A day's allowance fully held by a request in flight at midnight leaves nothing to carry
    over; what the hold gives back after midnight expires with the day, as it does when the hold
    leaves 1 µc unheld (then 1 µc carries over). Rolling the given-back credits over at whatever
    write comes next makes leaving 1 µc more unused carry over less."""
    rolled = []
    for held in (50, 49):
        engine = subscribed(make_engine, credits="0.0001",
                            allowances=[{**DAILY, "rollover": {"max_percent": 100}}])
        assert isinstance(engine.reserve("a", held, T + DAY - 10 * MINUTE, ttl_s=3600, hold_id="h1"), Hold)
        engine.tick(T + DAY)  # exactly on time; the hold expires at 00:50
        balance = engine.balance("a", T + DAY + 2 * HOUR)
        rolled.append(sum(p.grant.amount_uc for p in balance.packages if p.grant.kind.value == "rollover"))
    assert rolled == [0, 1]


def test_the_rollover_does_not_depend_on_when_the_account_is_next_written(make_engine: Engines) -> None:
    """The same history with and without a tick at midnight: a hold open across midnight expires
    at 00:50, the account is next written at 02:00. The rollover is made once the day is over."""
    balances = []
    for tick_at_midnight in (True, False):
        engine = subscribed(make_engine, credits="0.0001",
                            allowances=[{**DAILY, "rollover": {"max_percent": 100}}])
        assert isinstance(engine.reserve("a", 49, T + DAY - 10 * MINUTE, ttl_s=3600, hold_id="h1"), Hold)
        if tick_at_midnight:
            engine.tick(T + DAY)
        engine.tick(T + DAY + 2 * HOUR)
        balances.append(packages(engine.balance("a", T + DAY + 2 * HOUR)))
    assert balances[0] == balances[1]
    assert [row[2] for row in balances[0] if row[1] == "rollover"] == [1]


def test_a_daily_limit_frees_up_when_the_next_day_has_room(make_engine: Engines) -> None:
    """At 23:59, 180 µc of today's 300 are used and 270 are already recorded for 00:01 (an event
    may be timestamped up to 5 minutes ahead). A hold of 150 is refused; at midnight the new day
    holds 270 already, so enough frees up only the next midnight."""
    engine = subscribed(make_engine, credits="0.003", limits=[{"window": "1d", "credits": "0.0003"}])
    now = T + DAY - MINUTE
    spend(engine, "e1", 180, now)
    engine.record({"id": "e2", "account_id": "a", "model": "m", "output_tokens": 90,
                   "timestamp": iso(now + 2 * MINUTE)}, now)
    refused = engine.reserve("a", 150, now, hold_id="h1")
    assert isinstance(refused, Refused) and refused.code == "limit_reached"
    assert (refused.limit.used_uc, refused.limit.frees_at_us) == (180, T + 2 * DAY)


def test_the_rollover_into_a_month_is_used_first_whether_or_not_tick_renewed_it(make_engine: Engines,
                                                                               ) -> None:
    """Month 1 leaves 79 µc, 50 carry over into month 2 and expire with it. The rollover and month
    2's package tie in the burn-down order; the rollover goes first (it is made once month 1 is
    over, before month 2's package, and it cannot roll over again), so month 2 leaves 90 of its
    own and 50 of them carry into month 3, whether a tick renewed the subscription or not."""
    month2 = us_of(datetime.fromisoformat("2026-12-10T00:00:00+00:00"))
    month3 = us_of(datetime.fromisoformat("2027-01-10T00:00:00+00:00"))
    results = []
    for tick_at_renewal in (False, True):
        engine = subscribed(make_engine, credits="0.0001", rollover={"max_percent": 50})
        spend(engine, "e1", 21, T + HOUR)
        if tick_at_renewal:
            engine.tick(month2)
        spend(engine, "e2", 60, month2 + HOUR)
        balance = engine.balance("a", month3 + HOUR)
        results.append([(row[0], row[2], row[5]) for row in packages(balance) if row[4] > month3])
    assert results[0] == results[1] == [(f"rol:s1@{iso(month2)}", 50, 0), (f"sub:s1@{iso(month3)}", 100, 0)]
