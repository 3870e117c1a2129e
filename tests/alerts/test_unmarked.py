"""Alerts a command raises on a book whose terms, when the command began, could raise none: the
command itself may give the account terms that do (a plan with alert rules, an auto top-up)."""

from __future__ import annotations

from creditmeter.engine import Engine
from creditmeter.plans import parse_plans
from tests.alerts.test_raising import CREDIT, DAY, HOUR, PLANS, T0, alerts, kinds, use


def test_subscribing_while_in_overage_raises_the_usage_its_first_package_pays(engine: Engine) -> None:
    engine.load_plans(parse_plans({"plans": PLANS}), T0 - DAY)
    engine.create_account("a", T0 - DAY)
    use(engine, "e1", 90, T0 - HOUR)  # no credits: 90 of overage
    assert engine.balance("a", T0 - HOUR + 1).overage_uc == 90 * CREDIT
    engine.subscribe("a", "pro", T0, subscription_id="a-sub")  # pays 90 of its 100: past 80%
    p1 = "sub:a-sub@2026-03-02T00:00:00Z"
    assert ("credits.usage_reached", f"usage_reached_percent=80:{p1}") in kinds(engine), alerts(engine)


def test_an_account_without_terms_or_rules_is_told_it_is_depleted_and_in_overage(engine: Engine) -> None:
    engine.create_account("a", T0 - DAY)
    engine.add_grant("a", 10 * CREDIT, "promo", T0 - DAY)
    use(engine, "e1", 10, T0 + HOUR)  # 10 of 10: depleted
    use(engine, "e2", 2, T0 + 2 * HOUR)  # overage starts
    assert [k for k, _ in kinds(engine)] == ["credits.depleted", "credits.overage"]
