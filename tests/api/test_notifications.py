"""Notifications over HTTP, on both stores: who sees an account's notices (whoever sees its usage),
pages newest first, the words, read marks that are each reader's own, and bad input refused naming
the field with nothing written.

The world: alice (two keys) and bob, users; initech, an enterprise administered by carol and eve,
with dave a member; a stored operator key next to the environment's. Alerts are put in the outbox
directly, as the commands that raise them do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from creditmeter.alerts import Alert, AlertType, alert_id
from creditmeter.api.notification_models import NotificationsOut, ReadOut
from creditmeter.engine import Engine
from tests.api.conftest import NOW, OPERATOR, Clock, bearer
from tests.conftest import at

HOUR_US = 3_600 * 1_000_000
T0 = at(NOW) - 48 * HOUR_US


@dataclass
class World:
    api: TestClient
    engine: Engine
    who: dict[str, dict[str, str]]  # each person's headers ("operator": the environment's key)

    def get(self, account_id: str, who: str, status: int = 200, **params: str) -> Any:
        response = self.api.get(f"/api/accounts/{account_id}/notifications", headers=self.who[who],
                                params=params or None)
        assert response.status_code == status, response.text
        if status == 200:
            NotificationsOut.model_validate(response.json())
        return response.json()

    def read(self, account_id: str, who: str, body: Any, status: int = 200) -> Any:
        response = self.api.post(f"/api/accounts/{account_id}/notifications/read", headers=self.who[who],
                                 json=body)
        assert response.status_code == status, response.text
        if status == 200:
            ReadOut.model_validate(response.json())
        return response.json()

    def unread(self, account_id: str, who: str) -> int:
        count: int = self.get(account_id, who, limit="1")["unread"]
        return count


def raise_alerts(engine: Engine, *alerts: Alert) -> None:
    with engine.store.transaction(write=True) as tx:
        for alert in alerts:
            assert tx.insert_alert(alert, alert.at_us)


def _key(engine: Engine, account_id: str | None) -> dict[str, str]:
    return bearer(engine.create_key(account_id, T0)[1])


@pytest.fixture
def world(api: TestClient, engine: Engine, clock: Clock) -> World:
    for account_id, kind in (("alice", "user"), ("bob", "user"), ("carol", "user"), ("eve", "user"),
                             ("dave", "user"), ("initech", "enterprise")):
        engine.create_account(account_id, T0, kind=kind)
    for member, role in (("carol", "admin"), ("eve", "admin"), ("dave", "member")):
        engine.add_member("initech", member, T0, role=role)
    who = {"operator": OPERATOR, "ops": _key(engine, None), "alice": _key(engine, "alice"),
           "alice2": _key(engine, "alice")}
    who |= {person: _key(engine, person) for person in ("bob", "carol", "eve", "dave")}
    raise_alerts(
        engine,
        Alert("alice", AlertType.USAGE_REACHED, "usage:80:2026-11", T0,
              {"percent": 80, "package_name": "Professional (monthly)",
               "period_end": "2026-11-30T00:00:00Z"}),
        Alert("alice", AlertType.PACKAGE_EXPIRING, "expiring:trial", T0 + HOUR_US,
              {"package_name": "Trial credits", "remaining": "12.5", "expires_at": "2026-11-13T12:00:00Z"}),
        Alert("alice", AlertType.LIMIT_REACHED, "limit:plan-1:1", T0 + 2 * HOUR_US,
              {"limit_id": "plan-1", "window": "rolling 5h", "credits": "300",
               "frees_at": "2026-11-10T17:00:00Z"}),
        Alert("alice", AlertType.DEPLETED, "depleted:1", T0 + 3 * HOUR_US),
        Alert("alice", AlertType.TOPUP_REQUESTED, "topup:1", T0 + 4 * HOUR_US, {"pack_id": "addon-1000"}),
        Alert("initech", AlertType.BALANCE_LOW, "low:100", T0, {"credits": "100", "remaining": "99.5"}),
        Alert("dave", AlertType.ALLOCATION_ADDED, "alloc:q1", T0,
              {"amount": "300", "enterprise_id": "initech"}),
        Alert("bob", AlertType.DEPLETED, "depleted:1", T0))
    return World(api, engine, who)


def test_who_sees_which_account_s_notices(world: World) -> None:
    """The rule of the account's usage: its own keys, the enterprise account's admins, the operator;
    for anyone else the account does not exist (and a member's own notices stay its own)."""
    for account_id, readers in (("alice", ("alice", "alice2", "operator", "ops")),
                                ("initech", ("carol", "eve", "operator", "ops")),
                                ("dave", ("dave", "operator"))):
        for person in readers:
            assert world.get(account_id, person)["notifications"], (account_id, person)
    for account_id, person in (("alice", "bob"), ("initech", "dave"), ("dave", "carol"), ("bob", "alice")):
        body = world.get(account_id, person, 404)
        assert body["error"]["field"] == "account_id"
        assert world.read(account_id, person, {"all": True}, 404)["error"]["type"] == "not_found"
    assert world.api.get("/api/accounts/alice/notifications").status_code == 401
    assert world.get("nobody", "operator", 404)["error"]["field"] == "account_id"
    assert world.unread("bob", "bob") == 1  # nobody else's attempt marked anything


def test_pages_newest_first_in_plain_words(world: World) -> None:
    first = world.get("alice", "alice", limit="2")
    assert [n["type"] for n in first["notifications"]] == ["topup.requested", "credits.depleted"]
    assert first["unread"] == 5 and first["next_before"] == first["notifications"][-1]["seq"]
    second = world.get("alice", "alice", limit="2", before=str(first["next_before"]))
    third = world.get("alice", "alice", limit="2", before=str(second["next_before"]))
    assert third["next_before"] is None
    texts = [n["text"] for n in first["notifications"] + second["notifications"] + third["notifications"]]
    assert texts == [
        "Auto top-up: pack addon-1000 requested",
        "Your credits are used up",
        "You reached your 5-hour usage limit of 300 credits; it frees up at 2026-11-10 17:00 UTC",
        "Your trial credits (12.5 left) expire in 3 days, on 2026-11-13",
        "You have used 80% of Professional (monthly) credits for the period that ends 2026-11-30"]
    oldest = third["notifications"][0]
    assert oldest == {"id": alert_id("alice", "usage:80:2026-11"), "seq": oldest["seq"],
                      "type": "credits.usage_reached", "timestamp": "2026-11-08T12:00:00Z",
                      "account_id": "alice", "read": False, "text": texts[-1],
                      "data": {"percent": 80, "package_name": "Professional (monthly)",
                               "period_end": "2026-11-30T00:00:00Z"}}
    assert world.get("alice", "alice", limit="200")["next_before"] is None


def test_read_marks_are_each_reader_s_own(world: World) -> None:
    page = world.get("alice", "alice")["notifications"]
    newest, older = page[0]["id"], page[1]["id"]
    assert world.read("alice", "alice", {"ids": [newest, older, newest]}) == {"marked": 2, "unread": 3}
    assert world.read("alice", "alice", {"ids": [newest]}) == {"marked": 0, "unread": 3}  # again
    # Every key of alice's is alice: her second key sees her marks.
    seen = world.get("alice", "alice2")
    assert [n["read"] for n in seen["notifications"]] == [True, True, False, False, False]
    assert [n["id"] for n in world.get("alice", "alice2", unread="true")["notifications"]] == [
        n["id"] for n in page[2:]]
    # The operators are readers of their own, one per key.
    assert world.unread("alice", "operator") == 5 and world.unread("alice", "ops") == 5
    assert world.read("alice", "ops", {"all": True}) == {"marked": 5, "unread": 0}
    assert world.unread("alice", "operator") == 5 and world.unread("alice", "alice") == 3
    # Two admins of one enterprise: each has marks of their own.
    assert world.read("initech", "carol", {"all": True}) == {"marked": 1, "unread": 0}
    assert world.get("initech", "carol")["notifications"][0]["read"] is True
    assert world.get("initech", "eve")["notifications"][0]["read"] is False
    assert world.unread("initech", "eve") == 1


def test_mark_all_through_what_was_shown(world: World) -> None:
    shown = world.get("alice", "alice")
    raise_alerts(world.engine, Alert("alice", AlertType.OVERAGE, "overage:1", T0 + 5 * HOUR_US))
    newest_shown = shown["notifications"][0]["seq"]
    assert world.read("alice", "alice", {"all": True, "through": newest_shown - 1}) == {
        "marked": 4, "unread": 2}
    # A whole number written with a zero fraction is that number, as everywhere in the API.
    assert world.read("alice", "alice", {"all": True, "through": float(newest_shown)}) == {
        "marked": 1, "unread": 1}
    now = world.get("alice", "alice", unread="true")["notifications"]
    assert [(n["type"], n["text"]) for n in now] == [("credits.overage", "Credits are being used in overage")]


BAD_READS = [
    ({}, "all"), ({"ids": []}, "ids"), ({"ids": "msg_x"}, "ids"), ({"ids": [""]}, "ids.0"),
    ({"ids": [7]}, "ids.0"), ({"ids": ["x"] * 1001}, "ids"), ({"all": False}, "all"),
    ({"all": "yes"}, "all"), ({"all": True, "ids": ["x"]}, "all"), ({"ids": ["x"], "through": 3}, "through"),
    ({"all": True, "through": 0}, "through"), ({"all": True, "through": "3"}, "through"),
    ({"all": True, "through": 2.5}, "through"), ({"all": True, "through": 2**63}, "through"),
    ({"all": True, "also": 1}, "also"), ([], "body"), ({"ids": None, "all": True}, "ids"),
    ({"all": None}, "all"), ({"all": True, "through": None}, "through"),
]


@pytest.mark.parametrize(("body", "field"), BAD_READS, ids=[f for _, f in BAD_READS])
def test_bad_marks_are_refused_naming_the_field(world: World, body: Any, field: str) -> None:
    error = world.read("alice", "alice", body, 422)["error"]
    assert error["type"] == "invalid_input" and error["field"] == field, error
    assert error["message"].startswith(f"{field}: "), error
    assert world.unread("alice", "alice") == 5


def test_unknown_ids_mark_nothing(world: World) -> None:
    mine = alert_id("alice", "depleted:1")
    for ident in (alert_id("bob", "depleted:1"), "msg_nothing"):  # bob's own, and none at all
        error = world.read("alice", "alice", {"ids": [mine, ident]}, 404)["error"]
        assert error == {"type": "not_found", "field": "ids",
                         "message": f"ids: unknown notification {ident!r}"}
    assert world.unread("alice", "alice") == 5 and world.unread("bob", "bob") == 1


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "0"}, "limit"), ({"limit": "201"}, "limit"), ({"limit": "x"}, "limit"),
    ({"before": "0"}, "before"), ({"before": "-1"}, "before"), ({"before": "abc"}, "before"),
    ({"before": str(2**63)}, "before"),
    ({"unread": "maybe"}, "unread")])
def test_bad_pages_are_refused_naming_the_field(world: World, params: dict[str, str], field: str) -> None:
    response: httpx2.Response = world.api.get("/api/accounts/alice/notifications", headers=world.who["alice"],
                                              params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
