"""Faults while three consumers charge a stream on PostgreSQL, each recovered from by itself:

- a consumer ``kill -9``-ed mid-batch, and another started in its place;
- the NATS server killed and started again (same port, same storage) mid-run;
- PostgreSQL cut off from the consumers mid-run (a TCP proxy between them closes every connection
  and refuses new ones for two seconds; the machine's own server is never touched);
- a PostgreSQL server of the test's own stopped and started again mid-run.

After each, every valid event is charged exactly once at its price, every invalid one is
dead-lettered once with its reason, nothing is lost, and the ledger reconciles.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import nats
import sqlalchemy as sa

from tests.concurrency.test_outage import Server, server  # noqa: F401 - server: the fixture
from tests.forked import Forked
from tests.stream.conftest import Ledger, close_ledger, funded_ledger, start_consumer, stop
from tests.stream.harness import NatsServer, Proxy, make_events, publish_raw
from tests.stream.test_consume import check_dead_letters, check_exactly_once, reconcile

COUNT = 4_000


def charged_count(ledger: Ledger) -> int:
    with ledger.db.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one())


async def _dead_count(url: str) -> int:
    nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
    try:
        return int((await nc.jetstream().stream_info("USAGE_DEAD")).state.messages)
    finally:
        await nc.close()


def dead_count(url: str) -> int:
    try:
        return asyncio.run(_dead_count(url))
    except Exception:  # noqa: BLE001 - not there yet, or the server is restarting
        return -1


def wait_until(what: str, done: Callable[[], bool], timeout_s: float, consumers: list[Forked],
               tmp_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            logs = "\n".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("*.err")))
            raise AssertionError(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.1)


def run_with_fault(nats_server: NatsServer, ledger: Ledger, tmp_path: Path,
                   fault: Callable[[list[Forked]], None], db_url: str | None = None,
                   killed: tuple[int, ...] = ()) -> None:
    """Three consumers, ``fault`` mid-run, then every event done; every consumer but those the
    fault killed on purpose (``killed``: their indexes) must still run, and stop with exit 0."""
    seed = random.randrange(1 << 30)
    messages, valid, invalid = make_events(COUNT, seed, time.time())
    asyncio.run(publish_raw(nats_server.url, "usage.events", messages))
    url = db_url or ledger.url
    consumers = [start_consumer(nats_server.url, url, tmp_path / f"c{i}") for i in range(3)]
    try:
        wait_until("a third charged", lambda: charged_count(ledger) >= len(valid) // 3, 60,
                   consumers, tmp_path)
        fault(consumers)
        wait_until("every event", lambda: charged_count(ledger) == len(valid)
                   and dead_count(nats_server.url) == len(invalid), 60, consumers, tmp_path)
        codes = {i: stop(c) for i, c in enumerate(consumers) if i not in killed}
    finally:
        for c in consumers:
            if c.poll() is None:
                c.kill()
    assert all(code == 0 for code in codes.values()), f"a consumer failed (exit codes {codes})"
    check_exactly_once(ledger, valid)
    check_dead_letters(nats_server.url, invalid)
    reconcile(ledger.url, tmp_path / "reconcile.out")


def test_a_consumer_killed_mid_batch(nats_server: NatsServer, ledger: Ledger, tmp_path: Path) -> None:
    def fault(consumers: list[Forked]) -> None:
        consumers[0].send_signal(signal.SIGKILL)
        assert consumers[0].wait(10) == -signal.SIGKILL
        consumers.append(start_consumer(nats_server.url, ledger.url, tmp_path / "c-restarted"))

    run_with_fault(nats_server, ledger, tmp_path, fault, killed=(0,))


def test_the_nats_server_restarted_mid_run(nats_server: NatsServer, ledger: Ledger,
                                           tmp_path: Path) -> None:
    def fault(consumers: list[Forked]) -> None:
        nats_server.kill()
        time.sleep(1)
        nats_server.start()

    run_with_fault(nats_server, ledger, tmp_path, fault)
    logs = "".join(p.read_text() for p in tmp_path.glob("c*.err"))
    assert "broker failures" in logs, "the restart was seen by a consumer"


def test_postgresql_cut_off_mid_run(nats_server: NatsServer, ledger: Ledger, tmp_path: Path) -> None:
    target = sa.engine.make_url(ledger.url)
    proxy = Proxy((target.host or "127.0.0.1", target.port or 5432))
    try:
        def fault(consumers: list[Forked]) -> None:
            proxy.cut()
            time.sleep(2)
            proxy.restore()

        through = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        run_with_fault(nats_server, ledger, tmp_path, fault, db_url=through)
        logs = "".join(p.read_text() for p in tmp_path.glob("c*.err"))
        assert "database and" in logs, "the outage was seen by a consumer"
    finally:
        proxy.close()


def test_postgresql_restarted_mid_run(nats_server: NatsServer, server: Server,  # noqa: F811
                                      tmp_path: Path) -> None:
    """A PostgreSQL server of the test's own (the shared one serves other tests meanwhile),
    stopped (``pg_ctl stop -m fast``: every connection dropped) and started again mid-run."""
    ledger = funded_ledger(server.url("postgres"))
    try:
        def fault(consumers: list[Forked]) -> None:
            server.stop("fast")
            time.sleep(1)
            server.start()

        run_with_fault(nats_server, ledger, tmp_path, fault)
        logs = "".join(p.read_text() for p in tmp_path.glob("c*.err"))
        assert "database and" in logs, "the restart was seen by a consumer"
    finally:
        close_ledger(ledger)
