"""Delivery at its edges, against real local receivers: a worker never holds deliveries longer than
it can send them, a success under a claim that ran out still counts, one bad endpoint (a URL no
request can go to, an answer that hangs, trickles or never ends) costs only its own attempts, a
replay during an attempt in flight is kept, an alert recorded after an endpoint's creation reaches
it whatever the commit order, routing stays short with many endpoints, and a stop is prompt."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from creditmeter.alerts import Alert, AlertType, alert_id
from creditmeter.delivery import MAX_ANSWER, Deliverer, system_clock_us
from creditmeter.endpoints import Attempt, DeliveryPolicy, DeliveryStatus, Endpoint, outcome
from creditmeter.engine.webhooks import MAX_ROUTED
from creditmeter.errors import InputError
from tests.conftest import EngineFactory
from tests.webhooks.receiver import running_receiver
from tests.webhooks.test_delivery import FAST, add_endpoint, raise_alerts


@contextmanager
def workers_running(*deliverers: Deliverer) -> Iterator[None]:
    """Each deliverer running rounds in its own thread until the block ends."""
    stop = threading.Event()
    threads = [threading.Thread(target=d.run_forever, args=(0.02, stop), daemon=True) for d in deliverers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        for deliverer in deliverers:
            deliverer.close()


def test_two_workers_never_hold_what_they_cannot_send_in_time(make_engine: EngineFactory) -> None:
    """One slot each and answers that take most of the timeout: a worker takes one delivery at a
    time, so no lease ends while it waits its turn and nothing is sent twice."""
    engine = make_engine()
    policy = DeliveryPolicy(timeout_s=1, backoff_base_s=0.1, backoff_cap_s=0.5, horizon_s=60, lease_s=1.5)
    with running_receiver() as rx:
        endpoint = add_endpoint(engine, rx)
        rx.delay_s = 0.5
        ids = raise_alerts(engine, 6)
        with workers_running(*(Deliverer(engine, policy, concurrency=1, batch=6) for _ in range(2))):
            rx.wait_for(6, timeout_s=20)
            time.sleep(0.3)
    assert sorted(r.msg_id for r in rx.received) == sorted(ids) and rx.overlaps == []
    assert {d.status for d in engine.deliveries(endpoint)} == {DeliveryStatus.DELIVERED}


def test_a_success_under_a_claim_that_ran_out_is_recorded(make_engine: EngineFactory) -> None:
    engine = make_engine()
    engine.add_webhook("http://127.0.0.1:9/x", system_clock_us())
    raise_alerts(engine, 1)
    now = system_clock_us()
    engine.route_alerts(now, FAST)
    [first] = engine.claim_deliveries(now, FAST)
    [second] = engine.claim_deliveries(now + 11_000_000, FAST)  # the first lease ran out
    late = Attempt(first.delivery_id, first.attempt, now, 200, 10_500, None)
    counted, _ = engine.record_outcomes([outcome(first, late, 0.5, FAST)], now + 11_500_000, FAST)
    assert [o.status for o in counted] == [DeliveryStatus.DELIVERED]
    delivery, attempts = engine.delivery(first.delivery_id)
    assert delivery.status is DeliveryStatus.DELIVERED  # not sent again
    assert [a.status_code for a in attempts] == [None, 200]  # the lost lease, then the late 200
    # The second worker's failure, later, changes nothing, nor counts against the endpoint.
    failed = Attempt(second.delivery_id, second.attempt, now + 11_000_000, 500, 3, "HTTP 500")
    counted, _ = engine.record_outcomes([outcome(second, failed, 0.5, FAST)], now + 12_000_000, FAST)
    assert counted == [] and engine.delivery(first.delivery_id)[0].status is DeliveryStatus.DELIVERED
    assert engine.get_webhook(second.endpoint_id).failures == 0


def test_a_stale_failure_does_not_count_toward_the_failure_run(make_engine: EngineFactory) -> None:
    engine = make_engine()
    endpoint, _ = engine.add_webhook("http://127.0.0.1:9/x", system_clock_us())
    raise_alerts(engine, 1)
    now = system_clock_us()
    engine.route_alerts(now, FAST)
    [first] = engine.claim_deliveries(now, FAST)
    engine.claim_deliveries(now + 11_000_000, FAST)
    failed = Attempt(first.delivery_id, first.attempt, now, 500, 3, "HTTP 500")
    counted, _ = engine.record_outcomes([outcome(first, failed, 0.5, FAST)], now + 11_500_000, FAST)
    assert counted == [] and engine.get_webhook(endpoint.id).failures == 0
    assert engine.delivery(first.delivery_id)[0].status is DeliveryStatus.PENDING


def test_an_endpoint_no_request_can_go_to_fails_only_its_own_attempts(make_engine: EngineFactory) -> None:
    """Stored before the URL check knew better: its sends fail, the round goes on, the others'
    deliveries are delivered once."""
    engine = make_engine()
    policy = DeliveryPolicy(timeout_s=1, backoff_base_s=0.05, backoff_cap_s=0.1, horizon_s=0, lease_s=5)
    with running_receiver() as rx:
        add_endpoint(engine, rx)
        bad = Endpoint("whe_0000000000000bad", "http://a..b/hook", None, "", system_clock_us())
        with engine.store.transaction(write=True) as tx:
            tx.insert_endpoint(bad, "whsec_" + "A" * 44)
        raise_alerts(engine, 3)
        deliverer = Deliverer(engine, policy, concurrency=2, batch=10)
        report = deliverer.run_once()
        deliverer.close()
    assert len(rx.received) == 3 and report.delivered == 3 and report.failed == 3
    [dead, *_] = engine.deliveries(bad.id)
    assert dead.status is DeliveryStatus.FAILED and dead.last_error
    with pytest.raises(InputError) as caught:
        engine.add_webhook("http://a..b/hook", system_clock_us())
    assert caught.value.field == "url"


def test_a_replay_during_an_attempt_in_flight_is_kept(make_engine: EngineFactory) -> None:
    engine = make_engine()
    with running_receiver() as rx:
        endpoint = add_endpoint(engine, rx)
        [ident] = raise_alerts(engine, 1)
        now = system_clock_us()
        engine.route_alerts(now, FAST)
        [claim] = engine.claim_deliveries(now, FAST)  # a worker is sending it …
        replayed = engine.replay_delivery(claim.delivery_id, now + 1000)  # … when it is replayed
        assert replayed.status is DeliveryStatus.PENDING
        assert engine.claim_deliveries(now + 2000, FAST) == []  # still that worker's
        ok = Attempt(claim.delivery_id, claim.attempt, now, 200, 5, None)
        engine.record_outcomes([outcome(claim, ok, 0.5, FAST)], now + 3000, FAST)  # the try succeeds
        delivery, _ = engine.delivery(claim.delivery_id)
        assert delivery.status is DeliveryStatus.PENDING and delivery.next_at_us <= now + 3000
        deliverer = Deliverer(engine, FAST)
        deliverer.run_once()  # the replay is sent at once
        deliverer.close()
    assert [r.msg_id for r in rx.received] == [ident]
    [delivery] = engine.deliveries(endpoint)
    assert delivery.status is DeliveryStatus.DELIVERED and delivery.attempts == 2


def test_an_alert_recorded_after_an_endpoint_was_made_reaches_it_whatever_commits_first(
        make_engine: EngineFactory, store_kind: str) -> None:
    """PostgreSQL: an alert takes a lower ``seq`` than one committed before the endpoint was made,
    and commits after: it was recorded after the endpoint's creation, so it is routed to it."""
    if store_kind != "postgres":
        pytest.skip("SQLite's write lock makes the order of seq the order of commits")
    engine = make_engine()
    now = system_clock_us()
    with engine.store.transaction(write=True) as tx:
        assert tx.insert_alert(Alert("acct-0", AlertType.DEPLETED, "before", now), now)
    created = now + 1_000
    later = created + 1_000
    slow = engine.store.transaction(write=True)
    tx1 = slow.__enter__()
    assert tx1.insert_alert(Alert("acct-a", AlertType.DEPLETED, "A", later), later)  # lower seq
    with engine.store.transaction(write=True) as tx2:
        assert tx2.insert_alert(Alert("acct-b", AlertType.DEPLETED, "B", later), later)
    endpoint, _ = engine.add_webhook("http://127.0.0.1:9/x", created)
    slow.__exit__(None, None, None)  # A commits after the endpoint exists
    engine.route_alerts(system_clock_us(), FAST)
    got = {d.alert_id for d in engine.deliveries(endpoint.id)}
    assert got == {alert_id("acct-a", "A"), alert_id("acct-b", "B")}  # not "before"


def test_a_hanging_endpoint_does_not_hold_up_a_healthy_one(make_engine: EngineFactory,
                                                           store_kind: str) -> None:
    if store_kind != "sqlite":
        pytest.skip("one store is enough")
    engine = make_engine()
    # A lease of ten timeouts: the worker may queue nine times its slots, and the hanging endpoint's
    # deliveries in its queue must not keep the healthy one's from being taken.
    policy = DeliveryPolicy(timeout_s=1, backoff_base_s=300, backoff_cap_s=600, horizon_s=0, lease_s=10)
    with running_receiver() as slow, running_receiver() as fast:
        add_endpoint(engine, slow)
        add_endpoint(engine, fast)
        slow.delay_s = 3  # never answers within the timeout
        raise_alerts(engine, 200)
        deliverer = Deliverer(engine, policy, concurrency=16, batch=100)
        stop = threading.Event()
        started = time.time()
        worker = threading.Thread(target=deliverer.run_once, args=(stop,))
        worker.start()
        try:
            fast.wait_for(200, timeout_s=30)
        finally:
            stop.set()  # the hanging ones are not waited for beyond those in flight
            worker.join(10)
            deliverer.close()
        took = max(r.at for r in fast.received) - started
    assert len(fast.received) == 200 and took < 1.5, took  # within the hanging ones' timeout


@contextmanager
def raw_server(answer: bytes, tail: Iterator[bytes]) -> Iterator[str]:
    """A socket server answering one request with ``answer`` and then each piece of ``tail``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def run() -> None:
        conn, _ = listener.accept()
        try:
            conn.recv(65536)
            conn.sendall(answer)
            for piece in tail:
                conn.sendall(piece)
        except OSError:
            pass  # the client went away: what is tested
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        listener.close()
        thread.join(10)


def _claim_for(engine_url: str) -> object:
    from creditmeter.endpoints import Claim, new_secret

    alert = Alert("acct", AlertType.DEPLETED, "k", system_clock_us())
    return Claim("dlv_x", "whe_x", engine_url, new_secret(), alert_id("acct", "k"), alert, 1, "t", 0)


def test_an_answer_that_never_ends_is_read_only_so_far(make_engine: EngineFactory) -> None:
    deliverer = Deliverer(make_engine(), DeliveryPolicy(timeout_s=5, lease_s=10), concurrency=1)
    chunk = b"0" * 65536
    sent = {"n": 0}

    def endless() -> Iterator[bytes]:
        for _ in range(4096):  # 256 MiB unless the client stops reading
            sent["n"] += 1
            yield chunk

    with raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 268435456\r\n\r\n", endless()) as url:
        attempt = deliverer.send(_claim_for(url))  # type: ignore[arg-type]
        deliverer.close()
    assert attempt.status_code == 200 and attempt.error is None
    # It stopped reading early: what was sent at most fills the sockets' buffers (a few MiB).
    assert MAX_ANSWER <= sent["n"] * len(chunk) < 32 * 2**20 < 4096 * len(chunk)


def test_an_answer_that_trickles_is_cut_off_at_the_deadline(make_engine: EngineFactory) -> None:
    deliverer = Deliverer(make_engine(), DeliveryPolicy(timeout_s=1, lease_s=2), concurrency=1)

    def trickle() -> Iterator[bytes]:
        for _ in range(12):
            time.sleep(0.3)  # each byte well within the timeout, the whole far past it
            yield b"x"

    with raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", trickle()) as url:
        started = time.monotonic()
        attempt = deliverer.send(_claim_for(url))  # type: ignore[arg-type]
        deliverer.close()
        took = time.monotonic() - started
    assert attempt.status_code is None and attempt.error == "no answer within 1 s"
    assert took < 1.5, took


def test_routing_makes_a_bounded_number_of_deliveries_per_transaction(make_engine: EngineFactory) -> None:
    engine = make_engine()
    for n in range(50):
        engine.add_webhook(f"http://127.0.0.1:9/{n}", system_clock_us())
    raise_alerts(engine, 500)
    made = engine.route_alerts(system_clock_us(), FAST, 500)
    assert 0 < made <= MAX_ROUTED
    total = made
    while made:
        made = engine.route_alerts(system_clock_us(), FAST, 500)
        assert made <= MAX_ROUTED
        total += made
    assert total == 50 * 500


def test_dead_deliveries_are_logged_one_by_one(make_engine: EngineFactory,
                                               caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine()
    with running_receiver() as rx:
        add_endpoint(engine, rx)
        rx.answer = lambda _id, _seen: 503
        raise_alerts(engine, 2)
        policy = DeliveryPolicy(timeout_s=5, backoff_base_s=0.5, backoff_cap_s=1, horizon_s=0, lease_s=10)
        with caplog.at_level(logging.WARNING, logger="creditmeter.delivery"):
            deliverer = Deliverer(engine, policy)
            deliverer.run_once()
            deliverer.close()
    dead = [r for r in caplog.records if "failed for good" in r.getMessage()]
    assert len(dead) == 2 and all(r.levelno == logging.WARNING for r in dead)
    assert {d.id for e in engine.webhooks() for d in engine.deliveries(e.id)} == {
        r.getMessage().split()[2] for r in dead}


def test_a_stop_ends_the_round_once_what_is_in_flight_is_answered(make_engine: EngineFactory) -> None:
    """What was taken and not sent yet (a lease of ten timeouts lets a worker queue some) is given
    back, due at once, no attempt counted."""
    engine = make_engine()
    policy = DeliveryPolicy(timeout_s=1, backoff_base_s=0.05, backoff_cap_s=0.1, horizon_s=60, lease_s=10)
    with running_receiver() as rx:
        add_endpoint(engine, rx)
        rx.delay_s = 0.2
        raise_alerts(engine, 40)
        stop = threading.Event()
        deliverer = Deliverer(engine, policy, concurrency=2, batch=100)
        assert deliverer.holding > deliverer.concurrency  # it queues
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        deliverer.run_once(stop)
        took = time.monotonic() - started
        deliverer.close()
    assert took < 1.0 and 0 < len(rx.received) < 40, (took, len(rx.received))
    pending = [d for e in engine.webhooks() for d in engine.deliveries(e.id)
               if d.status is DeliveryStatus.PENDING]
    assert len(pending) == 40 - len(rx.received)
    now = system_clock_us()
    assert all(d.attempts == 0 and d.next_at_us <= now for d in pending)
    assert all(engine.delivery(d.id)[1] == [] for d in pending)  # no lost attempt logged
