"""Allowances, rollover, limits and the policy when credits run out: cases the scenarios miss
(SPEC §12, docs/allowances.md). Every engine test runs on SQLite and on PostgreSQL; the example
catalog prices a ``web_search`` call at 2 credits; every instant is passed explicitly."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from creditmeter.domain import Charge, GrantKind, Hold
from creditmeter.engine import Engine, Usage
from creditmeter.errors import CreditmeterError, InputError
from creditmeter.ids import check_new_id
from creditmeter.plans import parse_plans
from creditmeter.pricing import Catalog
from creditmeter.recurrence import calendar_period
from creditmeter.server import create_app
from creditmeter.timeutil import format_instant
from tests.conftest import EngineFactory, at

ADMIN = "edges-operator-key-" + "k" * 32
CREDIT = 1_000_000
MINUTE = 60 * 1_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

T0 = at("2026-03-02T00:00:00Z")
END = at("2026-04-02T00:00:00Z")  # the end of the first monthly period from T0
P1 = "sub:a-sub@2026-03-02T00:00:00Z"
P2 = "sub:a-sub@2026-04-02T00:00:00Z"
R1 = "rol:a-sub@2026-03-02T00:00:00Z"


def subscribe(engine: Engine, plan: dict[str, Any], account: str = "a", when: int = T0) -> None:
    engine.load_plans(parse_plans({"plans": [plan]}), when)
    engine.create_account(account, when)
    engine.subscribe(account, plan["id"], when, subscription_id=f"{account}-sub")


def monthly(**extra: Any) -> dict[str, Any]:
    return {"id": "p", "kind": "subscription", "name": "Plus", "credits": 100, "period": "month", **extra}


def use(engine: Engine, event_id: str, credits: int, when: int, now: int | None = None,
        account: str = "a") -> Charge:
    assert credits % 2 == 0
    return engine.record({"id": event_id, "account_id": account, "timestamp": format_instant(when),
                          "quantities": {"web_search": credits // 2}}, when if now is None else now)


def searches(credits: int) -> Usage:
    assert credits % 2 == 0
    return Usage(None, quantities=(("web_search", credits // 2),))


def parts(charge: Charge) -> dict[str, int]:
    return {p.grant_id: p.amount_uc for p in charge.allocations}


def rollovers(engine: Engine, account: str, when: int) -> list[Any]:
    return [p for p in engine.balance(account, when).packages if p.grant.kind is GrantKind.ROLLOVER]


# -- a settle is a write that needs the running period's package -----------------------------------

def test_a_settle_after_the_period_boundary_draws_on_the_new_periods_package(engine: Engine) -> None:
    subscribe(engine, monthly())
    hold = engine.reserve("a", 10 * CREDIT, END - MINUTE, hold_id="h1", ttl_s=600)
    assert isinstance(hold, Hold)
    # The request ends a minute into the new period, costing 30: 10 from its hold, and 20 from
    # the new period's package, usable at its first µs "whether or not tick ran".
    charge = engine.settle("h1", searches(30), END + MINUTE)
    assert charge.overage_uc == 0
    assert parts(charge) == {P1: 10 * CREDIT, P2: 20 * CREDIT}


# -- rollover --------------------------------------------------------------------------------------

def test_what_a_hold_in_flight_at_the_period_end_gives_back_is_not_rolled_over(engine: Engine) -> None:
    subscribe(engine, monthly(rollover={"max_percent": 100}))
    assert isinstance(engine.reserve("a", 10 * CREDIT, END - MINUTE, hold_id="h1", ttl_s=600), Hold)
    # Settled after the end for 2 of the 10 held: the 8 it gives back expire with the period
    # ("Credits held at a period's end ... are not rolled over"). No other write in between.
    engine.settle("h1", searches(2), END + MINUTE)
    [rolled] = rollovers(engine, "a", END + HOUR)
    assert rolled.grant.amount_uc == 90 * CREDIT  # 100 − the 10 held at the end


def test_a_hold_lapsing_after_the_period_end_does_not_change_the_rollover(engine: Engine) -> None:
    subscribe(engine, monthly(rollover={"max_percent": 100}))
    assert isinstance(engine.reserve("a", 10 * CREDIT, END - MINUTE, hold_id="h1", ttl_s=600), Hold)
    # Its ttl passes 9 minutes into the new period; the first write after the end comes later.
    use(engine, "e1", 2, END + HOUR)
    [rolled] = rollovers(engine, "a", END + HOUR)
    assert rolled.grant.amount_uc == 90 * CREDIT  # as when a write came while it was held


def test_the_rollover_is_used_before_the_next_periods_package_when_an_event_came_early(
        engine: Engine) -> None:
    subscribe(engine, monthly(rollover={"max_percent": 50}))
    # An event stamped a minute into the new period, recorded a minute before it starts (inside
    # the 5 minutes an event may be ahead): it makes the new period's package, before the end.
    use(engine, "e1", 2, END + MINUTE, now=END - MINUTE)
    # The next charge: the rollover was "created first, it is used first" (docs/allowances.md);
    # using the new package first shrinks its own rollover while the old one expires unused.
    assert parts(use(engine, "e2", 2, END + HOUR)) == {R1: 2 * CREDIT}


def test_a_late_event_draws_on_the_rollover_usable_at_its_time_whether_or_not_tick_ran(
        make_engine: EngineFactory, example_catalog: Catalog) -> None:
    daily = monthly(allowances=[{"id": "day", "every": "1d", "credits": 10, "calendar": "UTC",
                                 "rollover": {"max_credits": 5}}])
    charged = []
    for tick in (False, True):
        engine = make_engine()
        engine.load_prices(example_catalog, at("2026-01-01"), at("2026-01-01"))
        subscribe(engine, daily)
        if tick:
            engine.tick(T0 + DAY + HOUR)  # during day 2: day 1's rollover (5) is made
        # Day 4: an event of day 2 comes late (inside the 7-day lateness window).
        late = use(engine, "e1", 14, T0 + DAY + 12 * HOUR, now=T0 + 3 * DAY + HOUR)
        charged.append(parts(late))
    # At its time, day 1's rollover was usable (and used first): 5 from it, 9 from day 2.
    expected = {"rol:a-sub@2026-03-02T00:00:00Z:day": 5 * CREDIT,
                "sub:a-sub@2026-03-03T00:00:00Z:day": 9 * CREDIT}
    assert charged == [expected, expected]


def test_a_cancelled_subscription_gives_no_rollover_after_it_ended(engine: Engine) -> None:
    subscribe(engine, monthly(rollover={"max_percent": 50}))
    engine.cancel_subscription("a-sub", T0 + HOUR)
    after = engine.balance("a", END + HOUR)
    assert after.subscription is None
    # "Cancelling ends the allowances with the subscription": nothing of it is usable after.
    assert (after.available_uc, [p.grant.id for p in after.packages if p.remaining_uc]) == (0, [])


def test_a_trials_allowance_gives_no_rollover_after_the_trial(engine: Engine) -> None:
    subscribe(engine, {"id": "t", "kind": "trial", "name": "Trial", "credits": 5, "valid_days": 3,
                       "allowances": [{"id": "day", "every": "1d", "credits": 10, "calendar": "UTC",
                                       "rollover": {"max_credits": 5}}]})
    ended = T0 + 3 * DAY
    # On its last day: the trial's 5, the day's 10 and the 5 day 2 rolled over.
    assert engine.balance("a", ended - 1).available_uc == 20 * CREDIT
    after = engine.balance("a", ended + HOUR)
    assert (after.available_uc, [p.grant.id for p in after.packages if p.remaining_uc]) == (0, [])


# -- every command that loads an account makes what its terms owe -----------------------------------

def test_quota_can_be_added_from_a_new_periods_pool_credits_before_any_tick(engine: Engine) -> None:
    engine.load_plans(parse_plans({"plans": [{"id": "ent", "kind": "enterprise", "name": "Team",
                                              "credits": 10, "period": "month"}]}), T0)
    engine.create_account("co", T0, kind="enterprise")
    engine.create_account("mo", T0)
    engine.add_member("co", "mo", T0)
    engine.subscribe("co", "ent", T0, subscription_id="co-sub", seats=2)
    later = END + HOUR  # a new month; no tick has run
    assert engine.balance("co", later).available_uc == 20 * CREDIT  # shown to the admin
    package = engine.allocate("co", "mo", 5 * CREDIT, later, allocation_id="q1")
    assert package.remaining_uc == 5 * CREDIT


# -- periods ---------------------------------------------------------------------------------------

def test_a_calendar_allowance_of_more_than_24_hours_is_not_granted_daily() -> None:
    # "48h" on a calendar: either refused (hours are slots of the local day) or 48 hours long;
    # never a package every day, twice what the plan sells.
    data = {"plans": [monthly(allowances=[{"id": "x", "every": "48h", "credits": 10, "calendar": "UTC"}])]}
    try:
        catalog = parse_plans(data)
    except InputError as refused:
        assert refused.field == "plans[0].allowances[0].every"
        return
    every = catalog.plans[0].allowances[0].every
    start, end = calendar_period(every, "UTC", T0 + HOUR)
    assert end - start == 48 * HOUR


# -- bad input -------------------------------------------------------------------------------------

def test_a_limits_bad_calendar_names_the_calendar_field() -> None:
    with pytest.raises(InputError) as caught:
        parse_plans({"plans": [monthly(limits=[{"window": "1d", "credits": 5, "calendar": "Mars/Base"}])]})
    assert caught.value.field == "plans[0].limits[0].calendar"


def test_a_hold_with_an_overlong_key_id_is_refused_naming_it(engine: Engine) -> None:
    subscribe(engine, monthly())
    with pytest.raises(InputError) as caught:
        engine.reserve("a", CREDIT, T0 + HOUR, hold_id="h1", key_id="k" * 100)
    assert caught.value.field == "key_id"
    assert engine.balance("a", T0 + HOUR).held_uc == 0


def test_the_policy_read_checks_its_instant(engine: Engine) -> None:
    subscribe(engine, monthly())
    for bad in (-1, "x", 2**70):
        with pytest.raises(InputError) as caught:
            engine.out_of_credits("a", bad)  # type: ignore[arg-type]
        assert caught.value.field == "at"


def test_an_allowances_package_can_be_voided_over_the_api(engine: Engine) -> None:
    # ids.py: a package id "works unescaped in a URL path segment". An allowance's package id
    # (and its rollover's) holds a '/': POST /api/grants/{grant_id}/void cannot reach it (404,
    # percent-encoded or not), so an operator cannot refund it over HTTP.
    subscribe(engine, monthly(allowances=[{"id": "day", "every": "1d", "credits": 5}]))
    day1 = "sub:a-sub@2026-03-02T00:00:00Z:day"
    assert day1 in [p.grant.id for p in engine.balance("a", T0 + HOUR).packages]
    with TestClient(create_app(engine, admin_key=ADMIN, clock=lambda: T0 + HOUR)) as api:
        answer = api.post(f"/api/grants/{quote(day1, safe='')}/void",
                          headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200, answer.text
    assert check_new_id(day1, "id") == day1


def test_a_limits_key_and_enterprise_must_be_ids(engine: Engine) -> None:
    subscribe(engine, monthly())
    for extra, field in (({"scope": "key", "key_id": 123}, "key_id"),
                         ({"scope": "member", "enterprise_id": 5}, "enterprise_id")):
        with pytest.raises(CreditmeterError) as caught:  # not the driver's error (PostgreSQL)
            engine.set_limit("a", "1d", 5, T0 + HOUR, **extra)  # type: ignore[arg-type]
        assert getattr(caught.value, "field", None) == field
