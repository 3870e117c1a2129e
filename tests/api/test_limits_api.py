"""SPEC §12 over HTTP: limits on consumption and the policy when credits run out — who may read,
set and remove which limit, bad input, a hold refused past a limit (429 with ``Retry-After``) or
past the credits (402), and the balance's allowances, limits and policy. On both stores.

The world: a plan ``pro-plus`` (1,500 credits a month, 50 a day on Shanghai calendar days, at most
300 credits in any 5 hours, a fallback to ``basic-model`` when credits run out); alice subscribed
to it, with two keys, and admin of the enterprise initech, whose member is dave; bob, a user of
his own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from creditmeter.api.balance_models import BalanceOut, LimitOut, LimitsOut, RefusalBody, WhenOutOut
from creditmeter.domain import Hold, Refused
from creditmeter.engine import Engine
from creditmeter.errors import Conflict
from creditmeter.timeutil import parse_instant
from tests.api.conftest import NOW, OPERATOR, Clock, bearer
from tests.api.test_http_bad_input import tables
from tests.conftest import at

HOUR_US = 3_600 * 1_000_000
PRO_PLUS = {"id": "pro-plus", "kind": "subscription", "name": "Professional Plus", "credits": 1500,
            "period": "month",
            "allowances": [{"id": "daily", "every": "1d", "credits": 50, "calendar": "Asia/Shanghai",
                            "name": "Daily credits"}],
            "limits": [{"window": "rolling 5h", "credits": 300}],
            "when_out_of_credits": {"fallback": "basic-model", "daily_cap": 50}}


@dataclass
class World:
    api: TestClient
    engine: Engine
    clock: Clock
    alice: dict[str, str]   # alice's first key: headers
    alice_key: str          # its id
    alice_key_2: str        # the id of alice's second key
    bob: dict[str, str]
    bob_key: str

    def call(self, method: str, path: str, who: dict[str, str], body: Any = None,
             status: int | None = None, **params: str) -> httpx2.Response:
        response = self.api.request(method, path, headers=who, json=body, params=params or None)
        if status is not None:
            assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def limits(self, account_id: str, who: dict[str, str] = OPERATOR) -> dict[str, Any]:
        body: dict[str, Any] = self.call("GET", f"/api/accounts/{account_id}/limits", who, status=200).json()
        LimitsOut.model_validate(body)
        return body


def ok(response: httpx2.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def key(api: TestClient, account_id: str, name: str) -> tuple[dict[str, str], str]:
    created = ok(api.post(f"/api/accounts/{account_id}/keys", json={"name": name}, headers=OPERATOR), 201)
    return bearer(created["key"]), created["key_id"]


@pytest.fixture
def world(api: TestClient, engine: Engine, clock: Clock) -> World:
    ok(api.post("/api/plans", json={"plans": [PRO_PLUS]}, headers=OPERATOR), 201)
    for account_id, kind in (("alice", "user"), ("bob", "user"), ("dave", "user"),
                             ("initech", "enterprise")):
        ok(api.post("/api/accounts", json={"id": account_id, "kind": kind}, headers=OPERATOR), 201)
    for member, role in (("alice", "admin"), ("dave", "member")):
        ok(api.post("/api/enterprises/initech/members", json={"account_id": member, "role": role},
                    headers=OPERATOR), 201)
    clock.now_us = at(NOW) - 24 * HOUR_US  # subscribed a day ago: its packages pay today's usage
    ok(api.post("/api/accounts/alice/subscriptions", json={"plan_id": "pro-plus", "id": "s-alice"},
                headers=OPERATOR), 201)
    clock.now_us = at(NOW)
    alice, alice_key = key(api, "alice", "app")
    _, alice_key_2 = key(api, "alice", "batch jobs")
    bob, bob_key = key(api, "bob", "bob")
    return World(api, engine, clock, alice, alice_key, alice_key_2, bob, bob_key)


def key_limit(key_id: str, credits: str = "20", window: str = "1d") -> dict[str, Any]:
    return {"window": window, "credits": credits, "scope": "key", "key_id": key_id}


def error(response: httpx2.Response, status: int, kind: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["type"] == kind, body
    if field is not None:
        assert body["field"] == field, body
    if field is not None and kind in ("invalid_input", "not_found"):
        assert body["message"].startswith(f"{field}: "), body
    return body


# -- who sets, reads and removes what ----------------------------------------------------------------

def test_the_owner_sets_reads_and_removes_a_limit_on_its_own_key(world: World) -> None:
    path = "/api/accounts/alice/limits/app-daily"
    first = world.call("PUT", path, world.alice, key_limit(world.alice_key), status=200).json()
    LimitOut.model_validate(first)
    assert first == {"id": "app-daily", "scope": "key", "window": "1d", "calendar": "UTC",
                     "source": "owner", "limit_credits": "20", "used_credits": "0", "held_credits": "0",
                     "remaining_credits": "20", "window_start": "2026-11-10T00:00:00Z",
                     "resets_at": "2026-11-11T00:00:00Z", "key_id": world.alice_key,
                     "description": f"20 credits per day through key {world.alice_key}"}
    again = world.call("PUT", path, world.alice, key_limit(world.alice_key), status=200).json()
    assert again == first  # the same PUT answers the same

    mine = world.limits("alice", world.alice)
    assert [(x["id"], x["source"]) for x in mine["limits"]] == [("plan-1", "plan"), ("app-daily", "owner")]
    assert mine["limits"][0]["description"] == "300 credits in any 5 hours"
    assert mine["when_out_of_credits"] == {
        "mode": "fallback", "fallback_model": "basic-model", "daily_cap": 50,
        "description": "when your credits run out, requests use basic-model, up to 50 a day"}
    assert world.limits("alice") == mine  # the operator sees the same

    world.call("DELETE", path, world.alice, status=204)
    assert [x["id"] for x in world.limits("alice")["limits"]] == ["plan-1"]
    error(world.call("DELETE", path, world.alice), 404, "not_found", "limit_id")


def test_another_user_is_told_the_account_does_not_exist(world: World) -> None:
    world.call("PUT", "/api/accounts/alice/limits/app-daily", world.alice, key_limit(world.alice_key),
               status=200)
    before = world.limits("alice")
    for method, path, body in (("GET", "/api/accounts/alice/limits", None),
                               ("PUT", "/api/accounts/alice/limits/app-daily", key_limit(world.alice_key)),
                               ("PUT", "/api/accounts/alice/limits/bobs", key_limit(world.bob_key)),
                               ("DELETE", "/api/accounts/alice/limits/app-daily", None)):
        answer = world.call(method, path, world.bob, body)
        missing = world.call(method, path.replace("alice", "nobody"), world.bob, body)
        unknown = error(missing, 404, "not_found", "account_id")
        assert error(answer, 404, "not_found", "account_id") == {
            **unknown, "message": "account_id: unknown account 'alice'"}
    assert world.limits("alice") == before


def test_an_account_key_sets_limits_only_on_its_own_keys_and_removes_only_its_own(world: World) -> None:
    alice = world.alice
    before = tables(world.engine)
    error(world.call("PUT", "/api/accounts/alice/limits/all", alice, {"window": "1d", "credits": "5"}),
          403, "forbidden")
    error(world.call("PUT", "/api/accounts/alice/limits/k", alice, key_limit(world.bob_key)),
          404, "not_found", "key_id")  # bob's key is not one of alice's
    error(world.call("PUT", "/api/accounts/alice/when-out-of-credits", alice, {"policy": "block"}),
          403, "forbidden")
    error(world.call("DELETE", "/api/accounts/alice/limits/plan-1", alice), 409, "conflict")
    assert tables(world.engine) == before, "a refused call wrote something"

    # A limit the operator put on alice's key: alice sees it, may neither replace nor remove it.
    world.call("PUT", "/api/accounts/alice/limits/ops-cap", OPERATOR, key_limit(world.alice_key_2, "7"),
               status=200)
    assert world.limits("alice", alice)["limits"][1]["source"] == "operator"
    error(world.call("DELETE", "/api/accounts/alice/limits/ops-cap", alice), 403, "forbidden")
    error(world.call("PUT", "/api/accounts/alice/limits/ops-cap", alice, key_limit(world.alice_key_2)),
          409, "conflict")
    assert world.limits("alice")["limits"][1]["limit_credits"] == "7"
    world.call("DELETE", "/api/accounts/alice/limits/ops-cap", OPERATOR, status=204)

    # A plan's limit goes with the plan: nobody removes it alone.
    plan = error(world.call("DELETE", "/api/accounts/alice/limits/plan-1", OPERATOR), 409, "conflict")
    assert "'plan-1'" in plan["message"] and "plan" in plan["message"]
    assert [x["id"] for x in world.limits("alice")["limits"]] == ["plan-1"]


def test_an_enterprise_admin_bounds_what_its_quota_pays_of_a_member(world: World) -> None:
    alice, base = world.alice, "/api/accounts/dave/limits"
    quota_cap = {"window": "7d", "credits": "10", "scope": "member", "enterprise_id": "initech"}
    set_ = world.call("PUT", f"{base}/initech-weekly", alice, quota_cap, status=200).json()
    assert (set_["source"], set_["scope"], set_["enterprise_id"]) == ("admin", "member", "initech")
    assert set_["description"] == "10 credits per 7 days of initech's quota"

    world.call("PUT", f"{base}/dave-own", OPERATOR, {"window": "1d", "credits": "3"}, status=200)
    world.call("PUT", f"{base}/ops-quota", OPERATOR, {**quota_cap, "credits": "8"}, status=200)
    seen = world.limits("dave", alice)  # the admin sees its enterprise's limits, nothing of dave's own
    assert [x["id"] for x in seen["limits"]] == ["initech-weekly", "ops-quota"]
    assert seen["when_out_of_credits"] is None
    assert [x["id"] for x in world.limits("dave")["limits"]] == ["initech-weekly", "dave-own", "ops-quota"]

    before = tables(world.engine)
    error(world.call("PUT", f"{base}/k", alice, {"window": "1d", "credits": "1"}), 403, "forbidden")
    error(world.call("PUT", f"{base}/globex", alice, {**quota_cap, "enterprise_id": "globex"}),
          404, "not_found", "enterprise_id")
    error(world.call("DELETE", f"{base}/dave-own", alice), 404, "not_found", "limit_id")
    error(world.call("DELETE", f"{base}/ops-quota", alice), 403, "forbidden")
    # bob is no member of initech: to its admin, bob's account does not exist
    error(world.call("GET", "/api/accounts/bob/limits", alice), 404, "not_found", "account_id")
    error(world.call("PUT", "/api/accounts/bob/limits/x", alice, quota_cap), 404, "not_found", "account_id")
    assert tables(world.engine) == before, "a refused call wrote something"

    world.call("DELETE", f"{base}/initech-weekly", alice, status=204)
    assert [x["id"] for x in world.limits("dave")["limits"]] == ["dave-own", "ops-quota"]


# -- bad input ---------------------------------------------------------------------------------------

LIMIT = "/api/accounts/alice/limits/new-limit"
POLICY = "/api/accounts/alice/when-out-of-credits"
BAD: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "a rolling month": (LIMIT, {"window": "rolling 1mo", "credits": "5"}, 400, "window"),
    "an unknown window": (LIMIT, {"window": "fortnightly", "credits": "5"}, 400, "window"),
    "7 decimals": (LIMIT, {"window": "1d", "credits": "1.0000001"}, 400, "credits"),
    "zero credits": (LIMIT, {"window": "1d", "credits": 0}, 400, "credits"),
    "an unknown time zone": (LIMIT, {"window": "1d", "credits": "5", "calendar": "Mars/Olympus"}, 400,
                             "calendar"),
    "no credits": (LIMIT, {"window": "1d"}, 422, "credits"),
    "an unknown scope": (LIMIT, {"window": "1d", "credits": "5", "scope": "team"}, 422, "scope"),
    "an unknown field": (LIMIT, {"window": "1d", "credits": "5", "colour": "red"}, 422, "colour"),
    "scope key without a key": (LIMIT, {"window": "1d", "credits": "5", "scope": "key"}, 400, "key_id"),
    "a key on an account limit": (LIMIT, {"window": "1d", "credits": "5", "key_id": "k"}, 400, "key_id"),
    "a member limit on a non-member": ("/api/accounts/bob/limits/x", {
        "window": "1d", "credits": "5", "scope": "member", "enterprise_id": "initech"}, 400, "enterprise_id"),
    "a plan's id": ("/api/accounts/alice/limits/plan-9", {"window": "1d", "credits": "5"}, 400, "limit_id"),
    "an id with a space": ("/api/accounts/alice/limits/my limit", {"window": "1d", "credits": "5"}, 422,
                           "limit_id"),
    "an id over 64": ("/api/accounts/alice/limits/" + "x" * 65, {"window": "1d", "credits": "5"}, 422,
                      "limit_id"),
    "a negative overage cap": (POLICY, {"policy": {"overage": "-1"}}, 400, "policy.overage"),
    "a daily cap of 0": (POLICY, {"policy": {"fallback": "basic-model", "daily_cap": 0}}, 400,
                         "policy.daily_cap"),
    "overage and fallback": (POLICY, {"policy": {"overage": "1", "fallback": "basic-model"}}, 400, "policy"),
    "an unknown policy": (POLICY, {"policy": "sometimes"}, 400, "policy"),
    "no policy": (POLICY, {}, 422, "policy"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_input_names_the_field_and_writes_nothing(world: World, case: tuple[str, Any, int, str]) -> None:
    path, body, status, field = case
    before = tables(world.engine), world.limits("alice"), world.limits("bob")
    error(world.call("PUT", path, OPERATOR, body), status, "invalid_input", field)
    assert (tables(world.engine), world.limits("alice"), world.limits("bob")) == before


# -- holds under limits and the policy ---------------------------------------------------------------

def usage(world: World, event_id: str, timestamp: str, credits: int) -> None:
    """An event of ``credits`` on alice (gpt-4o input: 250 credits per million tokens)."""
    result = world.call("POST", "/api/usage", OPERATOR, {"events": [
        {"id": event_id, "account_id": "alice", "timestamp": timestamp, "model": "gpt-4o",
         "input_tokens": credits * 4_000}]}, status=200).json()
    assert result["charged"] == 1 and result["results"][0]["cost_credits"] == str(credits), result


def test_a_hold_past_a_rolling_limit_is_429_with_retry_after_until_enough_frees_up(world: World) -> None:
    usage(world, "e-early", "2026-11-10T08:00:00.25Z", 200)  # leaves the 5 hours at 13:00:00.25
    usage(world, "e-late", "2026-11-10T11:00:00Z", 90)
    frees_at = at("2026-11-10T13:00:00.25Z")

    refused = world.call("POST", "/api/accounts/alice/holds", OPERATOR, {"amount_credits": "20"})
    body = error(refused, 429, "limit_reached", "amount_credits")
    RefusalBody.model_validate(refused.json())
    assert refused.headers["retry-after"] == "3601"  # 3,600.25 seconds, rounded up
    assert parse_instant(body["limit"]["frees_at"], "frees_at") == frees_at
    assert (body["limit"]["id"], body["limit"]["used_credits"], body["limit"]["held_credits"],
            body["requested_credits"]) == ("plan-1", "290", "0", "20")
    assert "300 credits in any 5 hours" in body["message"]
    assert "enough frees up at 2026-11-10T13:00:00.250000Z" in body["message"]

    world.clock.now_us = frees_at - 1  # a microsecond before: still refused, retry in a second
    refused = world.call("POST", "/api/accounts/alice/holds", OPERATOR, {"amount_credits": "20"})
    error(refused, 429, "limit_reached")
    assert refused.headers["retry-after"] == "1"
    world.clock.now_us = frees_at
    world.call("POST", "/api/accounts/alice/holds", OPERATOR, {"amount_credits": "20", "id": "h-1"},
               status=201)

    # More than the limit itself: waiting alone frees nothing, so no Retry-After.
    never = world.call("POST", "/api/accounts/alice/holds", OPERATOR, {"amount_credits": "301"})
    assert "frees_at" not in error(never, 429, "limit_reached")["limit"]
    assert "retry-after" not in never.headers
    balance = world.call("GET", "/api/accounts/alice/balance", OPERATOR, status=200).json()
    assert balance["held_credits"] == "20", "a refused hold held something"


def test_a_key_limit_counts_the_holds_made_with_that_key_only(world: World) -> None:
    world.call("PUT", "/api/accounts/alice/limits/app-cap", world.alice,
               key_limit(world.alice_key, "5", "total"), status=200)
    now = world.clock.now_us
    first = world.engine.reserve("alice", 4_000_000, now, key_id=world.alice_key)
    assert isinstance(first, Hold)
    second = world.engine.reserve("alice", 4_000_000, now, key_id=world.alice_key)
    assert isinstance(second, Refused) and second.limit is not None and second.limit.rule.id == "app-cap"
    other = world.engine.reserve("alice", 4_000_000, now, key_id=world.alice_key_2)
    assert isinstance(other, Hold)
    world.call("POST", "/api/accounts/alice/holds", OPERATOR, {"amount_credits": "4"}, status=201)

    cap = world.limits("alice", world.alice)["limits"][1]
    assert (cap["id"], cap["held_credits"], cap["remaining_credits"]) == ("app-cap", "4", "1")
    plan = world.limits("alice")["limits"][0]
    assert plan["held_credits"] == "12"  # the account's limit counts every hold


def test_the_policy_when_credits_run_out_decides_between_402_and_overage(world: World) -> None:
    bob = "/api/accounts/bob"
    fallback = world.call("PUT", f"{bob}/when-out-of-credits", OPERATOR,
                          {"policy": {"fallback": "basic-model"}}, status=200).json()
    assert fallback == {"mode": "fallback", "fallback_model": "basic-model", "daily_cap": None,
                        "description": "when your credits run out, requests use basic-model"}
    refused = world.call("POST", f"{bob}/holds", OPERATOR, {"amount_credits": "1"})
    assert error(refused, 402, "insufficient_credits", "amount_credits")["fallback_model"] == "basic-model"
    RefusalBody.model_validate(refused.json())

    overage = world.call("PUT", f"{bob}/when-out-of-credits", OPERATOR, {"policy": {"overage": 10}},
                         status=200).json()
    assert (overage["mode"], overage["overage_cap_credits"]) == ("overage", "10")
    WhenOutOut.model_validate(overage)
    world.call("POST", f"{bob}/holds", OPERATOR, {"amount_credits": "8"}, status=201)
    over = error(world.call("POST", f"{bob}/holds", OPERATOR, {"amount_credits": "3"}), 402,
                 "insufficient_credits")
    assert "fallback_model" not in over

    back = world.call("PUT", f"{bob}/when-out-of-credits", OPERATOR, {"policy": None}, status=200).json()
    assert back["mode"] == "block"  # bob's plan-less default
    assert world.limits("bob")["when_out_of_credits"] == back


# -- the balance -------------------------------------------------------------------------------------

def test_the_balance_shows_allowances_limits_and_the_policy(world: World) -> None:
    usage(world, "e-1", "2026-11-10T11:00:00Z", 60)  # the day's 50, then 10 of the month's
    balance = world.call("GET", "/api/accounts/alice/balance", world.alice, status=200).json()
    BalanceOut.model_validate(balance)
    allowances = {a["id"]: a for a in balance["allowances"]}
    # 12:00 UTC is 20:00 in Shanghai: the local day began at 16:00 UTC the day before.
    assert allowances["daily"] == {
        "id": "daily", "name": "Daily credits", "every": "1d", "calendar": "Asia/Shanghai",
        "plan_credits": False, "grant_id": allowances["daily"]["grant_id"],
        "period_start": "2026-11-09T16:00:00Z", "resets_at": "2026-11-10T16:00:00Z",
        "granted_credits": "50", "used_credits": "50", "held_credits": "0", "remaining_credits": "0"}
    assert (allowances["plan"]["plan_credits"], allowances["plan"]["granted_credits"],
            allowances["plan"]["used_credits"], allowances["plan"]["resets_at"]) == (
        True, "1500", "10", "2026-12-09T12:00:00Z")
    assert [(x["id"], x["used_credits"], x["remaining_credits"]) for x in balance["limits"]] == [
        ("plan-1", "60", "240")]
    assert balance["limits"][0]["resets_at"] == "2026-11-10T16:00:00Z"  # e-1 leaves the 5 hours
    assert balance["when_out_of_credits"]["description"] == \
        "when your credits run out, requests use basic-model, up to 50 a day"

    world.call("PUT", "/api/accounts/alice/when-out-of-credits", OPERATOR, {"policy": "block"}, status=200)
    later = world.call("GET", "/api/accounts/alice/balance", world.alice, status=200).json()
    assert later["when_out_of_credits"] == {"mode": "block",
                                            "description": "when your credits run out, requests are refused"}


def test_the_openapi_document_describes_the_balance_limits_and_refusals(world: World) -> None:
    doc = world.api.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert {"allowances", "limits", "when_out_of_credits"} <= set(schemas["BalanceOut"]["required"])
    assert schemas["LimitOut"]["properties"]["frees_at"]
    hold = doc["paths"]["/api/accounts/{account_id}/holds"]["post"]["responses"]
    assert "Retry-After" in hold["429"]["headers"]
    assert hold["402"]["content"]["application/json"]["schema"]["$ref"].endswith("/RefusalBody")
    limits = doc["paths"]["/api/accounts/{account_id}/limits/{limit_id}"]
    assert {"put", "delete"} <= set(limits)
    assert {"allowances", "limits", "when_out_of_credits"} <= set(schemas["PlanOut"]["properties"])
    plan = world.call("GET", "/api/plans", world.alice, status=200).json()[0]
    assert (plan["limits"], plan["when_out_of_credits"]) == (
        [{"window": "rolling 5h", "credits": "300"}], {"fallback": "basic-model", "daily_cap": 50})


def test_who_set_a_limit_is_checked_in_the_same_write_that_removes_it(world: World) -> None:
    """The API checks who set a limit before removing it; the engine checks again under the
    account's lock, so a limit replaced in between by someone else is not removed."""
    now = world.clock.now_us
    world.engine.set_limit("dave", "7d", "10", now, scope="member", enterprise_id="initech",
                           limit_id="quota", source="admin")
    world.engine.set_limit("alice", "1d", "10", now, scope="key", key_id=world.alice_key,
                           limit_id="app", source="operator")
    with pytest.raises(Conflict, match="set by the operator"):
        world.engine.remove_limit("alice", "app", now, source="owner")
    with pytest.raises(Conflict, match="set by the admin"):
        world.engine.remove_limit("dave", "quota", now, source="admin", enterprise_id="globex")
    with pytest.raises(Conflict, match="the plan's"):
        world.engine.remove_limit("alice", "plan-1", now)
    removed = world.engine.remove_limit("dave", "quota", now, source="admin", enterprise_id="initech")
    assert removed.id == "quota"
    assert [s.rule.id for s in world.engine.limits("alice", now)] == ["plan-1", "app"]
