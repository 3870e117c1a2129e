"""The webhook routes in-process, on both stores: the operator's alone, bad input 422 naming the
field with nothing written, the secret shown once, the delivery log and replay after a real
delivery to a local receiver."""

from __future__ import annotations

from fastapi.testclient import TestClient

from creditmeter.alerts import Alert, AlertType, alert_id
from creditmeter.delivery import Deliverer, system_clock_us
from creditmeter.endpoints import DeliveryPolicy
from creditmeter.engine import Engine
from tests.api.conftest import OPERATOR, Clock, bearer
from tests.webhooks.receiver import running_receiver


def test_only_the_operator_manages_webhooks(api: TestClient, engine: Engine) -> None:
    assert api.post("/api/accounts", json={"id": "alice"}, headers=OPERATOR).status_code == 201
    _, secret = engine.create_key("alice", system_clock_us())
    user = bearer(secret)
    for method, path in (("post", "/api/webhooks"), ("get", "/api/webhooks"), ("delete", "/api/webhooks/x"),
                         ("post", "/api/webhooks/x/enable"), ("get", "/api/webhooks/x/deliveries"),
                         ("get", "/api/deliveries/x"), ("post", "/api/deliveries/x/replay")):
        answer = api.request(method, path, json={"url": "https://example.com/h"}, headers=user)
        assert answer.status_code == 403, (method, path)
    assert api.post("/api/webhooks", json={"url": "https://example.com/h"}).status_code == 401


def test_bad_input_is_422_naming_the_field_and_adds_nothing(api: TestClient) -> None:
    for body, field in (({"url": "ftp://example.com/h"}, "url"), ({"url": "example.com"}, "url"),
                        ({"url": "http://"}, "url"), ({}, "url"),
                        ({"url": "https://example.com/h", "events": ["credits.depleted", "nope"]},
                         "events.1"),
                        ({"url": "https://example.com/h", "events": "credits.depleted"}, "events"),
                        ({"url": "https://example.com/h", "secret": "mine"}, "secret"),
                        ({"url": "https://example.com/h", "events": []}, "events")):
        answer = api.post("/api/webhooks", json=body, headers=OPERATOR)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["field"] == field, (body, answer.text)
    # A URL of the right shape whose host no request can go to: refused for what it means (400,
    # as every value the engine refuses; a body the document allows is never 422).
    for url in ("http://a..b/hook", "http://xn--a.com/h"):
        answer = api.post("/api/webhooks", json={"url": url}, headers=OPERATOR)
        assert answer.status_code == 400, (url, answer.text)
        assert answer.json()["error"]["field"] == "url", (url, answer.text)
    assert api.get("/api/webhooks", headers=OPERATOR).json() == {"webhooks": []}


def test_the_scheme_is_taken_in_any_case_as_the_engine_takes_it(api: TestClient, engine: Engine) -> None:
    answer = api.post("/api/webhooks", json={"url": "HTTPS://example.com/h"}, headers=OPERATOR)
    assert answer.status_code == 201, answer.text
    assert engine.add_webhook("Http://example.com/h", system_clock_us())[0].url == "Http://example.com/h"


def test_an_endpoint_its_deliveries_and_a_replay(api: TestClient, engine: Engine, clock: Clock) -> None:
    clock.now_us = system_clock_us()
    with running_receiver() as receiver:
        made = api.post("/api/webhooks", json={"url": receiver.url, "events": ["credits.depleted"],
                                               "description": "billing"}, headers=OPERATOR)
        assert made.status_code == 201, made.text
        created = made.json()
        assert created["secret"].startswith("whsec_") and created["events"] == ["credits.depleted"]
        receiver.secret = created["secret"]
        endpoint = created["id"]
        listed = api.get("/api/webhooks", headers=OPERATOR).json()["webhooks"]
        assert [w["id"] for w in listed] == [endpoint] and "secret" not in listed[0]
        assert listed[0]["enabled"] is True and listed[0]["failures"] == 0

        now = system_clock_us()
        with engine.store.transaction(write=True) as tx:
            tx.insert_alert(Alert("alice", AlertType.DEPLETED, "depleted:1", now, {"grant_id": "g1"}), now)
            tx.insert_alert(Alert("alice", AlertType.BALANCE_LOW, "low:1", now), now)  # not asked for
        deliverer = Deliverer(engine, DeliveryPolicy(timeout_s=5, backoff_base_s=0.05, lease_s=10))
        deliverer.run_once()
        assert list(receiver.delivered()) == [alert_id("alice", "depleted:1")]

        page = api.get(f"/api/webhooks/{endpoint}/deliveries", headers=OPERATOR).json()
        [delivery] = page["deliveries"]
        assert page["next_before"] is None
        assert (delivery["status"], delivery["type"], delivery["account_id"], delivery["attempts"]) == (
            "delivered", "credits.depleted", "alice", 1)
        assert delivery["webhook_id"] == alert_id("alice", "depleted:1")
        detail = api.get(f"/api/deliveries/{delivery['id']}", headers=OPERATOR).json()
        log = [(a["attempt"], a["status_code"], a["error"]) for a in detail["attempt_log"]]
        assert log == [(1, 200, None)]

        replayed = api.post(f"/api/deliveries/{delivery['id']}/replay", headers=OPERATOR)
        assert replayed.status_code == 200 and replayed.json()["status"] == "pending"
        deliverer.run_once()
        deliverer.close()
        assert [r.msg_id for r in receiver.received] == [delivery["webhook_id"]] * 2
        assert receiver.unverified == []

    assert api.post(f"/api/webhooks/{endpoint}/enable", headers=OPERATOR).json()["enabled"] is True
    assert api.delete(f"/api/webhooks/{endpoint}", headers=OPERATOR).status_code == 204
    assert api.get(f"/api/webhooks/{endpoint}", headers=OPERATOR).status_code == 404
    missing = api.get(f"/api/deliveries/{delivery['id']}", headers=OPERATOR)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "delivery_id"
    assert api.post("/api/deliveries/nope/replay", headers=OPERATOR).status_code == 404
    assert api.get("/api/webhooks/nope/deliveries?limit=0", headers=OPERATOR).status_code == 422
