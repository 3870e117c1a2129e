"""Delivery workers as real processes against a real local receiver: a ``creditmeter deliver``
or ``creditmeter serve`` killed with SIGKILL mid-delivery loses nothing (a restarted worker sends
what the dead one held once its lease ends), and several workers at once (``serve --workers 2`` on
PostgreSQL, two ``deliver`` processes on SQLite) never send the same delivery at the same time."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from creditmeter.alerts import Alert, AlertType, alert_id
from creditmeter.delivery import system_clock_us
from creditmeter.endpoints import DeliveryStatus
from creditmeter.engine import Engine
from tests import forked
from tests.api.conftest import start_server, stop_server
from tests.conftest import EngineFactory
from tests.webhooks.receiver import running_receiver

# Short leases and timeouts, so that a dead worker's deliveries are due again within seconds.
QUICK = ["--interval", "0.05", "--timeout", "2", "--lease", "3", "--backoff-base", "0.1",
         "--backoff-cap", "0.5"]
QUICK_CONFIG = """
webhooks:
  deliver: true
  interval_s: 0.05
  timeout_s: 2
  lease_s: 3
  backoff_base_s: 0.1
  backoff_cap_s: 0.5
  batch: {batch}
  concurrency: 4
"""


def raise_alerts(engine: Engine, count: int) -> list[str]:
    now = system_clock_us()
    with engine.store.transaction(write=True) as tx:
        for n in range(count):
            assert tx.insert_alert(Alert(f"acct-{n % 13}", AlertType.USAGE_REACHED, f"usage:{n}", now,
                                         {"percent": 80}), now)
    return [alert_id(f"acct-{n % 13}", f"usage:{n}") for n in range(count)]


def wait_until(done: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(done) and done():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def all_delivered(engine: Engine, endpoint: str, count: int) -> None:
    log = engine.deliveries(endpoint, limit=1000)
    assert len(log) == count and Counter(d.status for d in log) == {DeliveryStatus.DELIVERED: count}


def start_worker(kind: str, db: str, tmp_path: Path, name: str, batch: int = 4) -> forked.Forked:
    if kind == "deliver":
        return forked.start(["deliver", "--db", db, "--batch", str(batch), "--concurrency", "4", *QUICK],
                            stdout=tmp_path / f"{name}.log")
    config = tmp_path / f"{name}.yaml"
    config.write_text(QUICK_CONFIG.format(batch=batch))
    server = start_server(db, tmp_path / f"{name}.log", env={"CREDITMETER_DELIVER": "true"},
                          extra_args=["--config", str(config)])
    return server.process


@pytest.mark.parametrize("kind", ["deliver", "serve"])
def test_a_worker_killed_mid_delivery_loses_nothing(kind: str, make_engine: EngineFactory,
                                                   tmp_path: Path) -> None:
    engine = make_engine()
    with running_receiver() as receiver:
        endpoint, receiver.secret = engine.add_webhook(receiver.url, system_clock_us())
        receiver.delay_s = 0.5  # each answer takes a while: the kill lands mid-send
        ids = raise_alerts(engine, 12)
        first = start_worker(kind, engine.store.url, tmp_path, "first")
        wait_until(lambda: sum(receiver.in_flight.values()) > 0, 30, "a request in flight")
        in_flight = {i for i, n in receiver.in_flight.items() if n}
        first.kill()  # SIGKILL: no chance to record anything
        first.wait(10)
        wait_until(lambda: not any(receiver.in_flight.values()), 5, "the receiver done answering")
        second = start_worker(kind, engine.store.url, tmp_path, "second")
        try:
            receiver.wait_for(12, timeout_s=60)
            wait_until(lambda: all(d.status is DeliveryStatus.DELIVERED
                                   for d in engine.deliveries(endpoint.id, limit=100)), 30, "all recorded")
        finally:
            second.terminate()
            second.wait(10)
    assert set(receiver.delivered()) == set(ids) and receiver.unverified == []
    all_delivered(engine, endpoint.id, 12)
    sent = Counter(r.msg_id for r in receiver.received)
    assert all(sent[i] >= 2 for i in in_flight)  # what the dead worker held was sent again
    lost = [a for d in engine.deliveries(endpoint.id, limit=100) for a in engine.delivery(d.id)[1]
            if a.status_code is None]
    assert len(lost) >= len(in_flight) and all("lease" in (a.error or "") for a in lost)


def test_several_workers_never_send_a_delivery_twice_at_once(store_kind: str, make_engine: EngineFactory,
                                                             tmp_path: Path) -> None:
    engine = make_engine()
    count = 240
    with running_receiver() as receiver:
        endpoint, receiver.secret = engine.add_webhook(receiver.url, system_clock_us())
        receiver.delay_s = 0.01
        ids = raise_alerts(engine, count)
        workers: list[forked.Forked] = []
        if store_kind == "postgres":
            config = tmp_path / "serve.yaml"
            config.write_text(QUICK_CONFIG.format(batch=8))
            server = start_server(engine.store.url, tmp_path / "serve.log", workers=2,
                                  env={"CREDITMETER_DELIVER": "true"}, extra_args=["--config", str(config)])
        else:
            workers = [start_worker("deliver", engine.store.url, tmp_path, f"w{n}", batch=8)
                       for n in range(2)]
        try:
            receiver.wait_for(count, timeout_s=120)
            wait_until(lambda: all(d.status is DeliveryStatus.DELIVERED
                                   for d in engine.deliveries(endpoint.id, limit=1000)), 30, "all recorded")
        finally:
            if store_kind == "postgres":
                stop_server(server)
            for worker in workers:
                worker.terminate()
                worker.wait(10)
    assert receiver.overlaps == [] and receiver.unverified == []
    assert Counter(r.msg_id for r in receiver.received) == Counter(ids)  # each exactly once
    all_delivered(engine, endpoint.id, count)
