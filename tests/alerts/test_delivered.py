"""A billing month's alerts delivered to a real local receiver that verifies every signature, on
SQLite and PostgreSQL (SPEC §13): usage crossing 80% and 100% of the monthly allowance, a trial
package expiring in 3 days, a limit reached, a purchase and a renewal raise exactly the expected
alerts, each delivered once under its id; a receiver that fails first gets the same id again."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from creditmeter.alerts import alert_id
from creditmeter.delivery import Deliverer
from creditmeter.domain import Refused
from creditmeter.endpoints import DeliveryPolicy
from creditmeter.engine import Engine
from tests.alerts.test_raising import CREDIT, DAY, HOUR, PERIOD2, T0, alerts, setup, use
from tests.webhooks.receiver import Receiver, running_receiver

FAST = DeliveryPolicy(timeout_s=5, backoff_base_s=0.02, backoff_cap_s=0.1, horizon_s=60, lease_s=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def test_a_month_of_alerts_is_delivered_signed_each_once(engine: Engine, receiver: Receiver) -> None:
    endpoint, secret = engine.add_webhook(receiver.url, T0 - DAY)  # before the month it hears of
    receiver.secret = secret
    failures = {"first": True}

    def answer(msg_id: str, seen: int) -> int:  # the first request of each id fails once
        return 500 if seen == 0 and failures["first"] else 204

    receiver.answer = answer
    setup(engine)
    use(engine, "e1", 78, T0 + HOUR)
    use(engine, "e2", 4, T0 + 2 * HOUR)  # 82 of the month's 100: 80% reached
    engine.add_grant("a", 4 * CREDIT, "trial", T0 + 2 * HOUR, expires_at_us=T0 + 10 * DAY, grant_id="trial-1")
    refused = engine.reserve("a", 10 * CREDIT, T0 + 3 * HOUR, hold_id="h1")  # 82 of 60 in 5 hours
    assert isinstance(refused, Refused) and refused.code == "limit_reached"
    refused = engine.reserve("a", 10 * CREDIT, T0 + 4 * HOUR, hold_id="h2")  # the same window
    assert isinstance(refused, Refused) and refused.code == "limit_reached"
    engine.tick(T0 + 7 * DAY)  # the trial package: 3 days left
    use(engine, "e3", 22, T0 + 8 * DAY)  # the trial's 4 first, then the month's last 18: 100%
    engine.purchase("a", "pack", T0 + 9 * DAY, order_id="ord-1")
    engine.tick(PERIOD2)  # the second month: a renewal
    expected = [
        ("credits.usage_reached", "usage_reached_percent=80:sub:a-sub@2026-03-02T00:00:00Z"),
        ("limit.reached", f"limit:plan-1:{T0 + 3 * HOUR}"),
        ("package.expiring", "expiring_within=3d:trial-1"),
        ("credits.usage_reached", "usage_reached_percent=100:sub:a-sub@2026-03-02T00:00:00Z"),
        ("credits.balance_low", "balance_below=15:2026-03-02T00:00:00Z"),
        ("credits.depleted", "depleted:2026-03-02T00:00:00Z"),
        ("purchase.completed", "purchase:ord-1"),
        ("subscription.renewed", "renewed:sub:a-sub@2026-04-02T00:00:00Z"),
    ]
    raised = alerts(engine)
    assert [(a.type.value, a.dedupe_key) for a in raised] == expected
    ids = [alert_id("a", key) for _, key in expected]

    deliverer = Deliverer(engine, FAST, concurrency=4, batch=10)
    deadline = time.monotonic() + 60  # the retries are due within 0.1 s each; the machine may be busy
    try:
        while len(receiver.delivered()) < len(ids) and time.monotonic() < deadline:
            deliverer.run_once()
            time.sleep(0.02)
    finally:
        deliverer.close()
    got = receiver.wait_for(len(ids), timeout_s=5)
    assert set(got) == set(ids) and receiver.unverified == []
    for msg_id in ids:  # failed once, then delivered under the same id, with the same body
        tries = [r for r in receiver.received if r.msg_id == msg_id]
        assert [r.status for r in tries] == [500, 204]
        assert tries[0].payload == tries[1].payload
    bodies = {r.msg_id: r.payload for r in receiver.received}
    renewal = bodies[ids[-1]]
    assert renewal["type"] == "subscription.renewed" and renewal["timestamp"] == "2026-04-02T00:00:00Z"
    assert renewal["data"]["account_id"] == "a" and renewal["data"]["plan_id"] == "pro"  # type: ignore[index]
    assert len(engine.deliveries(endpoint.id, limit=100)) == len(ids)
    assert PERIOD2 > T0
