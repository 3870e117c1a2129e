"""Auto top-up over HTTP, on both stores: the operator sets, reads and turns off an account's
auto top-up; the account's own keys read it; nobody else sets it or sees it; a body of the wrong
shape is a 422, a value the engine refuses a 400, an unknown pack a 404, each naming the field,
and none writes anything; and a setting made here requests the pack when usage takes the credits
below the threshold."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from creditmeter.api.topup_models import AutoTopupAnswer
from creditmeter.engine import Engine
from tests.api.conftest import OPERATOR, bearer
from tests.api.test_http_bad_input import tables

URL = "/api/accounts/alice/auto-topup"
SETTING = {"below": "20", "pack": "addon-1000", "max_per_month": 2, "grant_now": False}


def key_of(api: TestClient, account_id: str) -> dict[str, str]:
    made = api.post(f"/api/accounts/{account_id}/keys", json={"name": "k"}, headers=OPERATOR)
    assert made.status_code == 201, made.text
    return bearer(made.json()["key"])


def shown(api: TestClient, who: dict[str, str] = OPERATOR, url: str = URL) -> Any:
    response = api.get(url, headers=who)
    assert response.status_code == 200, response.text
    AutoTopupAnswer.model_validate(response.json())
    return response.json()["auto_topup"]


def put(api: TestClient, body: Any, who: dict[str, str] = OPERATOR, url: str = URL) -> Any:
    return api.put(url, json=body, headers=who)


def test_set_show_replace_and_turn_off(alice: TestClient) -> None:
    assert shown(alice) is None
    made = put(alice, {"auto_topup": {"below": 20, "pack": "addon-1000", "max_per_month": 2}})
    assert made.status_code == 200 and made.json() == {"auto_topup": SETTING}
    assert shown(alice) == SETTING
    # Setting it again replaces it; a number with a zero fraction is the whole number it is.
    again = put(alice, {"auto_topup": {"below": "7.5", "pack": "package-3000", "max_per_month": 1.0,
                                       "grant_now": True}})
    assert again.status_code == 200, again.text
    assert shown(alice) == {"below": "7.5", "pack": "package-3000", "max_per_month": 1, "grant_now": True}
    off = put(alice, {"auto_topup": None})
    assert off.status_code == 200 and off.json() == {"auto_topup": None}
    assert shown(alice) is None
    assert put(alice, {"auto_topup": None}).json() == {"auto_topup": None}  # off again: still off


def test_a_setting_made_here_requests_the_pack_below_the_threshold(alice: TestClient) -> None:
    assert put(alice, {"auto_topup": SETTING}).status_code == 200
    used = alice.post("/api/usage", headers=OPERATOR, json={"events": [
        {"id": "e1", "account_id": "alice", "model": "gpt-4o", "output_tokens": 85_000}]})
    assert used.json()["charged"] == 1  # 85 of the 100 credits: 15 left, below 20
    notes = alice.get("/api/accounts/alice/notifications", headers=OPERATOR).json()["notifications"]
    (request,) = [n for n in notes if n["type"] == "topup.requested"]
    assert (request["data"]["pack_id"], request["data"]["below"], request["data"]["available"],
            request["data"]["granted"]) == ("addon-1000", "20", "15", False)
    bought = alice.post("/api/accounts/alice/purchases", headers=OPERATOR,
                        json={"pack_id": "addon-1000", "id": request["data"]["order_id"]})
    assert bought.status_code == 201, bought.text
    balance = alice.get("/api/accounts/alice/balance", headers=OPERATOR).json()
    assert balance["available_credits"] == "1015"


def test_who_may_read_and_set_it(alice: TestClient) -> None:
    for account_id in ("bob", "acme"):
        kind = "enterprise" if account_id == "acme" else "user"
        assert alice.post("/api/accounts", json={"id": account_id, "kind": kind},
                          headers=OPERATOR).status_code == 201
    assert put(alice, {"auto_topup": SETTING}).status_code == 200
    own, other = key_of(alice, "alice"), key_of(alice, "bob")
    assert shown(alice, own) == SETTING
    hidden = alice.get(URL, headers=other)
    assert hidden.status_code == 404 and hidden.json()["error"]["field"] == "account_id"
    for who in (own, other):  # the operator's alone, before anything is looked up
        refused = put(alice, {"auto_topup": None}, who)
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden"
        assert put(alice, {"auto_topup": None}, who, "/api/accounts/nobody/auto-topup").status_code == 403
    assert shown(alice) == SETTING
    # An enterprise admin reads the enterprise account's, as it reads its usage.
    assert alice.post("/api/enterprises/acme/members", headers=OPERATOR,
                      json={"account_id": "bob", "role": "admin"}).status_code == 201
    assert shown(alice, key_of(alice, "bob"), "/api/accounts/acme/auto-topup") is None
    assert alice.get("/api/accounts/alice/auto-topup", headers=key_of(alice, "bob")).status_code == 404
    assert alice.get("/api/accounts/acme/auto-topup", headers={}).status_code == 401


def test_an_unknown_account(api: TestClient) -> None:
    for response in (api.get("/api/accounts/nobody/auto-topup", headers=OPERATOR),
                     put(api, {"auto_topup": SETTING}, url="/api/accounts/nobody/auto-topup")):
        assert response.status_code == 404 and response.json()["error"]["field"] == "account_id"


def _topup(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"below": "20", "pack": "addon-1000", "max_per_month": 2}
    for name, value in changes.items():
        if value is ...:
            del body[name]
        else:
            body[name] = value
    return {"auto_topup": body}


BAD: dict[str, tuple[Any, int, str]] = {
    "below zero": (_topup(below=0), 400, "auto_topup.below"),
    "below negative": (_topup(below="-5"), 400, "auto_topup.below"),
    "below 7 decimals": (_topup(below="1.0000001"), 400, "auto_topup.below"),
    "below not a number": (_topup(below="lots"), 400, "auto_topup.below"),
    "below a boolean": (_topup(below=True), 422, "auto_topup.below"),
    "below missing": (_topup(below=...), 422, "auto_topup.below"),
    "below over the most credits": (_topup(below="10000000000000"), 400, "auto_topup.below"),
    "no pack": (_topup(pack=...), 422, "auto_topup.pack"),
    "a pack id with a control character": (_topup(pack="addon\n1000"), 400, "auto_topup.pack"),
    "a pack id over 255": (_topup(pack="p" * 256), 422, "auto_topup.pack"),
    "a pack id not a string": (_topup(pack=1000), 422, "auto_topup.pack"),
    "an unknown pack": (_topup(pack="addon-7"), 404, "auto_topup.pack"),
    "a plan that is not a pack": (_topup(pack="professional-monthly"), 400, "auto_topup.pack"),
    "max_per_month 0": (_topup(max_per_month=0), 422, "auto_topup.max_per_month"),
    "max_per_month 101": (_topup(max_per_month=101), 422, "auto_topup.max_per_month"),
    "max_per_month 1.5": (_topup(max_per_month=1.5), 422, "auto_topup.max_per_month"),
    "max_per_month a string": (_topup(max_per_month="2"), 422, "auto_topup.max_per_month"),
    "max_per_month missing": (_topup(max_per_month=...), 422, "auto_topup.max_per_month"),
    "grant_now a string": (_topup(grant_now="yes"), 422, "auto_topup.grant_now"),
    "grant_now null": (_topup(grant_now=None), 422, "auto_topup.grant_now"),
    "an unknown field": (_topup(colour="red"), 422, "auto_topup.colour"),
    "not an object": ({"auto_topup": "on"}, 422, "auto_topup"),
    "no auto_topup": ({}, 422, "auto_topup"),
    "the setting unwrapped": (_topup()["auto_topup"], 422, "auto_topup"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=list(BAD))
def test_bad_input_names_the_field_and_writes_nothing(alice: TestClient, engine: Engine,
                                                      case: tuple[Any, int, str]) -> None:
    assert put(alice, {"auto_topup": {**SETTING, "below": "3"}}).status_code == 200
    body, status, field = case
    before = tables(engine)
    response = put(alice, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["message"].startswith(f"{field}: "), error
    assert tables(engine) == before, "a refused call wrote something"
    assert shown(alice) == {**SETTING, "below": "3"}
