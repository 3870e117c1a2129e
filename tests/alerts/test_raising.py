"""Alerts raised by the engine's commands (SPEC §13), on SQLite and PostgreSQL: each crossing of
a rule's threshold once, in the transaction of the change that crosses it; renewals, purchases,
cancellations, allocations and refusals by a limit by their commands; expiring packages and ended
subscriptions by ``tick``; auto top-up at most N times a month. The example catalog prices a
``web_search`` call at 2 credits; every instant is passed explicitly."""

from __future__ import annotations

from typing import Any

import pytest

from creditmeter.alert_rules import parse_alert_rules
from creditmeter.alerts import Alert
from creditmeter.domain import Refused
from creditmeter.engine import Engine
from creditmeter.errors import InputError, NotFound
from creditmeter.plans import parse_plans
from creditmeter.timeutil import format_instant
from tests.conftest import at

CREDIT = 1_000_000
HOUR = 3_600 * 1_000_000
DAY = 24 * HOUR
T0 = at("2026-03-02T00:00:00Z")
PERIOD2 = at("2026-04-02T00:00:00Z")

PLANS = [
    {"id": "pro", "kind": "subscription", "name": "Pro", "credits": 100, "period": "month",
     "limits": [{"window": "rolling 5h", "credits": 60}],
     "alerts": [{"usage_reached_percent": 80}, {"usage_reached_percent": 100}, {"balance_below": 15},
                {"expiring_within": "3d"}]},
    {"id": "trial", "kind": "trial", "name": "Trial", "credits": 10, "valid_days": 14},
    {"id": "pack", "kind": "addon", "name": "Add-on 50", "credits": 50, "valid_days": 30},
]


def alerts(engine: Engine, account: str = "a") -> list[Alert]:
    with engine.store.transaction() as tx:
        return [stored[2] for stored in tx.alerts_since(account, 0, 1000)]


def kinds(engine: Engine, account: str = "a") -> list[tuple[str, str]]:
    return [(a.type.value, a.dedupe_key) for a in alerts(engine, account)]


def setup(engine: Engine, plan: str = "pro", account: str = "a") -> None:
    engine.load_plans(parse_plans({"plans": PLANS}), T0 - DAY)
    engine.create_account(account, T0 - DAY)
    engine.subscribe(account, plan, T0, subscription_id=f"{account}-sub")


def use(engine: Engine, event_id: str, credits: int, when: int, account: str = "a") -> None:
    engine.record({"id": event_id, "account_id": account, "timestamp": format_instant(when),
                   "quantities": {"web_search": credits // 2}}, when)


def test_usage_crossing_80_and_100_percent_is_raised_once_each_per_period(engine: Engine) -> None:
    setup(engine)
    use(engine, "e1", 40, T0 + HOUR)
    assert kinds(engine) == []
    use(engine, "e2", 40, T0 + 7 * HOUR)  # 80 of 100: crosses 80%
    p1 = "sub:a-sub@2026-03-02T00:00:00Z"
    assert kinds(engine) == [("credits.usage_reached", f"usage_reached_percent=80:{p1}")]
    use(engine, "e3", 2, T0 + 14 * HOUR)  # still past 80%: nothing new
    use(engine, "e2", 40, T0 + 7 * HOUR)  # a duplicate event raises nothing
    assert len(alerts(engine)) == 1
    use(engine, "e4", 18, T0 + 20 * HOUR)  # 100 of 100: 100%, below 30 credits and depleted
    got = kinds(engine)
    assert got[1:] == [("credits.usage_reached", f"usage_reached_percent=100:{p1}"),
                       ("credits.balance_low", "balance_below=15:2026-03-02T00:00:00Z"),
                       ("credits.depleted", "depleted:2026-03-02T00:00:00Z")]
    first = alerts(engine)[0]
    assert first.at_us == T0 + 7 * HOUR
    assert dict(first.data) == {"rule": "usage_reached_percent=80", "percent": 80, "grant_id": p1,
                                "package_name": first.data["package_name"], "used": "80",
                                "credits": "100", "period_end": "2026-04-02T00:00:00Z"}
    use(engine, "e5", 2, T0 + 26 * HOUR)  # overage starts
    assert kinds(engine)[-1] == ("credits.overage", "overage:2026-03-02T00:00:00Z")
    # The next period: its package is a renewal; crossing 80% there is raised again.
    use(engine, "e6", 80, PERIOD2 + HOUR)
    p2 = "sub:a-sub@2026-04-02T00:00:00Z"
    new = kinds(engine)[5:]
    assert ("subscription.renewed", f"renewed:{p2}") in new
    assert ("credits.usage_reached", f"usage_reached_percent=80:{p2}") in new


def test_a_limit_refusal_is_raised_once_per_window(engine: Engine) -> None:
    setup(engine)
    held = engine.reserve("a", 50 * CREDIT, T0 + HOUR, hold_id="h1", ttl_s=3 * 3600)
    assert not isinstance(held, Refused)
    for n, when in enumerate((T0 + HOUR, T0 + HOUR + 1, T0 + 2 * HOUR)):
        refused = engine.reserve("a", 20 * CREDIT, when, hold_id=f"h{n + 2}")
        assert isinstance(refused, Refused) and refused.code == "limit_reached"
    got = [a for a in alerts(engine) if a.type.value == "limit.reached"]
    assert len(got) == 1
    assert got[0].data["limit_id"] == "plan-1" and got[0].data["window"] == "rolling 5h"
    assert got[0].data["used"] == "0" and got[0].data["held"] == "50"


def test_tick_raises_expiring_packages_once_and_ended_subscriptions(engine: Engine) -> None:
    setup(engine)
    engine.add_grant("a", 20 * CREDIT, "promo", T0, expires_at_us=T0 + 10 * DAY, grant_id="promo-1")
    engine.tick(T0 + 6 * DAY)  # 4 days left: not yet
    assert [a for a in alerts(engine) if a.type.value == "package.expiring"] == []
    engine.tick(T0 + 7 * DAY)
    engine.tick(T0 + 8 * DAY)  # again: nothing new
    expiring = [a for a in alerts(engine) if a.type.value == "package.expiring"]
    assert [(a.data["grant_id"], a.data["remaining"], a.data["expires_at"]) for a in expiring] == [
        ("promo-1", "20", format_instant(T0 + 10 * DAY))]
    engine.cancel_subscription("a-sub", T0 + 9 * DAY)
    assert kinds(engine)[-1] == ("subscription.cancelled", "cancelled:a-sub")
    engine.tick(PERIOD2 + HOUR)
    engine.tick(PERIOD2 + 2 * HOUR)
    ended = [a for a in alerts(engine) if a.type.value == "subscription.ended"]
    assert [(a.dedupe_key, a.at_us) for a in ended] == [("ended:a-sub", PERIOD2)]


def test_purchases_and_allocations(engine: Engine) -> None:
    setup(engine)
    engine.purchase("a", "pack", T0 + HOUR, order_id="ord-1")
    engine.purchase("a", "pack", T0 + 2 * HOUR, order_id="ord-1")  # a retry
    bought = [a for a in alerts(engine) if a.type.value == "purchase.completed"]
    assert [(a.data["order_id"], a.data["credits"]) for a in bought] == [("ord-1", "50")]
    engine.create_account("ent", T0, kind="enterprise")
    engine.add_grant("ent", 100 * CREDIT, "enterprise", T0, grant_id="pool")
    engine.add_member("ent", "a", T0)
    package = engine.allocate("ent", "a", 10 * CREDIT, T0 + HOUR, allocation_id="q1")
    engine.revoke_allocation(package.grant.id, T0 + 2 * HOUR)
    got = [(a.type.value, a.data["amount" if a.type.value == "allocation.added" else "returned"])
           for a in alerts(engine) if a.type.value.startswith("allocation.")]
    assert got == [("allocation.added", "10"), ("allocation.revoked", "10")]


def test_auto_top_up_is_requested_at_most_n_times_a_month(engine: Engine) -> None:
    setup(engine)
    engine.set_auto_topup("a", {"below": 20, "pack": "pack", "max_per_month": 2}, T0)
    assert engine.auto_topup("a") is not None
    use(engine, "e1", 90, T0 + HOUR)  # 10 left: below 20
    (first,) = [a for a in alerts(engine) if a.type.value == "topup.requested"]
    assert first.data["pack_id"] == "pack" and first.data["count"] == 1 and not first.data["granted"]
    use(engine, "e2", 2, T0 + 2 * HOUR)  # still below: no new request
    engine.purchase("a", "pack", T0 + 3 * HOUR, order_id=str(first.data["order_id"]))
    engine.purchase("a", "pack", T0 + 3 * HOUR, order_id=str(first.data["order_id"]))  # retried
    use(engine, "e3", 44, T0 + 8 * HOUR)  # 58 - 44 = 14: below again
    engine.purchase("a", "pack", T0 + 9 * HOUR, order_id="manual")
    use(engine, "e4", 50, T0 + 15 * HOUR)  # 64 - 50: below a third time: the month's two are used
    requests = [a for a in alerts(engine) if a.type.value == "topup.requested"]
    assert [a.data["count"] for a in requests] == [1, 2]
    use(engine, "e5", 2, PERIOD2 - HOUR)
    engine.set_auto_topup("a", None, PERIOD2)
    assert engine.auto_topup("a") is None


def test_auto_top_up_may_grant_at_once_and_the_purchase_confirms_it(engine: Engine) -> None:
    setup(engine)
    engine.set_auto_topup("a", {"below": 20, "pack": "pack", "max_per_month": 1, "grant_now": True}, T0)
    use(engine, "e1", 90, T0 + HOUR)
    (request,) = [a for a in alerts(engine) if a.type.value == "topup.requested"]
    assert request.data["granted"] is True
    assert engine.balance("a", T0 + HOUR).available_uc == 60 * CREDIT
    package = engine.purchase("a", "pack", T0 + 2 * HOUR, order_id=str(request.data["order_id"]))
    assert package.grant.id == request.data["grant_id"]
    assert engine.balance("a", T0 + 2 * HOUR).available_uc == 60 * CREDIT  # not granted twice
    bought = [a for a in alerts(engine) if a.type.value == "purchase.completed"]
    assert len(bought) == 1


def test_bad_rules_and_top_ups_name_the_field(engine: Engine) -> None:
    bad: list[Any] = [[{"usage_reached_percent": 0}], [{"balance_below": -1}], [{"expiring_within": "3w"}],
                      [{"usage_reached_percent": 80, "balance_below": 1}], [{"nope": 1}],
                      [{"usage_reached_percent": 80}, {"usage_reached_percent": 80}], "80"]
    for rules in bad:
        with pytest.raises(InputError) as caught:
            parse_alert_rules(rules, "alerts")
        assert caught.value.field.startswith("alerts")
    setup(engine)
    for topup, field in (({"below": 0, "pack": "pack", "max_per_month": 1}, "auto_topup.below"),
                         ({"below": 5, "pack": "pack", "max_per_month": 0}, "auto_topup.max_per_month"),
                         ({"below": 5, "pack": "pro", "max_per_month": 1}, "auto_topup.pack"),
                         ({"below": 5, "max_per_month": 1}, "auto_topup.pack")):
        with pytest.raises(InputError) as caught:
            engine.set_auto_topup("a", topup, T0)
        assert caught.value.field == field
    with pytest.raises(NotFound):
        engine.set_auto_topup("a", {"below": 5, "pack": "nope", "max_per_month": 1}, T0)
    assert engine.auto_topup("a") is None


def test_a_late_event_crossing_an_earlier_periods_package_is_raised(engine: Engine) -> None:
    setup(engine)
    use(engine, "e1", 70, T0 + HOUR)
    use(engine, "e2", 20, PERIOD2 - HOUR)  # on time: 90 of the first month's 100
    p1 = "sub:a-sub@2026-03-02T00:00:00Z"
    assert ("credits.usage_reached", f"usage_reached_percent=80:{p1}") in kinds(engine)
    engine.create_account("b", T0 - DAY)
    engine.subscribe("b", "pro", T0, subscription_id="b-sub")
    use(engine, "b1", 70, T0 + HOUR, account="b")
    engine.record({"id": "b2", "account_id": "b", "timestamp": format_instant(PERIOD2 - HOUR),
                   "quantities": {"web_search": 10}}, PERIOD2 + HOUR)  # late: into the first month
    b1 = "sub:b-sub@2026-03-02T00:00:00Z"
    assert ("credits.usage_reached", f"usage_reached_percent=80:{b1}") in kinds(engine, "b")


def test_a_hold_taking_a_limit_past_a_watched_percent_is_raised_once_per_window(engine: Engine) -> None:
    setup(engine)  # rolling 5h limit of 60 credits; rules watch 80% and 100%
    assert not isinstance(engine.reserve("a", 40 * CREDIT, T0 + HOUR, hold_id="h1", ttl_s=3600), Refused)
    assert not isinstance(engine.reserve("a", 10 * CREDIT, T0 + HOUR, hold_id="h2", ttl_s=3600), Refused)
    assert not isinstance(engine.reserve("a", 2 * CREDIT, T0 + HOUR, hold_id="h3", ttl_s=3600), Refused)
    reached = [a for a in alerts(engine) if a.type.value == "credits.usage_reached"]
    assert [(a.dedupe_key, a.data["used"]) for a in reached] == [
        (f"usage_reached_percent=80:limit:plan-1:{T0 + HOUR}", "50")]
    assert reached[0].data["limit_id"] == "plan-1" and reached[0].data["credits"] == "60"
    assert not isinstance(engine.reserve("a", 8 * CREDIT, T0 + HOUR, hold_id="h4", ttl_s=3600), Refused)
    reached = [a.dedupe_key for a in alerts(engine) if a.type.value == "credits.usage_reached"]
    assert reached[-1] == f"usage_reached_percent=100:limit:plan-1:{T0 + HOUR}"


def test_an_enterprise_cannot_have_an_auto_top_up(engine: Engine) -> None:
    setup(engine)
    engine.create_account("ent", T0, kind="enterprise")
    with pytest.raises(InputError) as caught:
        engine.set_auto_topup("ent", {"below": 5, "pack": "pack", "max_per_month": 1}, T0)
    assert caught.value.field == "auto_topup.pack"
    assert engine.auto_topup("ent") is None
