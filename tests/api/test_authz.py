"""Who may call what: every route of the API against every kind of caller (SPEC §10 keys and
roles, §11 errors).

The callers are the operator key, the owner's key (alice), another user's key (bob), a revoked
key of alice's and no key at all. ``MATRIX`` has one row per route; a route added without a row
fails ``test_the_matrix_covers_every_route_exactly``.

Expected, for every route:

- no key, or a revoked key: 401 on every ``/api`` path and ``/metrics``; ``/healthz`` is public;
- operator-only routes: 403 for any account key, whatever object the call names (its own too),
  and nothing is written;
- scoped routes: the operator and the owner succeed; another user gets 404, exactly as for an
  object that does not exist (never 403, never a hint that the object exists);
- ``GET /api/prices`` and ``GET /api/me``: any valid key.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from creditmeter.enterprise import allocation_grant_id
from creditmeter.plans import default_plans
from tests.api.conftest import OPERATOR, bearer

# -- callers and roles ---------------------------------------------------------------------------


class Caller(enum.StrEnum):
    OPERATOR = "operator key"
    OWNER = "owner's key (alice)"
    OTHER = "another user's key (bob)"
    REVOKED = "revoked key"
    NONE = "no key"


class Access(enum.Enum):
    PUBLIC = "public"          # anyone, with or without a key
    ANY_KEY = "any valid key"  # every valid key, same answer
    OPERATOR = "operator only"
    SCOPED = "scoped"          # the operator, and the account the object belongs to


ERROR_TYPES = {401: "unauthorized", 403: "forbidden", 404: "not_found"}


def expected_status(access: Access, caller: Caller, ok: int) -> int:
    if access is Access.PUBLIC:
        return ok
    if caller in (Caller.REVOKED, Caller.NONE):
        return 401
    if access is Access.ANY_KEY or caller is Caller.OPERATOR:
        return ok
    if access is Access.OPERATOR:
        return 403
    return ok if caller is Caller.OWNER else 404


# -- the objects a call may name -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The objects of one account a call names (or of no account: ``MISSING``)."""

    account_id: str
    key_id: str          # a key of the account's that the call may revoke
    void_grant_id: str   # a grant of the account's that the call may void
    settle_hold_id: str  # an open hold of the account's that the call may settle
    release_hold_id: str  # an open hold of the account's that the call may release
    subscription_id: str  # a running subscription of the account's that the call may cancel
    enterprise_id: str    # an enterprise the account administers (its own id for an enterprise)
    allocation_id: str    # an allocation of that enterprise's


MISSING = Target("nobody", "key_0000000000000000", "g-nobody", "h-nobody", "h-nobody-2", "s-nobody",
                 "e-nobody", "q-nobody")


@dataclass
class Seed:
    """What ``seed`` made through the API: keys by caller and the objects of each account."""

    headers: dict[Caller, dict[str, str]]
    targets: dict[str, Target]  # by account id
    spare_key_ids: dict[str, str]  # second revocable key of each user account (for the owner)
    fresh: Iterator[int]

    def target(self, account_id: str, caller: Caller) -> Target:
        """``account_id``'s objects as ``caller`` names them: the owner revokes a key of its own
        that nobody else's call touches, so that each successful revoke has a live key."""
        target = self.targets[account_id]
        if caller is Caller.OWNER and account_id in self.spare_key_ids:
            return Target(target.account_id, self.spare_key_ids[account_id], target.void_grant_id,
                          target.settle_hold_id, target.release_hold_id, target.subscription_id,
                          target.enterprise_id, target.allocation_id)
        return target

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.fresh)}"


# -- the matrix ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    json: Any = None
    params: dict[str, str] | None = None


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # the route's path template, as the app declares it
    access: Access
    ok: int    # the status of a successful call
    call: Callable[[Seed, Target], Call]

    @property
    def route(self) -> tuple[str, str]:
        return self.method, self.path

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ADMINISTERS = {"alice": "initech", "bob": "globex"}
FUTURE_CATALOG = {"models": {"gpt-4o": {"input": "250", "output": "1000"}}}


def _rows() -> list[Row]:
    def get(url: Callable[[Target], str], params: dict[str, str] | None = None,
            ) -> Callable[[Seed, Target], Call]:
        return lambda seed, t: Call("GET", url(t), params=params)

    def post(url: Callable[[Target], str], body: Callable[[Seed, Target], Any] = lambda s, t: None,
             method: str = "POST") -> Callable[[Seed, Target], Call]:
        return lambda seed, t: Call(method, url(t), body(seed, t))

    def account(suffix: str = "") -> Callable[[Target], str]:
        return lambda t: f"/api/accounts/{t.account_id}{suffix}"

    def fixed(url: str) -> Callable[[Target], str]:
        return lambda t: url

    a = "/api/accounts/{account_id}"
    return [
        Row("GET", "/api/me", Access.ANY_KEY, 200, get(fixed("/api/me"))),
        Row("POST", "/api/accounts", Access.OPERATOR, 201,
            post(fixed("/api/accounts"), lambda s, t: {"id": s.new_id(t.account_id)})),
        Row("GET", "/api/accounts", Access.OPERATOR, 200, get(fixed("/api/accounts"))),
        Row("GET", a, Access.SCOPED, 200, get(account())),
        Row("POST", a + "/keys", Access.SCOPED, 201, post(account("/keys"), lambda s, t: {"name": "matrix"})),
        Row("GET", a + "/keys", Access.SCOPED, 200, get(account("/keys"))),
        Row("POST", "/api/keys/{key_id}/revoke", Access.SCOPED, 200,
            post(lambda t: f"/api/keys/{t.key_id}/revoke")),
        Row("POST", a + "/grants", Access.OPERATOR, 201,
            post(account("/grants"), lambda s, t: {"amount_credits": "3", "kind": "promo",
                                                    "id": s.new_id("g-matrix")})),
        Row("GET", a + "/grants", Access.SCOPED, 200, get(account("/grants"))),
        Row("POST", "/api/grants/{grant_id}/void", Access.OPERATOR, 200,
            post(lambda t: f"/api/grants/{t.void_grant_id}/void")),
        Row("GET", a + "/balance", Access.SCOPED, 200, get(account("/balance"))),
        Row("POST", "/api/usage", Access.OPERATOR, 200,
            post(fixed("/api/usage"), lambda s, t: {"events": [
                {"id": s.new_id("e-matrix"), "account_id": t.account_id, "model": "gpt-4o",
                 "input_tokens": 1000}]})),
        Row("GET", a + "/usage", Access.SCOPED, 200, get(account("/usage"))),
        Row("GET", a + "/usage/summary", Access.SCOPED, 200,
            get(account("/usage/summary"), {"group_by": "model"})),
        Row("GET", a + "/usage.csv", Access.SCOPED, 200, get(account("/usage.csv"))),
        Row("POST", a + "/holds", Access.OPERATOR, 201,
            post(account("/holds"), lambda s, t: {"amount_credits": "1", "id": s.new_id("h-matrix")})),
        Row("POST", "/api/holds/{hold_id}/settle", Access.OPERATOR, 200,
            post(lambda t: f"/api/holds/{t.settle_hold_id}/settle",
                 lambda s, t: {"model": "gpt-4o", "input_tokens": 2000})),
        Row("POST", "/api/holds/{hold_id}/release", Access.OPERATOR, 200,
            post(lambda t: f"/api/holds/{t.release_hold_id}/release")),
        Row("GET", a + "/limits", Access.SCOPED, 200, get(account("/limits"))),
        # A limit on one of the account's keys: the owner's to set and remove, as the operator's.
        Row("PUT", a + "/limits/{limit_id}", Access.SCOPED, 200,
            post(account("/limits/lim-matrix"), lambda s, t: {"window": "1d", "credits": "5",
                                                             "scope": "key", "key_id": t.key_id},
                 method="PUT")),
        Row("DELETE", a + "/limits/{limit_id}", Access.SCOPED, 204,
            post(account("/limits/lim-matrix"), method="DELETE")),
        Row("PUT", a + "/when-out-of-credits", Access.OPERATOR, 200,
            post(account("/when-out-of-credits"), lambda s, t: {"policy": {"overage": "5"}}, method="PUT")),
        Row("GET", a + "/auto-topup", Access.SCOPED, 200, get(account("/auto-topup"))),
        Row("PUT", a + "/auto-topup", Access.OPERATOR, 200,
            post(account("/auto-topup"), lambda s, t: {"auto_topup": {
                "below": "20", "pack": "addon-1000", "max_per_month": 2}}, method="PUT")),
        Row("GET", "/api/plans", Access.ANY_KEY, 200, get(fixed("/api/plans"))),
        Row("POST", "/api/plans", Access.OPERATOR, 201,
            post(fixed("/api/plans"), lambda s, t: {"plans": default_plans().to_dict()["plans"]})),
        Row("POST", a + "/subscriptions", Access.OPERATOR, 201,
            post(account("/subscriptions"), lambda s, t: {"plan_id": "trial", "id": s.new_id("trial")})),
        Row("POST", "/api/subscriptions/{subscription_id}/cancel", Access.OPERATOR, 200,
            post(lambda t: f"/api/subscriptions/{t.subscription_id}/cancel")),
        Row("GET", a + "/subscription", Access.SCOPED, 200, get(account("/subscription"))),
        Row("POST", a + "/purchases", Access.OPERATOR, 201,
            post(account("/purchases"), lambda s, t: {"pack_id": "addon-1000", "id": s.new_id("order")})),
        Row("GET", "/api/enterprises/{enterprise_id}", Access.SCOPED, 200,
            get(lambda t: f"/api/enterprises/{t.enterprise_id}")),
        Row("POST", "/api/enterprises/{enterprise_id}/members", Access.OPERATOR, 201,
            post(lambda t: f"/api/enterprises/{t.enterprise_id}/members",
                 lambda s, t: {"account_id": "carol", "role": "member"})),
        Row("POST", "/api/enterprises/{enterprise_id}/members/{account_id}/remove", Access.OPERATOR, 204,
            post(lambda t: f"/api/enterprises/{t.enterprise_id}/members/dave/remove")),
        Row("POST", "/api/enterprises/{enterprise_id}/allocations", Access.SCOPED, 201,
            post(lambda t: f"/api/enterprises/{t.enterprise_id}/allocations",
                 lambda s, t: {"account_id": "erin", "amount_credits": "1", "id": s.new_id("q")})),
        Row("POST", "/api/enterprises/{enterprise_id}/allocations/{allocation_id}/revoke", Access.SCOPED,
            200, post(lambda t: f"/api/enterprises/{t.enterprise_id}/allocations/{t.allocation_id}/revoke")),
        Row("GET", a + "/notifications", Access.SCOPED, 200, get(account("/notifications"))),
        Row("POST", a + "/notifications/read", Access.SCOPED, 200,
            post(account("/notifications/read"), lambda s, t: {"all": True})),
        Row("POST", "/api/webhooks", Access.OPERATOR, 201,
            post(fixed("/api/webhooks"), lambda s, t: {"url": "http://127.0.0.1:9/matrix"})),
        Row("GET", "/api/webhooks", Access.OPERATOR, 200, get(fixed("/api/webhooks"))),
        # The operator's calls below name no endpoint or delivery (404); their successes are in
        # tests/api/test_webhooks_api.py. What matters here: nobody else gets past 403.
        Row("GET", "/api/webhooks/{endpoint_id}", Access.OPERATOR, 404, get(fixed("/api/webhooks/wh_none"))),
        Row("DELETE", "/api/webhooks/{endpoint_id}", Access.OPERATOR, 404,
            post(fixed("/api/webhooks/wh_none"), method="DELETE")),
        Row("POST", "/api/webhooks/{endpoint_id}/enable", Access.OPERATOR, 404,
            post(fixed("/api/webhooks/wh_none/enable"))),
        Row("GET", "/api/webhooks/{endpoint_id}/deliveries", Access.OPERATOR, 404,
            get(fixed("/api/webhooks/wh_none/deliveries"))),
        Row("GET", "/api/deliveries/{delivery_id}", Access.OPERATOR, 404,
            get(fixed("/api/deliveries/dlv_none"))),
        Row("POST", "/api/deliveries/{delivery_id}/replay", Access.OPERATOR, 404,
            post(fixed("/api/deliveries/dlv_none/replay"))),
        Row("GET", "/api/prices", Access.ANY_KEY, 200, get(fixed("/api/prices"))),
        Row("POST", "/api/prices", Access.OPERATOR, 201,
            post(fixed("/api/prices"), lambda s, t: {"catalog": FUTURE_CATALOG,
                                                     "effective_at": "2027-06-01T00:00:00Z"})),
        Row("POST", "/api/tick", Access.OPERATOR, 200, post(fixed("/api/tick"))),
        Row("GET", "/api/reconcile", Access.OPERATOR, 200, get(fixed("/api/reconcile"))),
        Row("GET", "/healthz", Access.PUBLIC, 200, get(fixed("/healthz"))),
        Row("GET", "/metrics", Access.OPERATOR, 200, get(fixed("/metrics"))),
    ]


MATRIX = _rows()
SCOPED = [row for row in MATRIX if row.access is Access.SCOPED]
OPERATOR_ONLY = [row for row in MATRIX if row.access is Access.OPERATOR]


# Surfaces with their own callers and their own authorization tests: the gateway (an account key
# in OpenAI's error shape: tests/gateway) and the console (a session cookie: tests/browser).
ELSEWHERE = ("/v1/", "/console")


def app_routes(app: Any) -> set[tuple[str, str]]:
    """Every (method, path template) the app serves, but the OpenAPI document and its viewers."""
    try:  # FastAPI keeps an included router as one entry; this walks into it.
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI lists included routes flat
        routes: Iterable[Any] = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    served: set[tuple[str, str]] = set()
    for route in routes:
        path = getattr(route, "path", None)
        if path in docs or path.startswith(ELSEWHERE):
            continue
        methods = getattr(route, "methods", None)
        assert path and methods, f"a route the matrix cannot describe: {route!r}"
        served |= {(method, path) for method in methods if method != "HEAD"}
    return served


# -- seeding and calling -------------------------------------------------------------------------


def ok(response: httpx2.Response, status: int, what: str) -> Any:
    assert response.status_code == status, f"seeding: {what}: {response.status_code} {response.text}"
    return response.json()


def seed_world(api: TestClient) -> Seed:
    """Through the API, with the operator key: users alice and bob, enterprise acme, a grant, an
    event and holds on each, keys for alice and bob, and a key of alice's that is revoked."""
    targets: dict[str, Target] = {}
    spare: dict[str, str] = {}
    keys: dict[str, str] = {}
    for account_id, kind in (("alice", "user"), ("bob", "user"), ("acme", "enterprise")):
        ok(api.post("/api/accounts", headers=OPERATOR, json={"id": account_id, "kind": kind}), 201,
           f"create {account_id}")
        ok(api.post(f"/api/accounts/{account_id}/grants", headers=OPERATOR,
                    json={"amount_credits": "1000", "kind": "trial", "id": f"g-{account_id}"}),
           201, f"grant on {account_id}")
        ok(api.post(f"/api/accounts/{account_id}/grants", headers=OPERATOR,
                    json={"amount_credits": "5", "kind": "promo", "id": f"g-{account_id}-void"}),
           201, f"second grant on {account_id}")
        results = ok(api.post("/api/usage", headers=OPERATOR, json={"events": [
            {"id": f"e-{account_id}", "account_id": account_id, "model": "gpt-4o",
             "input_tokens": 1000, "output_tokens": 500}]}), 200, f"usage on {account_id}")
        assert results["charged"] == 1, f"seeding: usage on {account_id}: {results}"
        for hold_id in (f"h-{account_id}", f"h-{account_id}-2"):
            ok(api.post(f"/api/accounts/{account_id}/holds", headers=OPERATOR,
                        json={"amount_credits": "10", "id": hold_id}), 201, f"hold {hold_id}")
        key_ids = []
        for name in ("main", "spare", "spare-2"):
            created = ok(api.post(f"/api/accounts/{account_id}/keys", headers=OPERATOR,
                                  json={"name": name}), 201, f"key {name} of {account_id}")
            assert created["key"] and created["account_id"] == account_id
            keys[f"{account_id}:{name}"] = created["key"]
            key_ids.append(created["key_id"])
        spare[account_id] = key_ids[2]
        plan = "enterprise-seat" if kind == "enterprise" else "professional-monthly"
        ok(api.post(f"/api/accounts/{account_id}/subscriptions", headers=OPERATOR,
                    json={"plan_id": plan, "id": f"s-{account_id}"}), 201, f"subscription of {account_id}")
        enterprise_id = ADMINISTERS.get(account_id, account_id)
        targets[account_id] = Target(account_id, key_ids[1], f"g-{account_id}-void", f"h-{account_id}",
                                     f"h-{account_id}-2", f"s-{account_id}", enterprise_id,
                                     allocation_grant_id(enterprise_id, f"q-{enterprise_id}"))
    # Enterprises administered by alice (initech) and by bob (globex), with members and quota.
    for account_id, kind in (("initech", "enterprise"), ("globex", "enterprise"), ("carol", "user"),
                             ("dave", "user"), ("erin", "user")):
        ok(api.post("/api/accounts", headers=OPERATOR, json={"id": account_id, "kind": kind}), 201,
           f"create {account_id}")
    for user, enterprise_id in [*ADMINISTERS.items(), (None, "acme")]:
        if user is not None:
            ok(api.post(f"/api/accounts/{enterprise_id}/grants", headers=OPERATOR,
                        json={"amount_credits": "1000", "kind": "package", "id": f"g-{enterprise_id}"}),
               201, f"pool grant of {enterprise_id}")
        roles = [(user, "admin")] if user is not None else []
        for member_id, role in (*roles, ("dave", "member"), ("erin", "member")):
            ok(api.post(f"/api/enterprises/{enterprise_id}/members", headers=OPERATOR,
                        json={"account_id": member_id, "role": role}), 201, f"{member_id} in {enterprise_id}")
        ok(api.post(f"/api/enterprises/{enterprise_id}/allocations", headers=OPERATOR,
                    json={"account_id": "erin", "amount_credits": "5", "id": f"q-{enterprise_id}"}),
           201, f"quota of {enterprise_id} to erin")
    revoked = ok(api.post("/api/accounts/alice/keys", headers=OPERATOR, json={"name": "revoked"}), 201,
                 "alice's key to revoke")
    ok(api.post(f"/api/keys/{revoked['key_id']}/revoke", headers=OPERATOR), 200, "revoke alice's key")
    headers = {Caller.OPERATOR: OPERATOR, Caller.OWNER: bearer(keys["alice:main"]),
               Caller.OTHER: bearer(keys["bob:main"]), Caller.REVOKED: bearer(revoked["key"]),
               Caller.NONE: {}}
    seed = Seed(headers, targets, {"alice": spare["alice"], "bob": spare["bob"]}, itertools.count(1))
    for caller, account_id in ((Caller.OWNER, "alice"), (Caller.OTHER, "bob")):
        me = ok(api.get("/api/me", headers=headers[caller]), 200, f"/api/me for {caller}")
        assert me["role"] == "account" and me["account_id"] == account_id, f"seeding: {caller}: {me}"
    return seed


@pytest.fixture
def seed(api: TestClient) -> Seed:
    return seed_world(api)


def send(api: TestClient, seed: Seed, row: Row, caller: Caller, target: Target) -> httpx2.Response:
    call = row.call(seed, target)
    return api.request(call.method, call.url, headers=seed.headers[caller], json=call.json,
                       params=call.params)


def error_shape_problem(response: httpx2.Response) -> str | None:
    """Why the response is not ``{"error": {"type", "message", "field"?}}`` (None if it is)."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return f"not {{'error': {{...}}}}: {body!r}"
    error = body["error"]
    keys = set(error)
    if not {"type", "message"} <= keys or not keys <= {"type", "message", "field"}:
        return f"error keys {sorted(keys)} are not type, message and optionally field: {body!r}"
    if not all(isinstance(error[k], str) and error[k] for k in keys):
        return f"error values must be non-empty strings: {body!r}"
    return None


def check(response: httpx2.Response, expected: int, where: str) -> list[str]:
    """What is wrong with ``response`` (empty when it is what ``expected`` calls for)."""
    if response.status_code != expected:
        return [f"{where}: expected {expected}, got {response.status_code}: {response.text[:300]}"]
    if expected < 400:
        return []
    problem = error_shape_problem(response)
    if problem:
        return [f"{where}: {problem}"]
    problems = []
    kind = response.json()["error"]["type"]
    if expected in ERROR_TYPES and kind != ERROR_TYPES[expected]:
        problems.append(f"{where}: error type {kind!r}, expected {ERROR_TYPES[expected]!r}")
    if expected == 401 and response.headers.get("www-authenticate") != "Bearer":
        problems.append(f"{where}: 401 without 'WWW-Authenticate: Bearer'")
    return problems


def snapshot(api: TestClient) -> dict[str, Any]:
    """Everything an operator can read: what a call that must write nothing must leave as is."""
    state: dict[str, Any] = {"prices": api.get("/api/prices", headers=OPERATOR).json()}
    accounts = api.get("/api/accounts", headers=OPERATOR).json()
    state["accounts"] = accounts
    for account in accounts:
        base = f"/api/accounts/{account['id']}"
        state[account["id"]] = {
            "balance": api.get(base + "/balance", headers=OPERATOR).json(),
            "grants": api.get(base + "/grants", headers=OPERATOR).json(),
            "usage": api.get(base + "/usage", headers=OPERATOR, params={"limit": "1000"}).json(),
            "summary": api.get(base + "/usage/summary", headers=OPERATOR).json(),
            "csv": api.get(base + "/usage.csv", headers=OPERATOR).text,
            "keys": api.get(base + "/keys", headers=OPERATOR).json(),
        }
    return state


def report(problems: list[str]) -> str:
    return f"{len(problems)} wrong answers:\n" + "\n".join(problems)


# -- the tests -----------------------------------------------------------------------------------


def test_the_matrix_covers_every_route_exactly(api: TestClient) -> None:
    rows = [row.route for row in MATRIX]
    assert len(rows) == len(set(rows)), f"a route with two matrix rows: {sorted(rows)}"
    served = app_routes(api.app)
    assert served, "no route found in the app"
    missing = sorted(served - set(rows))
    stale = sorted(set(rows) - served)
    assert not missing, f"routes without a row in MATRIX (add one with its expected access): {missing}"
    assert not stale, f"MATRIX rows for routes the app does not serve: {stale}"


def test_every_route_answers_every_caller_as_its_role_allows(api: TestClient, seed: Seed) -> None:
    """Each route × caller once. Refusals first (and they write nothing), then the calls that
    succeed, the operator last, on alice's objects: each success also shows the objects the
    refused calls named existed."""
    problems: list[str] = []
    cells: set[tuple[str, str, Caller]] = set()

    def run(row: Row, caller: Caller) -> None:
        expected = expected_status(row.access, caller, row.ok)
        response = send(api, seed, row, caller, seed.target("alice", caller))
        problems.extend(check(response, expected, f"{row} as {caller}"))
        assert (row.method, row.path, caller) not in cells
        cells.add((row.method, row.path, caller))

    def refused(row: Row, caller: Caller) -> bool:
        return expected_status(row.access, caller, row.ok) >= 400

    before = snapshot(api)
    for row, caller in itertools.product(MATRIX, Caller):
        if refused(row, caller):
            run(row, caller)
    if snapshot(api) != before:
        problems.append("the refused calls above wrote something (the operator's view changed)")
    for caller in (Caller.OTHER, Caller.OWNER, Caller.REVOKED, Caller.NONE, Caller.OPERATOR):
        for row in MATRIX:
            if not refused(row, caller):
                run(row, caller)

    everything = {(row.method, row.path, caller) for row in MATRIX for caller in Caller}
    assert cells == everything, f"cells not checked: {sorted(everything - cells)}"
    assert len(cells) == len(app_routes(api.app)) * len(Caller)
    assert not problems, report(problems)
    assert api.get("/api/reconcile", headers=OPERATOR).json() == {"ok": True, "violations": []}


def test_any_valid_key_reads_me_and_prices(api: TestClient, seed: Seed) -> None:
    expected = {Caller.OPERATOR: ("operator", None), Caller.OWNER: ("account", "alice"),
                Caller.OTHER: ("account", "bob")}
    prices = {caller: api.get("/api/prices", headers=seed.headers[caller]) for caller in expected}
    for caller, (role, account_id) in expected.items():
        me = api.get("/api/me", headers=seed.headers[caller])
        assert me.status_code == 200, f"GET /api/me as {caller}: {me.status_code} {me.text}"
        assert (me.json()["role"], me.json()["account_id"]) == (role, account_id), f"/api/me as {caller}"
        assert prices[caller].status_code == 200, f"GET /api/prices as {caller}: {prices[caller].text}"
        assert prices[caller].json() == prices[Caller.OPERATOR].json(), f"GET /api/prices as {caller}"
    assert prices[Caller.OPERATOR].json()["current_version"] is not None


def test_another_tenants_object_is_not_found_like_a_missing_one(api: TestClient, seed: Seed) -> None:
    """Every scoped route, for every account key naming an object not its own: bob on alice's,
    alice on bob's, either on the enterprise acme (of which neither is a member). Each answer is
    404 with the same status, error type and field as the same call naming an object that does
    not exist; the owner's own call on the same path succeeds (it exists)."""
    problems: list[str] = []
    compared = 0
    pairs = [(Caller.OTHER, "alice"), (Caller.OWNER, "bob"), (Caller.OTHER, "acme"),
             (Caller.OWNER, "acme")]
    for row in SCOPED:
        for caller, account_id in pairs:
            where = f"{row} as {caller} on {account_id}'s object"
            foreign = send(api, seed, row, caller, seed.target(account_id, Caller.OTHER))
            missing = send(api, seed, row, caller, MISSING)
            problems += check(foreign, 404, where)
            problems += check(missing, 404, f"{row} as {caller} on a missing object")
            if foreign.status_code != missing.status_code:
                problems.append(f"{where}: {foreign.status_code}, but {missing.status_code} for a "
                                f"missing object")
            elif foreign.status_code >= 400 and not error_shape_problem(foreign) \
                    and not error_shape_problem(missing):
                mine, absent = foreign.json()["error"], missing.json()["error"]
                if (mine["type"], sorted(mine), mine.get("field")) != \
                        (absent["type"], sorted(absent), absent.get("field")):
                    problems.append(f"{where}: error {mine!r} differs in shape from {absent!r} for a "
                                    f"missing object")
            compared += 1
        # The objects named above are real: their owners (the operator for acme) see them.
        for owner, account_id in ((Caller.OWNER, "alice"), (Caller.OTHER, "bob"), (Caller.OPERATOR, "acme")):
            target = seed.target(account_id, owner if owner is not Caller.OTHER else Caller.OWNER)
            if row.method == "POST" and owner is not Caller.OPERATOR:
                continue  # writes by the owner are in the matrix; they would change the next pair
            response = send(api, seed, row, owner, target)
            problems += check(response, row.ok, f"{row} as {owner} on its own {account_id}")
    assert compared == len(SCOPED) * len(pairs) > 0
    assert not problems, report(problems)


def test_a_user_can_never_grant_void_price_or_post_usage(api: TestClient, seed: Seed) -> None:
    """Account keys on operator-only routes, naming their own objects, another's, the
    enterprise's and missing ones: 403 every time (the role is refused before anything is looked
    up), and nothing is written: the balance, packages and usage of every account stay as they
    were."""
    before = snapshot(api)
    problems: list[str] = []
    calls = 0
    for row in OPERATOR_ONLY:
        for caller in (Caller.OWNER, Caller.OTHER):
            for account_id in ("alice", "bob", "acme", None):
                target = MISSING if account_id is None else seed.target(account_id, caller)
                response = send(api, seed, row, caller, target)
                problems += check(response, 403, f"{row} as {caller} naming "
                                                 f"{account_id or 'a missing'} object")
                calls += 1
    after = snapshot(api)
    assert calls == len(OPERATOR_ONLY) * 2 * 4
    assert not problems, report(problems)
    for account_id in ("alice", "bob", "acme"):
        for part in ("balance", "grants", "usage", "summary", "csv", "keys"):
            assert after[account_id][part] == before[account_id][part], \
                f"{account_id}'s {part} changed after refused operator-only calls"
    assert after == before, "a refused operator-only call wrote something"
    alice = after["alice"]["balance"]
    # 1005 granted + 2000 of the subscription's first month - 0.75 used - 2 × 10 held
    assert alice["available_credits"] == "2984.25", alice
    assert [e["event_id"] for e in after["alice"]["usage"]["events"]] == ["e-alice"]


BODIES = [row for row in MATRIX if row.method in ("POST", "PUT") and row.call(
    Seed({}, {}, {}, itertools.count()), MISSING).json is not None]


@pytest.mark.parametrize("caller", [Caller.NONE, Caller.REVOKED, Caller.OWNER])
def test_the_caller_is_refused_before_the_body_is_read(api: TestClient, seed: Seed, caller: Caller) -> None:
    """A caller with no key, a revoked key, or a role that may never call the route is refused
    (401 / 403) whatever the body: a malformed body does not turn the refusal into a 422 that
    describes the expected input to someone who may not call the route at all."""
    problems: list[str] = []
    for row in BODIES:
        if caller is Caller.OWNER and row.access is not Access.OPERATOR:
            continue
        expected = expected_status(row.access, caller, row.ok)
        call = row.call(seed, seed.target("alice", caller))
        for body in ({}, {"unexpected": 1}):
            response = api.request(call.method, call.url, headers=seed.headers[caller], json=body)
            problems += check(response, expected, f"{row} as {caller} with body {body!r}")
    assert BODIES and not problems, report(problems)
