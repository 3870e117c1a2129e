"""The server's ``webhooks:`` settings and the delivery rules they feed: read from the file and
the environment and checked, the backoff's ceilings and jitter, and the disabling rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditmeter.endpoints import DeliveryPolicy, retry_at, should_disable
from creditmeter.errors import InputError
from creditmeter.serverconfig import load

S = 1_000_000


def test_the_defaults_and_the_environment(tmp_path: Path) -> None:
    config = load(None, {})
    assert config.webhooks.deliver is True and config.webhooks.policy() == DeliveryPolicy()
    assert load(None, {"CREDITMETER_DELIVER": "false"}).webhooks.deliver is False
    assert load(None, {"CREDITMETER_DELIVER_INTERVAL_S": "0.5"}).webhooks.interval_s == 0.5
    with pytest.raises(InputError) as caught:
        load(None, {"CREDITMETER_DELIVER": "maybe"})
    assert caught.value.field == "webhooks.deliver" and "CREDITMETER_DELIVER" in caught.value.reason
    path = tmp_path / "c.yaml"
    path.write_text("webhooks:\n  horizon_s: 60\n  disable_after_failures: 3\n")
    policy = load(path, {}).webhooks.policy()
    assert (policy.horizon_s, policy.disable_after_failures) == (60, 3)
    path.write_text("webhooks:\n  timeout_s: 30\n  lease_s: 20\n")
    with pytest.raises(InputError, match="lease_s must be longer than timeout_s") as caught:
        load(path, {})
    assert caught.value.field == "webhooks"
    path.write_text("webhooks:\n  retries: 3\n")
    with pytest.raises(InputError) as caught:
        load(path, {})
    assert caught.value.field == "webhooks.retries"


def test_the_backoff_doubles_up_to_its_cap_with_full_jitter() -> None:
    policy = DeliveryPolicy(backoff_base_s=5, backoff_cap_s=3600)
    ceilings = [retry_at(n, 0, 0.999999, policy) / S for n in range(1, 14)]
    assert [round(c) for c in ceilings[:4]] == [5, 10, 20, 40]
    assert round(ceilings[9]) == 2560 and round(ceilings[10]) == 3600 and round(ceilings[12]) == 3600
    assert retry_at(7, 100, 0.0, policy) == 100  # a draw of 0: at once
    assert retry_at(1, 100, 0.5, policy) == 100 + 2_500_000


def test_an_endpoint_is_disabled_by_a_long_enough_run_of_enough_failures() -> None:
    policy = DeliveryPolicy(disable_after_failures=20, disable_after_s=5 * 86_400)
    day = 86_400 * S
    assert not should_disable(19, 0, 10 * day, policy)
    assert not should_disable(500, 0, 4 * day, policy)
    assert should_disable(20, 0, 5 * day, policy)
    assert not should_disable(20, None, 5 * day, policy)


def test_a_server_that_does_not_deliver_still_replays_for_its_horizon(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from creditmeter.delivery import system_clock_us
    from creditmeter.engine import open_engine
    from creditmeter.server import Serving, worker_app
    from creditmeter.timeutil import US_PER_S
    from tests.webhooks.test_delivery import FAST, raise_alerts

    path = tmp_path / "c.yaml"
    path.write_text("webhooks:\n  deliver: false\n  horizon_s: 120\n")
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = open_engine(database)
    engine.add_webhook("http://127.0.0.1:9/x", system_clock_us())
    raise_alerts(engine, 1)
    engine.route_alerts(system_clock_us(), FAST)
    [delivery] = engine.deliveries(engine.webhooks()[0].id)
    key = "cm_admin_" + "k" * 32
    with TestClient(worker_app(Serving(load(path, {}), database, key))) as api:
        answer = api.post(f"/api/deliveries/{delivery.id}/replay", headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    replayed = engine.delivery(delivery.id)[0]
    assert replayed.horizon_at_us - replayed.next_at_us == 120 * US_PER_S
