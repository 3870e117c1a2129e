"""``KafkaLog`` over aiokafka: a consumer of a group with auto-commit off, and a producer for the
dead letters. Not run by the test suite (no Kafka broker there): see docs/stream.md."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from creditmeter.stream.core import DeadLetterRefused, SourceUnavailable
from creditmeter.stream.kafka import KafkaSource, Partition, Record, check_topics


class AioKafkaLog:
    """The narrow client the Kafka source speaks to, over aiokafka."""

    def __init__(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        self.consumer = consumer
        self.producer = producer

    @classmethod
    async def start(cls, bootstrap: str, *, topic: str, group: str) -> AioKafkaLog:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        try:
            await consumer.start()
            await producer.start()
        except KafkaError as exc:
            await consumer.stop()
            await producer.stop()
            raise SourceUnavailable(f"cannot connect to {bootstrap}: {exc}") from exc
        return cls(consumer, producer)

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        try:
            found = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise SourceUnavailable(f"fetch: {exc}") from exc
        return [record for records in found.values() for record in records]

    async def commit(self, offsets: dict[Partition, int]) -> None:
        try:
            await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except KafkaError as exc:
            raise SourceUnavailable(f"commit: {exc}") from exc

    def seek(self, partition: Partition, offset: int) -> None:
        self.consumer.seek(TopicPartition(*partition), offset)

    async def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        try:
            await self.producer.send_and_wait(topic, value, key=key)
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            raise DeadLetterRefused(f"produce: {exc}") from exc
        except KafkaError as exc:
            raise SourceUnavailable(f"produce: {exc}") from exc

    async def lag(self) -> int | None:
        total = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                return None
            total += max(0, high - await self.consumer.position(tp))
        return total

    async def close(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()


async def open_kafka(bootstrap: str, *, topic: str, group: str, dead_letter: str) -> KafkaSource:
    """A source on a real Kafka cluster (``aiokafka``; install ``creditmeter[kafka]``)."""
    check_topics(topic, dead_letter)  # before connecting
    return KafkaSource(await AioKafkaLog.start(bootstrap, topic=topic, group=group), topic, dead_letter)
