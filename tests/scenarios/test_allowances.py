"""Allowances, rollover, limits and what happens when credits run out, as scenarios (SPEC §12).

Every test runs on SQLite and on PostgreSQL (the ``engine`` fixture) with the example price
catalog, where a ``web_search`` call costs 2 credits; every instant is passed explicitly.
"""

from __future__ import annotations

from typing import Any

import pytest

from creditmeter.domain import GrantKind, Hold, Refused
from creditmeter.engine import Engine, Usage
from creditmeter.errors import InputError, NotFound
from creditmeter.plans import parse_plans
from creditmeter.recurrence import calendar_period, parse_every
from creditmeter.timeutil import format_instant
from tests.conftest import at

CREDIT = 1_000_000
HOUR = 3_600 * 1_000_000
DAY = 24 * HOUR


def plan(**extra: Any) -> dict[str, Any]:
    return {"id": "p", "kind": "subscription", "name": "Plus", "credits": 100, "period": "month", **extra}


def subscribe(engine: Engine, account: str, when: int, **extra: Any) -> None:
    engine.load_plans(parse_plans({"plans": [plan(**extra)]}), when)
    engine.create_account(account, when)
    engine.subscribe(account, "p", when, subscription_id=f"{account}-sub")


def use(engine: Engine, event_id: str, account: str, credits: int, when: int, now: int | None = None):  # noqa: ANN201
    assert credits % 2 == 0
    return engine.record({"id": event_id, "account_id": account, "timestamp": format_instant(when),
                          "quantities": {"web_search": credits // 2}}, when if now is None else now)


def parts(charge: Any) -> dict[str, int]:
    return {p.grant_id: p.amount_uc // CREDIT for p in charge.allocations}


def test_a_late_event_in_a_period_draws_on_its_rollover_as_if_it_had_come_in_time(engine: Engine) -> None:
    t0 = at("2026-03-02T00:00:00Z")
    subscribe(engine, "ann", t0, allowances=[
        {"id": "day", "every": "1d", "credits": 50, "calendar": "UTC",
         "rollover": {"max_credits": 20, "lasts": 1}}])
    day1, day2 = "sub:ann-sub@2026-03-02T00:00:00Z:day", "sub:ann-sub@2026-03-03T00:00:00Z:day"
    assert parts(use(engine, "e1", "ann", 10, t0 + HOUR)) == {day1: 10}
    # The first write of day 2 makes day 1's rollover: 40 unused, capped at 20. It expires with
    # day 2's package and was there first: it is used first.
    rol1 = "rol:ann-sub@2026-03-02T00:00:00Z:day"
    assert parts(use(engine, "e2", "ann", 2, t0 + DAY + HOUR)) == {rol1: 2}
    rollover = [p for p in engine.balance("ann", t0 + DAY + HOUR).packages
                if p.grant.kind is GrantKind.ROLLOVER]
    assert [(p.grant.amount_uc, p.grant.effective_at_us, p.grant.expires_at_us) for p in rollover] == [
        (20 * CREDIT, t0 + DAY, t0 + 2 * DAY)]
    # A late event of day 1 costing 26: day 1's 20 left, then 6 of its rollover. Had it come in
    # time, day 1 would have left 50 − 36 = 14 (under the cap of 20), of which day 2 used 2: 12.
    late = use(engine, "e3", "ann", 26, t0 + 2 * HOUR, now=t0 + DAY + 2 * HOUR)
    assert parts(late) == {day1: 20, rol1: 6}
    after = engine.balance("ann", t0 + DAY + 2 * HOUR)
    rolled = next(p for p in after.packages if p.grant.kind is GrantKind.ROLLOVER)
    assert rolled.remaining_uc == 12 * CREDIT
    assert next(a for a in after.allowances if a.allowance.id == "day").package.grant.id == day2
    # Ticking again, late, makes nothing twice.
    for when in (t0 + DAY + 3 * HOUR, t0 + DAY + 3 * HOUR, t0 + DAY + 20 * HOUR):
        engine.tick(when)
    later = engine.balance("ann", t0 + DAY + 21 * HOUR).packages
    assert sum(p.grant.kind is GrantKind.ROLLOVER for p in later) == 1
    assert engine.check_invariants() == []


def test_overage_goes_on_up_to_the_cap_and_is_paid_by_the_next_credits(engine: Engine) -> None:
    t0 = at("2026-03-02T00:00:00Z")
    subscribe(engine, "bo", t0, credits=4, when_out_of_credits={"overage": 10})
    first = engine.reserve("bo", 8 * CREDIT, t0, hold_id="h1")
    assert isinstance(first, Hold)  # 4 covered, 4 uncovered
    assert isinstance(engine.reserve("bo", 6 * CREDIT, t0, hold_id="h2"), Hold)  # 10 uncovered in all
    refused = engine.reserve("bo", 2 * CREDIT, t0, hold_id="h3")
    assert isinstance(refused, Refused) and "overage cap" in refused.reason
    engine.release("h2", t0)
    charge = engine.settle("h1", Usage(None, quantities=(("web_search", 4),)), t0 + 1)
    assert (charge.cost_uc, charge.overage_uc) == (8 * CREDIT, 4 * CREDIT)
    # The next month's credits pay the overage off first, at the period's first µs, tick or not.
    nxt = at("2026-04-02T00:00:00Z")
    assert isinstance(engine.reserve("bo", 2 * CREDIT, nxt - 1, hold_id="h4"), Hold)  # 4 + 2 ≤ 10
    engine.release("h4", nxt - 1)
    engine.tick(nxt)
    balance = engine.balance("bo", nxt)
    assert (balance.overage_uc, balance.available_uc) == (0, 0)
    assert engine.check_invariants() == []


def test_fallback_is_named_when_credits_run_out_and_capped_per_day(engine: Engine) -> None:
    t0 = at("2026-03-02T10:00:00Z")
    subscribe(engine, "cy", t0, credits=1, when_out_of_credits={"fallback": "gpt-4o-mini", "daily_cap": 2})
    refused, _ = engine.reserve_estimate("cy", "gpt-4o", 100_000, 100_000, t0, hold_id="r1")
    assert isinstance(refused, Refused) and refused.fallback_model == "gpt-4o-mini"
    assert refused.code == "insufficient_credits"
    held = [engine.reserve_estimate("cy", "gpt-4o-mini", 100_000, 100_000, t0 + i, hold_id=f"f{i}",
                                    fallback=True)[0] for i in range(3)]
    assert [type(h).__name__ for h in held] == ["Hold", "Hold", "Refused"]
    assert isinstance(held[0], Hold) and held[0].fallback
    assert isinstance(held[2], Refused) and "used up for today" in held[2].reason
    # A new UTC day: the fallback runs again.
    assert isinstance(engine.reserve_estimate("cy", "gpt-4o-mini", 10, 10, at("2026-03-03T00:00:00Z"),
                                              hold_id="f9", fallback=True)[0], Hold)
    # Only the policy's fallback model falls back: another is refused as any request.
    other, _ = engine.reserve_estimate("cy", "gpt-4o", 100_000, 100_000, t0, hold_id="x", fallback=True)
    assert isinstance(other, Refused) and other.fallback_model == "gpt-4o-mini"


def test_a_key_limit_counts_only_that_keys_holds(engine: Engine) -> None:
    t0 = at("2026-03-02T00:00:00Z")
    subscribe(engine, "di", t0)
    key_ids = [engine.create_key("di", t0, f"k{i}")[0].id for i in range(2)]
    engine.set_limit("di", "rolling 5h", 10, t0, scope="key", key_id=key_ids[0], source="owner")
    assert isinstance(engine.reserve("di", 8 * CREDIT, t0, hold_id="a", key_id=key_ids[0]), Hold)
    refused = engine.reserve("di", 4 * CREDIT, t0, hold_id="b", key_id=key_ids[0])
    assert isinstance(refused, Refused) and refused.code == "limit_reached"
    assert refused.limit.held_uc == 8 * CREDIT and refused.limit.frees_at_us is None  # held, not used
    assert isinstance(engine.reserve("di", 4 * CREDIT, t0, hold_id="c", key_id=key_ids[1]), Hold)
    assert isinstance(engine.reserve("di", 4 * CREDIT, t0, hold_id="d"), Hold)
    with pytest.raises(NotFound) as caught:
        engine.set_limit("di", "1d", 5, t0, scope="key", key_id="nope")
    assert caught.value.field == "key_id"


def test_cancelling_ends_the_allowances_with_the_subscription(engine: Engine) -> None:
    t0 = at("2026-03-02T00:00:00Z")
    subscribe(engine, "ed", t0, allowances=[{"id": "day", "every": "1d", "credits": 5}])
    engine.cancel_subscription("ed-sub", t0 + HOUR)
    end = at("2026-04-02T00:00:00Z")
    assert [a.allowance.id for a in engine.balance("ed", end - 1).allowances] == ["", "day"]
    assert engine.balance("ed", end).allowances == ()
    assert engine.balance("ed", end).available_uc == 0


def test_calendar_days_follow_daylight_saving_time() -> None:
    # New York springs forward on 2026-03-08: that local day is 23 hours long.
    start, end = calendar_period(parse_every("1d", "every"), "America/New_York", at("2026-03-08T12:00:00Z"))
    assert (format_instant(start), end - start) == ("2026-03-08T05:00:00Z", 23 * HOUR)
    week = calendar_period(parse_every("7d", "every"), "UTC", at("2026-03-05T12:00:00Z"))
    assert format_instant(week[0]) == "2026-03-02T00:00:00Z"  # a Monday
    month = calendar_period(parse_every("1mo", "every"), "Asia/Shanghai", at("2026-02-28T17:00:00Z"))
    assert (format_instant(month[0]), format_instant(month[1])) == ("2026-02-28T16:00:00Z",
                                                                    "2026-03-31T16:00:00Z")


@pytest.mark.parametrize(("extra", "field"), [
    ({"allowances": [{"id": "d", "every": "1 fortnight", "credits": 5}]}, "plans[0].allowances[0].every"),
    ({"allowances": [{"id": "d", "every": "1d", "credits": -5}]}, "plans[0].allowances[0].credits"),
    ({"allowances": [{"id": "d", "every": "1d", "credits": 5, "calendar": "Mars/Base"}]},
     "plans[0].allowances[0].calendar"),
    ({"rollover": {"lasts": 1}}, "plans[0].rollover"),
    ({"limits": [{"window": "rolling 1mo", "credits": 5}]}, "plans[0].limits[0].window"),
    ({"limits": [{"window": "1d"}]}, "plans[0].limits[0].credits"),
    ({"when_out_of_credits": {"overage": 10, "fallback": "m"}}, "plans[0].when_out_of_credits"),
    ({"when_out_of_credits": {"fallback": "m", "daily_cap": 0}}, "plans[0].when_out_of_credits.daily_cap"),
])
def test_bad_plan_terms_name_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_plans({"plans": [plan(**extra)]})
    assert caught.value.field == field


def test_a_pack_has_no_allowances() -> None:
    with pytest.raises(InputError) as caught:
        parse_plans({"plans": [{"id": "a", "kind": "addon", "name": "A", "credits": 5, "valid_days": 30,
                                "limits": [{"window": "1d", "credits": 1}]}]})
    assert caught.value.field == "plans[0].limits"


def test_plan_terms_survive_their_file_form() -> None:
    catalog = parse_plans({"plans": [plan(
        rollover={"max_percent": 40, "max_credits": 200, "lasts": 1},
        allowances=[{"id": "daily", "every": "1d", "credits": 50, "calendar": "Asia/Shanghai"}],
        limits=[{"window": "rolling 5h", "credits": 300}],
        when_out_of_credits={"fallback": "basic-model", "daily_cap": 50})]})
    again = parse_plans(catalog.to_dict())
    assert again == catalog
    assert again.plans[0].when_out.describe() == (
        "when your credits run out, requests use basic-model, up to 50 a day")


def test_a_member_limit_counts_what_the_enterprises_quota_paid(engine: Engine) -> None:
    t0 = at("2026-03-02T00:00:00Z")
    engine.create_account("acme", t0, kind="enterprise")
    engine.add_grant("acme", 500 * CREDIT, "adjustment", t0, grant_id="pool")
    engine.create_account("mia", t0)
    engine.add_member("acme", "mia", t0)
    engine.allocate("acme", "mia", 100 * CREDIT, t0)
    engine.set_limit("mia", "1d", 30, t0, scope="member", enterprise_id="acme", source="admin")
    use(engine, "m1", "mia", 20, t0 + HOUR)
    refused = engine.reserve("mia", 12 * CREDIT, t0 + 2 * HOUR, hold_id="m2")
    assert isinstance(refused, Refused) and refused.code == "limit_reached"
    assert (refused.limit.used_uc, refused.limit.frees_at_us) == (20 * CREDIT, at("2026-03-03T00:00:00Z"))
    assert isinstance(engine.reserve("mia", 10 * CREDIT, t0 + 2 * HOUR, hold_id="m3"), Hold)
    # The next UTC day the window is new.
    assert isinstance(engine.reserve("mia", 20 * CREDIT, at("2026-03-03T00:00:00Z"), hold_id="m4"), Hold)
    with pytest.raises(InputError) as caught:
        engine.set_limit("mia", "1d", 30, t0, scope="member", enterprise_id="other", source="admin")
    assert caught.value.field == "enterprise_id"
