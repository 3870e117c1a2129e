"""The demo database, built by the function ``creditmeter demo`` uses, read back through the API as
the console and a client see it: every part of the usage page is there for real."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from creditmeter.demo import TEAM, TEAMMATE, USER, run_demo
from creditmeter.server import create_app
from tests.conftest import at

ADMIN_KEY = "demo-test-operator-key-" + "k" * 32
NOW = "2026-11-10T12:00:00Z"
# The shipped example plans (catalogs/plans.yaml) the demo subscribes to and buys.
PRO_PLAN, ADDON_PACK, RESOURCE_PACK, TEAM_PLAN = (
    "professional-monthly", "addon-1000", "package-3000", "enterprise-seat")


@pytest.fixture(params=[30, 60, 3], ids=lambda days: f"{days}-days")
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    engine, requests = run_demo(f"sqlite:///{tmp_path}/demo.db", request.param, at(NOW))
    assert requests > 0
    with TestClient(create_app(engine, admin_key=ADMIN_KEY, clock=lambda: at(NOW)),
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as api:
        yield api, engine
    engine.close()


def _active(package: dict[str, Any]) -> bool:
    return package["effective_at"] <= NOW < (package["expires_at"] or "9999")


def test_the_demo_user_has_a_running_professional_subscription_and_every_kind_of_package(
        demo: tuple[TestClient, Any]) -> None:
    api, engine = demo
    balance = api.get(f"/api/accounts/{USER}/balance").json()
    sub = balance["subscription"]
    assert sub is not None, balance
    assert (sub["plan_id"], sub["kind"], sub["status"]) == (PRO_PLAN, "subscription", "active")
    period = sub["current_period"]
    assert period["start"] <= NOW < period["end"]
    assert balance["period"] == {**period, "basis": "subscription"}
    packages = balance["packages"]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for package in packages:
        assert Decimal(package["granted_credits"]) > 0, package
        by_kind.setdefault(package["kind"], []).append(package)
    assert set(by_kind) == {"trial", "subscription", "addon", "package", "enterprise"}, by_kind.keys()
    # the allowance of the period running now, granted by the subscription itself
    current = [p for p in by_kind["subscription"]
               if (p["effective_at"], p["expires_at"]) == (period["start"], period["end"])]
    assert len(current) == 1 and current[0]["status"] == "active"
    assert Decimal(current[0]["granted_credits"]) == Decimal(sub["allowance_credits"])
    assert current[0]["grant_id"].startswith(f"sub:{sub['subscription_id']}@")
    # the trial came from the trial plan; the packs were bought as purchases
    assert by_kind["trial"][0]["grant_id"] == f"trial:{USER}"
    assert [p["grant_id"] for p in by_kind["addon"]] == ["order:demo-addon"]
    assert [p["grant_id"] for p in by_kind["package"]] == ["order:demo-pack"]
    assert [p["name"] for p in by_kind["addon"]] == [engine.plans().get(ADDON_PACK).name]
    assert [p["name"] for p in by_kind["package"]] == [engine.plans().get(RESOURCE_PACK).name]
    # enterprise quota for the month running now (used first: it expires soonest), handed to the
    # user by the enterprise she is a member of
    assert any(_active(p) for p in by_kind["enterprise"]), by_kind["enterprise"]
    team = api.get(f"/api/enterprises/{TEAM}").json()
    pool = api.get(f"/api/accounts/{TEAM}/balance").json()
    assert (pool["subscription"]["plan_id"], pool["subscription"]["status"]) == (TEAM_PLAN, "active")
    # the enterprise view's pool is that same balance: its subscription and period included
    assert {k: team["pool"][k] for k in ("subscription", "available_credits")} == {
        k: pool[k] for k in ("subscription", "available_credits")}
    members = {m["account_id"]: m for m in team["members"]}
    assert members[USER]["role"] == "admin" and members[TEAMMATE]["role"] == "member"
    assert Decimal(members[USER]["quota_credits"]) > 0 and Decimal(members[TEAMMATE]["quota_credits"]) > 0
    assert {a["account_id"] for a in team["allocations"]} == {USER, TEAMMATE}
    # and the ledger reconciles
    assert api.get("/api/reconcile").json() == {"ok": True, "violations": []}
    assert engine.check_invariants() == []
