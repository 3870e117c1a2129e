"""Delivering alerts to a real local receiver, on both stores: signed so that the
``standardwebhooks`` library verifies them, retried with the same id until a 2xx, given up at the
horizon, the endpoint disabled after its run of failures, replayed on demand, and a delivery whose
worker died taken again after its lease."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from creditmeter.alerts import Alert, AlertType, alert_id
from creditmeter.delivery import Deliverer, system_clock_us
from creditmeter.endpoints import DeliveryPolicy, DeliveryStatus, signature
from creditmeter.engine import Engine
from creditmeter.errors import Conflict, InputError
from tests.conftest import EngineFactory
from tests.webhooks.receiver import Receiver, running_receiver

FAST = DeliveryPolicy(timeout_s=5, backoff_base_s=0.02, backoff_cap_s=0.1, horizon_s=60, lease_s=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def raise_alerts(engine: Engine, count: int, kind: AlertType = AlertType.BALANCE_LOW,
                 start: int = 0) -> list[str]:
    """``count`` alerts stored as a raiser stores them, in one write transaction; their ids."""
    now = system_clock_us()
    with engine.store.transaction(write=True) as tx:
        for n in range(start, start + count):
            assert tx.insert_alert(Alert(f"acct-{n % 7}", kind, f"rule:{n}", now, {"n": n}), now)
    return [alert_id(f"acct-{n % 7}", f"rule:{n}") for n in range(start, start + count)]


def add_endpoint(engine: Engine, receiver: Receiver, events: list[str] | None = None) -> str:
    endpoint, secret = engine.add_webhook(receiver.url, system_clock_us(), events=events)
    receiver.secret = secret
    return endpoint.id


def deliver_until(deliverer: Deliverer, done: object, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        deliverer.run_once()
        if callable(done) and done():
            return
        time.sleep(0.02)
    raise AssertionError("not done in time")


def test_alerts_are_delivered_signed_once_each(make_engine: EngineFactory, receiver: Receiver) -> None:
    engine = make_engine()
    raise_alerts(engine, 2)  # before the endpoint: not for it
    endpoint = add_endpoint(engine, receiver)
    ids = raise_alerts(engine, 25, start=2)
    deliverer = Deliverer(engine, FAST, concurrency=4, batch=10)
    report = deliverer.run_once()
    deliverer.close()
    got = receiver.wait_for(25, timeout_s=1)
    assert set(got) == set(ids) and receiver.unverified == [] and len(receiver.received) == 25
    assert (report.routed, report.attempts, report.delivered) == (25, 25, 25)
    first = got[ids[0]]
    assert first.payload["type"] == "credits.balance_low"
    assert first.payload["data"] == {"account_id": "acct-2", "n": 2}
    assert first.headers["content-type"] == "application/json"
    log = engine.deliveries(endpoint, limit=100)
    assert len(log) == 25 and {d.status for d in log} == {DeliveryStatus.DELIVERED}
    delivery, attempts = engine.delivery(log[0].id)
    assert delivery.alert_id == ids[-1]  # newest first
    assert [(a.attempt, a.status_code, a.error) for a in attempts] == [(1, 200, None)]
    assert attempts[0].latency_ms is not None and attempts[0].latency_ms >= 0


def test_an_endpoint_receives_only_the_types_it_asked_for(make_engine: EngineFactory,
                                                          receiver: Receiver) -> None:
    engine = make_engine()
    add_endpoint(engine, receiver, events=["credits.depleted"])
    wanted = raise_alerts(engine, 3, AlertType.DEPLETED)
    raise_alerts(engine, 3, AlertType.BALANCE_LOW, start=3)
    deliverer = Deliverer(engine, FAST)
    deliverer.run_once()
    deliverer.close()
    assert set(receiver.delivered()) == set(wanted) and len(receiver.received) == 3


def test_a_failing_receiver_gets_the_same_id_until_it_answers(make_engine: EngineFactory,
                                                              receiver: Receiver) -> None:
    engine = make_engine()
    endpoint = add_endpoint(engine, receiver)
    receiver.answer = lambda _id, seen: 500 if seen < 3 else 204
    [ident] = raise_alerts(engine, 1)
    deliverer = Deliverer(engine, FAST)
    deliver_until(deliverer, lambda: receiver.delivered())
    deliverer.close()
    assert [r.msg_id for r in receiver.received] == [ident] * 4
    assert [r.status for r in receiver.received] == [500, 500, 500, 204]
    assert len({r.body for r in receiver.received}) == 1  # the very bytes signed, on every retry
    for r in receiver.received:
        assert r.headers["webhook-signature"] == signature(receiver.secret or "", ident,
                                                           int(r.headers["webhook-timestamp"]), r.body)
    [delivery] = engine.deliveries(endpoint)
    _, attempts = engine.delivery(delivery.id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 500), (3, 500), (4, 204)]
    assert attempts[0].error == "HTTP 500 Internal Server Error"
    assert delivery.status is DeliveryStatus.DELIVERED and delivery.attempts == 4
    assert engine.get_webhook(endpoint).failures == 0  # the 2xx ended the run


def test_a_delivery_is_given_up_at_its_horizon(make_engine: EngineFactory, receiver: Receiver) -> None:
    engine = make_engine()
    endpoint = add_endpoint(engine, receiver)
    receiver.answer = lambda _id, _seen: 503
    raise_alerts(engine, 1)
    deliverer = Deliverer(engine, DeliveryPolicy(timeout_s=5, backoff_base_s=0.5, backoff_cap_s=1,
                                                 horizon_s=0, lease_s=10))
    report = deliverer.run_once()
    deliverer.close()
    assert (report.attempts, report.failed) == (1, 1)
    [delivery] = engine.deliveries(endpoint)
    assert delivery.status is DeliveryStatus.FAILED and delivery.last_status_code == 503
    assert delivery.ended_at_us is not None


def test_an_endpoint_is_disabled_after_its_run_of_failures_and_enabled_again(
        make_engine: EngineFactory, receiver: Receiver) -> None:
    engine = make_engine()
    endpoint = add_endpoint(engine, receiver)
    receiver.answer = lambda _id, _seen: 500
    raise_alerts(engine, 2)
    policy = DeliveryPolicy(timeout_s=5, backoff_base_s=0.02, backoff_cap_s=0.05, horizon_s=60, lease_s=10,
                            disable_after_failures=5, disable_after_s=0)
    deliverer = Deliverer(engine, policy)
    deliver_until(deliverer, lambda: not engine.get_webhook(endpoint).enabled)
    disabled = engine.get_webhook(endpoint)
    assert disabled.failures >= 5 and disabled.disabled_reason and disabled.failing_since_us is not None
    sent = len(receiver.received)
    time.sleep(0.2)
    raise_alerts(engine, 1, start=2)  # raised while disabled: not routed to it
    deliverer.run_once()
    assert len(receiver.received) == sent  # nothing is sent to a disabled endpoint
    with pytest.raises(Conflict, match="disabled"):
        engine.replay_delivery(engine.deliveries(endpoint)[0].id, system_clock_us())
    receiver.answer = lambda _id, _seen: 200
    assert engine.enable_webhook(endpoint, system_clock_us()).failures == 0
    deliver_until(deliverer, lambda: len(receiver.delivered()) == 2)
    deliverer.close()
    assert {d.status for d in engine.deliveries(endpoint)} == {DeliveryStatus.DELIVERED}


def test_a_replay_sends_the_same_id_again(make_engine: EngineFactory, receiver: Receiver) -> None:
    engine = make_engine()
    endpoint = add_endpoint(engine, receiver)
    [ident] = raise_alerts(engine, 1)
    deliverer = Deliverer(engine, FAST)
    deliverer.run_once()
    [delivery] = engine.deliveries(endpoint)
    assert delivery.status is DeliveryStatus.DELIVERED
    again = engine.replay_delivery(delivery.id, system_clock_us())
    assert again.status is DeliveryStatus.PENDING and again.ended_at_us is None
    deliverer.run_once()
    deliverer.close()
    assert [r.msg_id for r in receiver.received] == [ident, ident] and receiver.unverified == []
    assert receiver.received[0].payload == receiver.received[1].payload
    _, attempts = engine.delivery(delivery.id)
    assert [a.attempt for a in attempts] == [1, 2]


def test_a_delivery_whose_worker_died_is_taken_again_after_its_lease(make_engine: EngineFactory,
                                                                     receiver: Receiver) -> None:
    engine = make_engine()
    endpoint = add_endpoint(engine, receiver)
    raise_alerts(engine, 1)
    now = system_clock_us()
    engine.route_alerts(now, FAST)
    [claim] = engine.claim_deliveries(now, FAST)  # ... and the worker dies before it sends
    assert engine.claim_deliveries(now + 9_000_000, FAST) == []  # leased to it for 10 s
    [again] = engine.claim_deliveries(now + 10_000_000, FAST)
    assert (again.delivery_id, again.alert_id, again.attempt) == (claim.delivery_id, claim.alert_id, 2)
    assert again.token != claim.token
    _, attempts = engine.delivery(claim.delivery_id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, None)]
    assert attempts[0].error and "lease" in attempts[0].error
    [delivery] = engine.deliveries(endpoint)
    assert delivery.status is DeliveryStatus.PENDING and delivery.attempts == 2


def test_bad_input_names_the_field_and_writes_nothing(make_engine: EngineFactory) -> None:
    engine = make_engine()
    for url in ("ftp://example.com/x", "example.com/hook", "http://", "http://exa mple.com/", 7):
        with pytest.raises(InputError) as caught:
            engine.add_webhook(url, system_clock_us())  # type: ignore[arg-type]
        assert caught.value.field == "url"
    with pytest.raises(InputError) as caught:
        engine.add_webhook("https://example.com/h", system_clock_us(), events=["credits.depleted", "nope"])
    assert caught.value.field == "events[1]"
    assert engine.webhooks() == []
    with pytest.raises(InputError) as caught:
        engine.deliveries("whe_x", limit=0)
    assert caught.value.field == "limit"


def test_the_receiver_refuses_a_signature_made_with_another_secret(make_engine: EngineFactory,
                                                                   receiver: Receiver) -> None:
    """The check the tests rely on is live: signed with another key, nothing is accepted."""
    engine = make_engine()
    add_endpoint(engine, receiver)
    receiver.secret = engine.add_webhook("https://example.invalid/h", system_clock_us())[1]
    raise_alerts(engine, 1)
    deliverer = Deliverer(engine, DeliveryPolicy(timeout_s=2, backoff_base_s=60, lease_s=10))
    report = deliverer.run_once()
    deliverer.close()
    assert receiver.delivered() == {} and len(receiver.unverified) == 1
    assert report.delivered == 0
