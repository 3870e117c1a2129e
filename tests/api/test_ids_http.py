"""Ids over HTTP, on a real ``creditmeter serve``: every id the rule accepts (``creditmeter.ids``)
reaches its object unescaped in a URL path; an id outside it is a 422 naming the field, and nothing
is written."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from creditmeter.engine.grants import RESERVED_GRANT_PREFIXES
from creditmeter.ids import ID_PATTERN
from tests.api.conftest import Server
from tests.unit.test_bad_input import dump_tables

IDS = st.from_regex(ID_PATTERN, fullmatch=True)
BAD_IDS = ["a/b", "a b", "a?b", "a#b", "a%2Fb", "café", "-a", ".", "..", "a\u200bb"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(account_id=IDS, grant_id=IDS)
def test_every_id_of_the_rule_round_trips_through_the_url_path(server: Server, account_id: str,
                                                                grant_id: str) -> None:
    assume(not grant_id.startswith(RESERVED_GRANT_PREFIXES))
    with server.client() as http:
        made = http.post("/api/accounts", json={"id": account_id})
        assert made.status_code in (200, 201), made.text
        assert made.json()["id"] == account_id
        for path in (f"/api/accounts/{account_id}", f"/api/accounts/{account_id}/balance",
                     f"/api/accounts/{account_id}/usage", f"/api/accounts/{account_id}/usage.csv"):
            got = http.get(path)
            assert got.status_code == 200, (path, got.text)
        assert http.get(f"/api/accounts/{account_id}/balance").json()["account_id"] == account_id
        assert http.post(f"/api/accounts/{account_id}/keys", json={}).status_code == 201
        grant = http.post(f"/api/accounts/{account_id}/grants",
                          json={"amount_credits": "1", "kind": "promo", "id": grant_id})
        if grant.status_code == 409:  # the same grant id drawn again for another account
            return
        assert grant.status_code == 201, grant.text
        voided = http.post(f"/api/grants/{grant_id}/void")
        assert voided.status_code == 200, voided.text
        assert voided.json()["grant_id"] == grant_id


def test_making_an_object_with_an_id_outside_the_rule_is_a_422_naming_the_field(server: Server) -> None:
    with server.client() as http:
        assert http.post("/api/accounts", json={"id": "alice"}).status_code == 201
        before = dump_tables(server.db_url)
        for bad in BAD_IDS:  # one server for them all: each answer is checked, then nothing written
            for path, body in (("/api/accounts", {"id": bad}),
                               ("/api/accounts", {"id": bad, "kind": "enterprise"}),
                               ("/api/accounts/alice/grants", {"amount_credits": "1", "kind": "addon",
                                                               "id": bad}),
                               ("/api/accounts/alice/holds", {"amount_credits": "1", "id": bad}),
                               ("/api/accounts/alice/subscriptions", {"plan_id": "trial", "id": bad}),
                               ("/api/accounts/alice/purchases", {"pack_id": "addon-1000", "id": bad})):
                answer = http.post(path, json=body)
                assert answer.status_code == 422, (bad, path, answer.text)
                error = answer.json()["error"]
                assert error["field"] == "id", (bad, error)
                assert error["message"].startswith("id: "), (bad, error)
        assert dump_tables(server.db_url) == before


def test_the_openapi_schema_states_the_rule(server: Server) -> None:
    with server.client() as http:
        schema = http.get("/openapi.json").json()["components"]["schemas"]
    for model in ("AccountIn", "GrantIn", "HoldIn", "SubscriptionIn", "PurchaseIn", "AllocationIn"):
        field = schema[model]["properties"]["id"]
        patterns = [field.get("pattern")] + [s.get("pattern") for s in field.get("anyOf", [])]
        assert ID_PATTERN in patterns, (model, field)


def test_a_plan_id_outside_the_rule_is_refused_when_the_catalog_is_loaded(server: Server) -> None:
    plan = {"kind": "trial", "name": "Trial", "credits": 5, "valid_days": 14}
    with server.client() as http:
        before = dump_tables(server.db_url)
        answer = http.post("/api/plans", json={"plans": [{**plan, "id": "trial"}, {**plan, "id": "a/b"}]})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == "plans[1].id"
        assert dump_tables(server.db_url) == before
        assert http.post("/api/plans", json={"plans": [{**plan, "id": "trial:v2"}]}).status_code == 201
