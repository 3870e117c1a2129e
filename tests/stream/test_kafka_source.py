"""The Kafka source against the shared consumer loop, over an in-process log.

No Kafka broker runs here: ``FakeKafka`` implements the narrow ``KafkaLog`` interface the source
speaks to (partitions, a group's committed offsets, each consumer's position, a producer), so what
is tested is the source's offset logic (commit each partition's last offset + 1 after the charge,
seek back on a hand-back) and the loop over it, on a real engine. The aiokafka client behind
``KafkaLog`` in production (``stream/kafka_client.py``) is not run by these tests.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from creditmeter.engine import Engine, open_engine
from creditmeter.errors import InputError
from creditmeter.pricing import parse_catalog
from creditmeter.stream.core import ConsumeOptions, consume
from creditmeter.stream.kafka import KafkaSource, Partition
from creditmeter.stream.metrics import StreamStats
from tests.concurrency.prices import PRICES
from tests.stream.harness import ACCOUNTS, CREDIT, expected_totals, make_events

PARTITIONS = 3


class Killed(Exception):
    """The consumer died (after its charge committed, before its offsets did)."""


class Record:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = topic, partition, offset, value


class FakeKafka:
    """Topics of partitions (lists of values) and one group's committed offsets."""

    def __init__(self) -> None:
        self.topics: dict[str, list[list[bytes]]] = {}
        self.committed: dict[Partition, int] = {}

    def append(self, topic: str, values: list[bytes]) -> None:
        parts = self.topics.setdefault(topic, [[] for _ in range(PARTITIONS)])
        for i, value in enumerate(values):
            parts[i % PARTITIONS].append(value)


class FakeLog:
    """One consumer of the group on ``topic``: starts at the committed offsets."""

    def __init__(self, kafka: FakeKafka, topic: str, die_at_commit: int | None = None) -> None:
        self.kafka, self.topic = kafka, topic
        self.position = {(topic, p): kafka.committed.get((topic, p), 0) for p in range(PARTITIONS)}
        self.commits = 0
        self.die_at_commit = die_at_commit

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        out: list[Record] = []
        for where, start in self.position.items():  # like Kafka: from one partition, then the next
            values = self.kafka.topics[self.topic][where[1]]
            take = values[start:start + max_records - len(out)]
            out += [Record(self.topic, where[1], start + i, v) for i, v in enumerate(take)]
            self.position[where] = start + len(take)
        if not out:
            await asyncio.sleep(timeout_ms / 1000)
        return out

    async def commit(self, offsets: dict[Partition, int]) -> None:
        self.commits += 1
        if self.commits == self.die_at_commit:
            raise Killed
        for where, offset in offsets.items():
            assert offset >= self.kafka.committed.get(where, 0), "a commit never goes back"
            self.kafka.committed[where] = offset

    def seek(self, partition: Partition, offset: int) -> None:
        self.position[partition] = offset

    async def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        self.kafka.append(topic, [value])

    async def lag(self) -> int | None:
        return sum(len(self.kafka.topics[self.topic][p]) - o for (_, p), o in self.position.items())


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    e = open_engine(f"sqlite:///{tmp_path / 'kafka.db'}")
    start_us = (int(time.time()) - 86400) * 1_000_000
    e.load_prices(parse_catalog({"models": PRICES}), start_us, start_us)
    for account in ACCOUNTS:
        e.create_account(account, start_us)
        e.add_grant(account, 100_000 * CREDIT, "addon", start_us, grant_id=f"{account}-addon")
    return e


def run(source: KafkaSource, engine: Engine, stats: StreamStats) -> None:
    options = ConsumeOptions(batch_size=100, fetch_timeout_s=0.01, idle_exit_s=0.05)
    asyncio.run(consume(source, engine, lambda: time.time_ns() // 1000, stats, asyncio.Event(), options))


def test_a_group_charges_each_event_once_and_commits_after(engine: Engine) -> None:
    messages, valid, invalid = make_events(1_500, 7, time.time())
    kafka = FakeKafka()
    kafka.append("usage", messages)
    dying = FakeLog(kafka, "usage", die_at_commit=4)
    with pytest.raises(Killed):
        run(KafkaSource(dying, "usage", "usage.dead"), engine, StreamStats())
    first_commit = dict(kafka.committed)
    stats = StreamStats()
    run(KafkaSource(FakeLog(kafka, "usage"), "usage", "usage.dead"), engine, stats)

    assert kafka.committed == {("usage", p): len(kafka.topics["usage"][p]) for p in range(PARTITIONS)}
    assert first_commit != kafka.committed
    charged = {e.event.id: e.charge.cost_uc for a in ACCOUNTS for e in engine.usage(a)}
    assert sorted(charged) == sorted(str(e["id"]) for e in valid)
    by_account = {a: sum(e.charge.cost_uc for e in engine.usage(a)) for a in ACCOUNTS}
    assert by_account == expected_totals(valid)
    # The killed consumer's last batch was charged, not committed: it came again, as duplicates.
    assert stats.duplicate > len(messages) - len(invalid) - len(valid)
    letters = [orjson.loads(v) for part in kafka.topics["usage.dead"] for v in part]
    assert sorted(letter["message"].encode() for letter in letters) == sorted(m for m, _ in invalid)
    assert {letter["field"] for letter in letters} == {"message", "model", "timestamp"}
    assert engine.check_invariants() == []


def test_a_hand_back_reads_the_batch_again() -> None:
    kafka = FakeKafka()
    kafka.append("usage", [b"%d" % i for i in range(9)])
    source = KafkaSource(FakeLog(kafka, "usage"), "usage", "usage.dead")
    first = asyncio.run(source.fetch(4, 0.01))
    asyncio.run(source.nak(first, 0.3))
    assert asyncio.run(source.fetch(4, 0.01)) == [], "a batch handed back waits its delay"
    time.sleep(0.3)
    again = asyncio.run(source.fetch(4, 0.01))
    assert [m.handle for m in again] == [m.handle for m in first]
    assert [m.delivered for m in first] == [1] * 4 and [m.delivered for m in again] == [2] * 4
    asyncio.run(source.ack(again))
    assert kafka.committed == {("usage", 0): 3, ("usage", 1): 1}


def test_dead_letters_never_go_to_the_topic_read() -> None:
    with pytest.raises(InputError) as caught:
        KafkaSource(FakeLog(FakeKafka(), "usage"), "usage", "usage")
    assert caught.value.field == "dead-letter"
