"""The stream consumer at its edges: broker failures between the charge and the acknowledgement,
dead letters that cannot be stored whole or at all, events that waiting makes chargeable, durable
consumers that already exist, and a broker that is not there at start."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import nats
import orjson
import pytest
from click.testing import CliRunner

from creditmeter.cli import main
from creditmeter.engine import Engine, Settings, open_engine
from creditmeter.errors import InputError
from creditmeter.pricing import parse_catalog
from creditmeter.stream.core import ConsumeOptions, consume
from creditmeter.stream.kafka import KafkaSource
from creditmeter.stream.metrics import StreamStats
from creditmeter.stream.nats import NatsSource
from creditmeter.timeutil import format_instant
from tests import forked
from tests.concurrency.prices import PRICES
from tests.stream.harness import ACCOUNTS, CREDIT, NatsServer, free_port, publish_raw
from tests.stream.test_kafka_source import FakeKafka, FakeLog


def now_us() -> int:
    return time.time_ns() // 1000


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    e = open_engine(f"sqlite:///{tmp_path / 'r.db'}")
    start_us = (int(time.time()) - 86400) * 1_000_000
    e.load_prices(parse_catalog({"models": PRICES}), start_us, start_us)
    for account in ACCOUNTS:
        e.create_account(account, start_us)
        e.add_grant(account, 100_000 * CREDIT, "addon", start_us, grant_id=f"{account}-addon")
    return e


def event(i: int, **extra: object) -> bytes:
    return orjson.dumps({"id": f"r-{i}", "account_id": ACCOUNTS[0], "model": "small",
                         "input_tokens": 100, "timestamp": format_instant(now_us() - 60_000_000),
                         **extra})


# --- Kafka: a dead letter whose produce failed hands the batch back: nothing committed past it --

class FlakyProducerLog(FakeLog):
    def __init__(self, kafka: FakeKafka, topic: str) -> None:
        super().__init__(kafka, topic)
        self.produce_failures = 1

    async def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        if self.produce_failures:
            self.produce_failures -= 1
            raise OSError("broker went away")
        await super().produce(topic, value, key)


def test_kafka_a_failed_dead_letter_is_not_committed_past(engine: Engine) -> None:
    kafka = FakeKafka()
    kafka.append("usage", [b"{not json"] + [event(i) for i in range(1, 300)])
    source = KafkaSource(FlakyProducerLog(kafka, "usage"), "usage", "usage.dead")
    options = ConsumeOptions(batch_size=50, fetch_timeout_s=0.01, idle_exit_s=0.3)
    asyncio.run(consume(source, engine, now_us, StreamStats(), asyncio.Event(), options))
    letters = [v for part in kafka.topics.get("usage.dead", []) for v in part]
    committed = kafka.committed[("usage", 0)]
    # Offset 0 of partition 0 (the bad message) is committed as done: it must be in the dead letters.
    assert committed > 0
    assert len(letters) == 1, f"bad message committed past (offset {committed}) but never dead-lettered"


# --- A timestamp ahead of now is handed back to wait, never dead-lettered -----------------------

def test_a_timestamp_slightly_in_the_future_is_not_dead_lettered(engine: Engine) -> None:
    kafka = FakeKafka()
    ahead = format_instant(now_us() + 10 * 60 * 1_000_000)
    kafka.append("usage", [event(1, timestamp=ahead)])
    source = KafkaSource(FakeLog(kafka, "usage"), "usage", "usage.dead")
    stats = StreamStats()
    options = ConsumeOptions(batch_size=50, fetch_timeout_s=0.01, idle_exit_s=0.2)
    asyncio.run(consume(source, engine, now_us, stats, asyncio.Event(), options))
    assert stats.dead_lettered == 0, "a clock-skewed event (fixable by waiting) was dead-lettered and acked"


# --- NATS: a message too large to embed whole is dead-lettered (cut short) and acknowledged ------

def test_nats_an_oversized_bad_message_is_dead_lettered_and_acked(nats_server: NatsServer,
                                                                  engine: Engine) -> None:
    huge = b'"' * 700_000  # not JSON; its dead letter escapes every quote: over 1 MB
    asyncio.run(publish_raw(nats_server.url, "usage.events", [huge] + [event(i) for i in range(1, 20)]))

    async def scenario() -> tuple[StreamStats, int, int, int]:
        source = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                       durable="charger", dead_letter="dead.usage", ack_wait_s=1)
        stats = StreamStats()
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(3, stop.set)
        await consume(source, engine, now_us, stats, stop, ConsumeOptions(fetch_timeout_s=0.2))
        info = await source.sub.consumer_info()
        dead = (await source.js.stream_info("USAGE_DEAD")).state.messages
        await source.close()
        return stats, info.num_ack_pending, info.num_redelivered, dead

    stats, ack_pending, redelivered, dead = asyncio.run(scenario())
    assert (dead, ack_pending) == (1, 0), (
        f"dead letters {dead}, still unacknowledged {ack_pending}, redelivered {redelivered}, "
        f"broker failures {stats.broker_failures}, charged {stats.charged}, duplicates {stats.duplicate}")


# --- NATS: the dead-letter check asks the durable what it reads --------------------------------

def test_nats_the_dead_letter_check_uses_the_durables_own_filter(nats_server: NatsServer) -> None:
    async def scenario() -> None:
        first = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                      durable="charger", dead_letter="dead.usage")
        await first.close()
        # Same durable (its filter is usage.>), another --subject: usage.dead is read by it.
        with pytest.raises(InputError):
            second = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.events",
                                           durable="charger", dead_letter="usage.dead")
            await second.close()

    asyncio.run(scenario())


def test_nats_a_durable_reading_other_subjects_is_refused(nats_server: NatsServer) -> None:
    async def scenario() -> InputError:
        first = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                      durable="charger", dead_letter="dead.usage")
        await first.close()
        with pytest.raises(InputError) as caught:
            await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.events",
                                  durable="charger", dead_letter="dead.usage")
        return caught.value

    refused = asyncio.run(scenario())
    assert refused.field == "durable" and "usage.events" in refused.reason and "usage.>" in refused.reason


def test_nats_dead_letters_never_loop_through_a_durable_bound_by_another_subject(
        nats_server: NatsServer) -> None:
    async def scenario() -> tuple[str, int]:
        first = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                      durable="charger", dead_letter="dead.usage")
        await first.close()
        await publish_raw(nats_server.url, "usage.events", [b"{not json"])
        with pytest.raises(InputError) as caught:
            await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.events",
                                  durable="charger", dead_letter="usage.dead")
        nc = await nats.connect(nats_server.url)
        stored = (await nc.jetstream().stream_info("USAGE")).state.messages
        await nc.close()
        return caught.value.field, stored

    field, stored = asyncio.run(scenario())
    assert (field, stored) == ("dead-letter", 1)


def test_nats_ack_wait_of_an_existing_durable_is_applied(nats_server: NatsServer) -> None:
    async def scenario() -> float:
        first = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                      durable="charger", dead_letter="dead.usage", ack_wait_s=30)
        await first.close()
        second = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                       durable="charger", dead_letter="dead.usage", ack_wait_s=2)
        info = await second.sub.consumer_info()
        await second.close()
        return float(info.config.ack_wait or 0)

    assert asyncio.run(scenario()) == 2, "--ack-wait silently ignored for an existing durable"


# --- NATS: a crash between the commit and the acknowledgement (deterministic) ---------------------

class Killed(Exception):
    pass


def test_nats_crash_between_commit_and_ack_is_exactly_once(nats_server: NatsServer,
                                                           engine: Engine) -> None:
    asyncio.run(publish_raw(nats_server.url, "usage.events", [event(i) for i in range(200)]))

    async def scenario() -> StreamStats:
        dying = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                      durable="charger", dead_letter="dead.usage", ack_wait_s=1)

        async def die(messages: object) -> None:
            raise Killed

        dying.ack = die  # type: ignore[method-assign]
        with pytest.raises(Killed):
            await consume(dying, engine, now_us, StreamStats(), asyncio.Event(),
                          ConsumeOptions(batch_size=150, fetch_timeout_s=0.2))
        await dying.nc.close()
        source = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                       durable="charger", dead_letter="dead.usage", ack_wait_s=1)
        stats = StreamStats()
        await consume(source, engine, now_us, stats, asyncio.Event(),
                      ConsumeOptions(fetch_timeout_s=0.3, idle_exit_s=2.5))
        await source.close()
        return stats

    stats = asyncio.run(scenario())
    charged = [e for e in engine.usage(ACCOUNTS[0])]
    assert len(charged) == 200 and len({e.event.id for e in charged}) == 200
    assert (stats.charged, stats.duplicate) == (50, 150)
    assert stats.redelivered == 150


# --- Waiting, refusing, counting ---------------------------------------------------------------

def test_nats_an_event_ahead_of_now_is_charged_once_it_is_in_the_window(nats_server: NatsServer,
                                                                        tmp_path: Path) -> None:
    e = open_engine(f"sqlite:///{tmp_path / 'w.db'}", Settings(max_future_s=1))
    start_us = (int(time.time()) - 86400) * 1_000_000
    e.load_prices(parse_catalog({"models": PRICES}), start_us, start_us)
    e.create_account(ACCOUNTS[0], start_us)
    e.add_grant(ACCOUNTS[0], 1_000 * CREDIT, "addon", start_us, grant_id="g")
    ahead = format_instant(now_us() + 3_000_000)
    asyncio.run(publish_raw(nats_server.url, "usage.events", [event(1, timestamp=ahead)]))

    async def scenario() -> StreamStats:
        source = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                       durable="charger", dead_letter="dead.usage")
        stats = StreamStats()
        await consume(source, e, now_us, stats, asyncio.Event(),
                      ConsumeOptions(fetch_timeout_s=0.2, idle_exit_s=5))
        await source.close()
        return stats

    stats = asyncio.run(scenario())
    assert (stats.charged, stats.dead_lettered) == (1, 0) and stats.held >= 1
    assert [s.event.id for s in e.usage(ACCOUNTS[0])] == ["r-1"]


def test_nats_a_dead_letter_the_broker_refuses_terminates_its_message(nats_server: NatsServer,
                                                                      engine: Engine) -> None:
    async def scenario() -> tuple[StreamStats, int, int]:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(name="TINY_DEAD", subjects=["dead.usage"], max_msg_size=200)
        await nc.close()
        await publish_raw(nats_server.url, "usage.events", [b"{not json" + b" " * 300, event(1)])
        source = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                       durable="charger", dead_letter="dead.usage", ack_wait_s=1)
        stats = StreamStats()
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(2.5, stop.set)
        await consume(source, engine, now_us, stats, stop, ConsumeOptions(fetch_timeout_s=0.2))
        info = await source.sub.consumer_info()
        await source.close()
        return stats, info.num_ack_pending, info.num_redelivered

    stats, ack_pending, redelivered = asyncio.run(scenario())
    assert (stats.refused, stats.charged, stats.dead_lettered) == (1, 1, 0)
    assert (ack_pending, redelivered) == (0, 0), "the refused message was delivered again"


def test_nats_lag_counts_the_messages_delivered_and_not_acknowledged(nats_server: NatsServer) -> None:
    asyncio.run(publish_raw(nats_server.url, "usage.events", [event(i) for i in range(10)]))

    async def scenario() -> int | None:
        source = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                       durable="charger", dead_letter="dead.usage")
        assert len(await source.fetch(4, 1)) == 4
        lag = await source.lag()
        await source.close()
        return lag

    assert asyncio.run(scenario()) == 10


def test_the_metrics_read_a_copy_of_the_phase_times() -> None:
    stats = StreamStats()
    stats.add_time("charge", 1.0)
    copy = stats.phase_seconds()
    stats.add_time("ack", 1.0)
    assert copy == {"charge": 1.0} and stats.phase_seconds() == {"charge": 1.0, "ack": 1.0}


# --- The command at start ----------------------------------------------------------------------

def consume_args(url: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["consume", url, "--durable", "charger", "--dead-letter", "dead.usage",
            "--db", f"sqlite:///{tmp_path / 'c.db'}", "--progress", "0", *extra]


@pytest.mark.parametrize("durable", ["", "a.b", "a*", "a>", "a b", "a\tb"])
def test_a_bad_durable_name_is_refused(tmp_path: Path, durable: str) -> None:
    args = consume_args("nats://127.0.0.1:1", tmp_path)
    args[args.index("charger")] = durable
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "durable" in result.output, result.output


def test_an_unreachable_broker_is_tried_a_bounded_number_of_times(tmp_path: Path) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(main, consume_args(f"nats://127.0.0.1:{free_port()}", tmp_path,
                                                   "--connect-attempts", "3"))
    assert result.exit_code == 7 and "tried 3 times" in result.output, result.output
    assert time.monotonic() - started < 15


def test_sigterm_stops_the_tries_of_an_unreachable_broker(tmp_path: Path) -> None:
    process = forked.start(consume_args(f"nats://127.0.0.1:{free_port()}", tmp_path),
                           stdout=tmp_path / "c.out", stderr=tmp_path / "c.err")
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    code = process.wait(10)
    err = (tmp_path / "c.err").read_text()
    assert code == 7 and "stopped before the broker" in err, err


def test_an_upper_case_scheme_and_a_refused_durable(nats_server: NatsServer, tmp_path: Path) -> None:
    url = nats_server.url.replace("nats://", "NATS://")
    ok = CliRunner().invoke(main, consume_args(url, tmp_path, "--idle-exit", "0.5"))
    assert ok.exit_code == 0, ok.output
    refused = CliRunner().invoke(main, consume_args(url, tmp_path, "--subject", "usage.events"))
    assert refused.exit_code == 2 and "durable" in refused.output, refused.output
    assert "disconnected" not in refused.output, refused.output
