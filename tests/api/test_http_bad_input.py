"""SPEC §11 over HTTP: every bad input is a 4xx (never a 5xx) in the error shape
``{"error": {"type", "message", "field"}}`` naming the field, and writes nothing.

"Nothing" is checked twice, before and after each bad request: everything the API shows (the
account list, alice's balance, packages, usage and keys, the prices, an unknown account still
unknown) and every row of every table of the database.

Each case runs on both stores (the ``api`` fixture). Bad values inside a usage batch that the
batch's JSON shape already rules out (negative or fractional tokens, an id over 255 characters)
reject the request; a well-formed event that cannot be charged (an unknown model, feature or
account, a time outside the window) is rejected on its own, in the results of ``POST /api/usage``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from creditmeter.engine import Engine
from creditmeter.store.sql import _driver_url
from tests.api.conftest import OPERATOR

LONG = "x" * 256
GRANTS = "/api/accounts/alice/grants"
HOLDS = "/api/accounts/alice/holds"
SETTLE = "/api/holds/h-open/settle"
USAGE = "/api/accounts/alice/usage"
MAX_BODY = 2 * 1024 * 1024  # the API's default limit


# -- the state that must not change ------------------------------------------------------------------

def seed(api: TestClient) -> None:
    """alice: a trial, a subscription, two charged events, an open hold and a key; bob: nothing."""
    def ok(method: str, path: str, body: Any, status: int) -> None:
        response = api.request(method, path, json=body, headers=OPERATOR)
        assert response.status_code == status, response.text

    ok("POST", "/api/accounts", {"id": "alice"}, 201)
    ok("POST", "/api/accounts", {"id": "bob"}, 201)
    ok("POST", GRANTS, {"id": "g-trial", "amount_credits": "10", "kind": "trial"}, 201)
    ok("POST", GRANTS, {"id": "g-sub", "amount_credits": "100", "kind": "subscription",
                        "expires_at": "2027-01-01T00:00:00Z"}, 201)
    events = [{"id": f"e{i}", "account_id": "alice", "model": "gpt-4o", "input_tokens": 1000,
               "output_tokens": 100 * i} for i in (1, 2)]
    ok("POST", "/api/usage", {"events": events}, 200)
    ok("POST", HOLDS, {"id": "h-open", "amount_credits": "2", "ttl_seconds": 3600}, 201)
    ok("POST", "/api/accounts/alice/keys", {"name": "app"}, 201)


READS = ["/api/accounts", "/api/accounts/alice", "/api/accounts/alice/balance", GRANTS,
         f"{USAGE}?limit=1000", "/api/accounts/alice/usage/summary?group_by=model",
         "/api/accounts/alice/keys", "/api/accounts/bob/balance", "/api/prices",
         "/api/accounts/nobody", "/api/reconcile"]


def tables(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table."""
    db = sa.create_engine(_driver_url(engine.store.url))
    try:
        with db.connect() as conn:
            return {name: sorted((tuple(row) for row in conn.execute(sa.text(f'SELECT * FROM "{name}"'))),
                                 key=repr)
                    for name in sa.inspect(conn).get_table_names()}
    finally:
        db.dispose()


def snapshot(api: TestClient, engine: Engine) -> dict[str, Any]:
    seen: dict[str, Any] = {path: _read(api, path) for path in READS}
    seen["tables"] = tables(engine)
    return seen


def _read(api: TestClient, path: str) -> tuple[int, Any]:
    response = api.get(path, headers=OPERATOR)
    return response.status_code, response.json()


@pytest.fixture
def world(api: TestClient, engine: Engine) -> TestClient:
    seed(api)
    reconcile = api.get("/api/reconcile", headers=OPERATOR).json()
    assert reconcile == {"ok": True, "violations": []}
    return api


def assert_error(response: Any, field: str | set[str], kind: str = "invalid_input") -> None:
    """A 4xx whose body is exactly the error shape, naming ``field`` (or one of ``field``)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"type", "message", "field"} <= set(error), error
    assert error["type"] == kind, error
    fields = {field} if isinstance(field, str) else field
    assert error["field"] in fields, error
    assert isinstance(error["message"], str) and error["field"] in error["message"], error


# -- the cases ---------------------------------------------------------------------------------------

NO_BODY = object()


@dataclass(frozen=True)
class Bad:
    method: str
    path: str
    names: str | frozenset[str]  # the field the error must name (or one of them)
    json: Any = NO_BODY
    content: bytes | None = None
    params: dict[str, Any] = field(default_factory=dict)
    status: int | None = None  # where the exact status matters
    kind: str = "invalid_input"


def event(**changes: Any) -> dict[str, Any]:
    """A usage batch of one event for alice, with ``changes``."""
    return {"events": [{"id": "e-new", "account_id": "alice", "model": "gpt-4o", "input_tokens": 10,
                        **changes}]}


def grant(**changes: Any) -> dict[str, Any]:
    return {"amount_credits": "5", "kind": "addon", **changes}


def raw_grant(amount: str) -> bytes:
    """A grant body with ``amount`` written as is, a JSON number literal (or not quite JSON)."""
    return b'{"kind": "addon", "amount_credits": ' + amount.encode() + b"}"


def post(path: str, body: Any, fld: str | set[str], **kw: Any) -> Bad:
    return Bad("POST", path, fld if isinstance(fld, str) else frozenset(fld), json=body, **kw)


def raw(path: str, content: bytes, fld: str | set[str], **kw: Any) -> Bad:
    return Bad("POST", path, fld if isinstance(fld, str) else frozenset(fld), content=content, **kw)


def get(path: str, params: dict[str, Any], fld: str, **kw: Any) -> Bad:
    return Bad("GET", path, fld, params=params, **kw)


# A literal JSON does not allow; the value that holds it is the field, or the body as a whole.
AMOUNT_OR_BODY = {"amount_credits", "body"}

CASES: dict[str, Bad] = {
    # tokens: negative, not whole, not a number, too many
    "settle: negative tokens": post(SETTLE, {"model": "gpt-4o", "input_tokens": -1}, "input_tokens"),
    "settle: fractional tokens": post(SETTLE, {"model": "gpt-4o", "output_tokens": 0.5}, "output_tokens"),
    "settle: unknown model": post(SETTLE, {"model": "no-such-model", "input_tokens": 10}, "model"),
    "settle: unknown feature": post(SETTLE, {"quantities": {"no-such-feature": 1}},
                                    "quantities.no-such-feature"),
    # amounts: 7 decimals, over 10^12, negative, zero, not a number
    "grant: 7 decimals (string)": post(GRANTS, grant(amount_credits="1.0000001"), "amount_credits"),
    "grant: 7 decimals (number)": post(GRANTS, grant(amount_credits=1.0000001), "amount_credits"),
    "hold: 7 decimals": post(HOLDS, {"amount_credits": "0.0000001"}, "amount_credits"),
    "grant: over 10^12 credits (string)": post(GRANTS, grant(amount_credits="1000000000000.000001"),
                                               "amount_credits"),
    "grant: over 10^12 credits (number)": post(GRANTS, grant(amount_credits=10**12 + 1), "amount_credits"),
    "grant: negative (string)": post(GRANTS, grant(amount_credits="-5"), "amount_credits"),
    "grant: negative (number)": post(GRANTS, grant(amount_credits=-5), "amount_credits"),
    "hold: negative": post(HOLDS, {"amount_credits": "-1"}, "amount_credits"),
    "grant: zero": post(GRANTS, grant(amount_credits="0"), "amount_credits"),
    "grant: not a number": post(GRANTS, grant(amount_credits="ten"), "amount_credits"),
    "grant: 1e400": raw(GRANTS, raw_grant("1e400"), "amount_credits"),
    # 0.1 as a binary float is 0.1000000000000000055511151231257827...: read exactly, that is
    # more than 6 places (0.1 itself is accepted: see the test below).
    "grant: a float's binary expansion": raw(GRANTS, raw_grant("0.1000000000000000055511151231257827"),
                                             "amount_credits"),
    # NaN and Infinity are not JSON, and not amounts
    "grant: NaN": raw(GRANTS, raw_grant("NaN"), AMOUNT_OR_BODY),
    "grant: Infinity": raw(GRANTS, raw_grant("Infinity"), AMOUNT_OR_BODY),
    "hold: NaN": raw(HOLDS, b'{"amount_credits": NaN}', AMOUNT_OR_BODY),
    "grant: a 5000-digit integer": raw(GRANTS, raw_grant("1" + "0" * 5000), AMOUNT_OR_BODY),
    # a wrong type
    "grant: amount true": post(GRANTS, grant(amount_credits=True), "amount_credits"),
    "grant: amount a list": post(GRANTS, grant(amount_credits=[5]), "amount_credits"),
    "grant: amount null": post(GRANTS, grant(amount_credits=None), "amount_credits"),
    "account: id a number": post("/api/accounts", {"id": 42}, "id"),
    "account: unknown kind": post("/api/accounts", {"id": "carol", "kind": "robot"}, "kind"),
    "grant: priority a string": post(GRANTS, grant(priority="5"), "priority"),
    "grant: priority 101": post(GRANTS, grant(priority=101), "priority"),
    "grant: expires_at a number": post(GRANTS, grant(expires_at=1767225600), "expires_at"),
    "hold: ttl fractional": post(HOLDS, {"amount_credits": "1", "ttl_seconds": 1.5}, "ttl_seconds"),
    "usage: events not a list": post("/api/usage", {"events": {"id": "e-new"}}, "events"),
    "usage: no events": post("/api/usage", {"events": []}, "events"),
    "usage: 1001 events": post("/api/usage", {"events": [
        {**event()["events"][0], "id": f"e-{i}"} for i in range(1001)]}, "events"),
    # an unknown field
    "account: unknown field": post("/api/accounts", {"id": "carol", "owner": "x"}, "owner"),
    "grant: unknown field": post(GRANTS, grant(currency="EUR"), "currency"),
    "settle: unknown field": post(SETTLE, {"model": "gpt-4o", "tokens": 5}, "tokens"),
    # times: expiry before the effective time, in the past, not ISO 8601
    "grant: expiry before effective": post(GRANTS, grant(effective_at="2026-12-01T00:00:00Z",
                                                         expires_at="2026-11-20T00:00:00Z"), "expires_at"),
    "grant: expiry equal to effective": post(GRANTS, grant(effective_at="2026-12-01T00:00:00Z",
                                                           expires_at="2026-12-01T00:00:00Z"), "expires_at"),
    "grant: expiry in the past": post(GRANTS, grant(expires_at="2026-11-01T00:00:00Z"), "expires_at"),
    "grant: effective_at not ISO": post(GRANTS, grant(effective_at="next monday"), "effective_at"),
    "grant: expires_at not ISO": post(GRANTS, grant(expires_at="2026-13-45"), "expires_at"),
    "balance: at not ISO": get("/api/accounts/alice/balance", {"at": "yesterday"}, "at"),
    "balance: at before 1970": get("/api/accounts/alice/balance", {"at": "1969-12-31T23:59:59Z"}, "at"),
    "grants: at not ISO": get(GRANTS, {"at": "2026-11-10 noon"}, "at"),
    "prices: at not ISO": get("/api/prices", {"at": "soon"}, "at"),
    "usage: from not ISO": get(USAGE, {"from": "last week"}, "from"),
    "usage: to not ISO": get(USAGE, {"to": "2026-11-31"}, "to"),
    "summary: from not ISO": get(f"{USAGE}/summary", {"from": "x"}, "from"),
    "csv: to not ISO": get("/api/accounts/alice/usage.csv", {"to": "x"}, "to"),
    "usage: to before from": get(USAGE, {"from": "2026-11-10", "to": "2026-11-01"}, "to"),
    "usage: to equal to from": get(USAGE, {"from": "2026-11-10", "to": "2026-11-10"}, "to"),
    "summary: to before from": get(f"{USAGE}/summary", {"from": "2026-11-10", "to": "2026-11-01"}, "to"),
    "csv: to before from": get("/api/accounts/alice/usage.csv", {"from": "2026-11-10", "to": "2026-11-01"},
                               "to"),
    # cursor and limit
    "usage: cursor garbage": get(USAGE, {"cursor": "not-a-cursor"}, "cursor"),
    "usage: cursor valid base64, not ours": get(USAGE, {"cursor": "eyJhIjogMX0"}, "cursor"),
    "usage: cursor over 200 chars": get(USAGE, {"cursor": "c" * 201}, "cursor"),
    "usage: limit 0": get(USAGE, {"limit": 0}, "limit"),
    "usage: limit 1001": get(USAGE, {"limit": 1001}, "limit"),
    "usage: limit not a number": get(USAGE, {"limit": "ten"}, "limit"),
    "summary: unknown group_by": get(f"{USAGE}/summary", {"group_by": "week"}, "group_by"),
    # unknown account
    "grant: unknown account": post("/api/accounts/nobody/grants", grant(), "account_id", status=404,
                                   kind="not_found"),
    "hold: unknown account": post("/api/accounts/nobody/holds", {"amount_credits": "1"}, "account_id",
                                  status=404, kind="not_found"),
    "key: unknown account": post("/api/accounts/nobody/keys", {"name": "k"}, "account_id", status=404,
                                 kind="not_found"),
    "balance: unknown account": get("/api/accounts/nobody/balance", {}, "account_id", status=404,
                                    kind="not_found"),
    "usage: unknown account": get("/api/accounts/nobody/usage", {}, "account_id", status=404,
                                  kind="not_found"),
    "settle: unknown hold": post("/api/holds/no-such-hold/settle", {"model": "gpt-4o"}, "hold_id",
                                 status=404, kind="not_found"),
    # malformed JSON
    "account: malformed JSON": raw("/api/accounts", b'{"id": "carol",', "body"),
    "usage: malformed JSON": raw("/api/usage", b'{"events": [{"id": "e-new"', "body"),
    "grant: empty body": raw(GRANTS, b"", "body"),
    "account: a list, not an object": raw("/api/accounts", b'[{"id": "carol"}]', "body"),
    # over the size limit
    "account: body over the limit": raw("/api/accounts", b'{"id": "' + b"x" * MAX_BODY + b'"}', "body",
                                        status=413, kind="too_large"),
    "usage: body over the limit": post("/api/usage", {"events": [
        {**event()["events"][0], "id": f"e-{i}", "metadata": {"pad": "p" * 3000}} for i in range(800)]},
        "body", status=413, kind="too_large"),
    # ids over 255 characters
    "account: id over 255": post("/api/accounts", {"id": LONG}, "id"),
    "account: name over 255": post("/api/accounts", {"id": "carol", "name": LONG}, "name"),
    "grant: id over 255": post(GRANTS, grant(id=LONG), "id"),
    "hold: id over 255": post(HOLDS, {"amount_credits": "1", "id": LONG}, "id"),
    "settle: id over 255": post(SETTLE, {"model": "gpt-4o", "id": LONG}, "id"),
    "grant: account id over 255 in the path": post(f"/api/accounts/{LONG}/grants", grant(), "account_id"),
    "balance: account id over 255 in the path": get(f"/api/accounts/{LONG}/balance", {}, "account_id"),
}


@pytest.mark.parametrize("bad", CASES.values(), ids=CASES.keys())
def test_a_bad_input_is_a_4xx_naming_the_field_and_writes_nothing(world: TestClient, engine: Engine,
                                                                   bad: Bad) -> None:
    before = snapshot(world, engine)
    kwargs: dict[str, Any] = {"params": bad.params, "headers": dict(OPERATOR)}
    if bad.content is not None:
        kwargs["content"] = bad.content
        kwargs["headers"]["content-type"] = "application/json"
    elif bad.json is not NO_BODY:
        kwargs["json"] = bad.json
    response = world.request(bad.method, bad.path, **kwargs)
    fields = bad.names if isinstance(bad.names, str) else set(bad.names)
    assert_error(response, fields, bad.kind)
    if bad.status is not None:
        assert response.status_code == bad.status, response.text
    assert snapshot(world, engine) == before


# -- a usage event that is well formed but cannot be charged: rejected on its own ---------------------

GOOD = {"account_id": "alice", "model": "gpt-4o", "input_tokens": 1000}
# (what changes in a good event (None: left out), the field named, the error type)
REJECTED: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown model": ({"model": "no-such-model"}, "model", "invalid_input"),
    "no usage at all": ({"input_tokens": None}, "event", "invalid_input"),
    "only zero units": ({"input_tokens": 0, "quantities": {"web_search": 0}}, "event", "invalid_input"),
    "unknown feature": ({"model": None, "input_tokens": None, "quantities": {"no-such-feature": 2}},
                        "quantities.no-such-feature", "invalid_input"),
    "unknown account": ({"account_id": "nobody"}, "account_id", "not_found"),
    "timestamp not ISO": ({"timestamp": "yesterday"}, "timestamp", "invalid_input"),
    "timestamp older than the lateness window": ({"timestamp": "2026-10-01T00:00:00Z"}, "timestamp",
                                                 "invalid_input"),
    "timestamp in the future": ({"timestamp": "2026-11-10T13:00:00Z"}, "timestamp", "invalid_input"),
    "no model and no quantities": ({"model": None, "input_tokens": None}, "model", "invalid_input"),
    "tokens but no model": ({"model": None}, "model", "invalid_input"),
    # Shape errors too: one bad event does not stop the others (SPEC §5).
    "negative input tokens": ({"input_tokens": -1}, "input_tokens", "invalid_input"),
    "fractional output tokens": ({"output_tokens": 1.5}, "output_tokens", "invalid_input"),
    "string cached tokens": ({"cached_input_tokens": "12"}, "cached_input_tokens", "invalid_input"),
    "boolean cache-write tokens": ({"cache_write_tokens": True}, "cache_write_tokens", "invalid_input"),
    "tokens over 10^12": ({"input_tokens": 10**12 + 1}, "input_tokens", "invalid_input"),
    "negative reasoning tokens": ({"reasoning_tokens": -1}, "reasoning_tokens", "invalid_input"),
    "unknown service tier": ({"service_tier": "premium"}, "service_tier", "invalid_input"),
    "negative feature quantity": ({"quantities": {"web_search": -1}}, "quantities.web_search",
                                  "invalid_input"),
    "metadata a string": ({"metadata": "conversation 7"}, "metadata", "invalid_input"),
    "unknown event field": ({"cost_credits": "0"}, "cost_credits", "invalid_input"),
    "account id over 255": ({"account_id": LONG}, "account_id", "invalid_input"),
    "model over 255": ({"model": LONG}, "model", "invalid_input"),
}


@pytest.mark.parametrize(("change", "fld", "kind"), REJECTED.values(), ids=REJECTED.keys())
def test_an_event_that_cannot_be_charged_is_rejected_in_the_results_and_writes_nothing(
        world: TestClient, engine: Engine, change: dict[str, Any], fld: str, kind: str) -> None:
    before = snapshot(world, engine)
    bad = {k: v for k, v in {"id": "e-bad", **GOOD, **change}.items() if v is not None}
    response = world.post("/api/usage", json={"events": [bad]}, headers=OPERATOR)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["charged"], body["duplicate"], body["rejected"]) == (0, 0, 1), body
    [result] = body["results"]
    assert result["event_id"] == "e-bad" and result["status"] == "rejected", result
    error = result["error"]
    assert {"type", "message", "field"} <= set(error), error
    assert (error["type"], error["field"]) == (kind, fld), error
    assert isinstance(error["message"], str) and error["message"], error
    assert snapshot(world, engine) == before
    # The rejected id was not taken: the same id with a good body is charged, not a conflict.
    again = world.post("/api/usage", json={"events": [{"id": "e-bad", **GOOD}]}, headers=OPERATOR)
    assert again.status_code == 200 and again.json()["charged"] == 1, again.text


def test_an_event_id_over_255_characters_is_rejected_in_the_results(world: TestClient,
                                                                   engine: Engine) -> None:
    before = snapshot(world, engine)
    body = world.post("/api/usage", json={"events": [{"id": LONG, **GOOD}]}, headers=OPERATOR).json()
    [result] = body["results"]
    assert result["status"] == "rejected" and result["error"]["field"] == "id", result
    assert snapshot(world, engine) == before


def test_in_a_batch_only_the_events_that_cannot_be_charged_are_rejected(world: TestClient,
                                                                        engine: Engine) -> None:
    before = world.get("/api/accounts/alice/balance", headers=OPERATOR).json()
    events = [{"id": "b-1", **GOOD}, {"id": "b-2", **GOOD, "model": "no-such-model"},
              {"id": "b-3", **GOOD, "account_id": "nobody"}, {"id": "b-4", **GOOD, "output_tokens": 1000},
              {"id": "b-5", **GOOD, "output_tokens": -3}]
    body = world.post("/api/usage", json={"events": events}, headers=OPERATOR).json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["charged", "rejected", "rejected", "charged", "rejected"]
    rejected = [r["error"]["field"] for r in body["results"] if r["status"] == "rejected"]
    assert rejected == ["model", "account_id", "output_tokens"]
    page = world.get(USAGE, params={"limit": 1000}, headers=OPERATOR).json()
    assert [e["event_id"] for e in page["events"]][:2] == ["b-4", "b-1"]
    assert {"b-2", "b-3"}.isdisjoint(e["event_id"] for e in page["events"])
    # gpt-4o: 1,000 input = 0.25 credits; b-4 adds 1,000 output = 1 credit.
    after = world.get("/api/accounts/alice/balance", headers=OPERATOR).json()
    spent = Decimal(before["available_credits"]) - Decimal(after["available_credits"])
    assert spent == Decimal("1.5")
    assert world.get("/api/reconcile", headers=OPERATOR).json()["ok"] is True


# -- amounts given as JSON numbers are read exactly --------------------------------------------------

@pytest.mark.parametrize(("literal", "credits"), [
    ("0.1", "0.1"), ("2.675", "2.675"), ("0.000001", "0.000001"), ("1e-6", "0.000001"), ("1E2", "100"),
    ("1.100000", "1.1"), ("999999.999999", "999999.999999"), ("1000000000000", "1000000000000"),
])
def test_a_json_number_amount_is_read_exactly(world: TestClient, literal: str, credits: str) -> None:
    before = world.get("/api/accounts/bob/balance", headers=OPERATOR).json()
    response = world.post("/api/accounts/bob/grants", content=raw_grant(literal),
                          headers={**OPERATOR, "content-type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["granted_credits"] == credits
    after = world.get("/api/accounts/bob/balance", headers=OPERATOR).json()
    assert Decimal(after["available_credits"]) - Decimal(before["available_credits"]) == Decimal(credits)
    assert after["available_credits"] == credits  # bob had nothing
    assert world.get("/api/reconcile", headers=OPERATOR).json()["ok"] is True


def test_point_one_twice_is_exactly_point_two(world: TestClient) -> None:
    for _ in range(2):
        response = world.post("/api/accounts/bob/grants", content=raw_grant("0.1"),
                              headers={**OPERATOR, "content-type": "application/json"})
        assert response.status_code == 201, response.text
    balance = world.get("/api/accounts/bob/balance", headers=OPERATOR).json()
    assert balance["available_credits"] == "0.2"
    hold = world.post("/api/accounts/bob/holds", content=b'{"amount_credits": 0.1}',
                      headers={**OPERATOR, "content-type": "application/json"})
    assert hold.status_code == 201, hold.text
    assert hold.json()["amount_credits"] == "0.1"
    balance = world.get("/api/accounts/bob/balance", headers=OPERATOR).json()
    assert (balance["available_credits"], balance["held_credits"]) == ("0.1", "0.1")
