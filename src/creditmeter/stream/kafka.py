"""The consumer's source over Kafka: a consumer group, offsets committed after the charge.

The source speaks to Kafka through :class:`KafkaLog`, the few calls it needs of a consumer and a
producer (``aiokafka``'s, in :func:`open_kafka`, from the ``[kafka]`` extra). Kafka has no
per-message acknowledgement: a partition's committed offset says "everything before this is
done". A batch holds, per partition, a run of consecutive offsets from the consumer's position,
and it is charged and acknowledged whole, so acknowledging it commits each partition's last offset
+ 1; handing it back moves each partition's position back to its first offset, so the next fetch
reads it again. A consumer that dies before committing leaves its partitions to the others of the
group, which read from the last commit: those events answer ``duplicate``.

A message handed back to wait (``nak`` with a delay: its timestamp is ahead of now) holds its
partition: no commit goes past it, and the partition's records are not handed out again before
the delay is over (those after it come again then, and answer ``duplicate``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

from creditmeter.errors import InputError
from creditmeter.stream.core import Message, SourceUnavailable, dead_letter_body

Partition = tuple[str, int]  # (topic, partition)


class Record(Protocol):
    """A fetched record, as ``aiokafka.ConsumerRecord`` has it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class KafkaLog(Protocol):
    """What the Kafka source asks of a client: fetch, commit, seek, produce, and the offsets."""

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]: ...

    async def commit(self, offsets: dict[Partition, int]) -> None: ...

    def seek(self, partition: Partition, offset: int) -> None: ...

    async def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        """Store ``value``; raise ``DeadLetterRefused`` if the broker never will (too large),
        ``SourceUnavailable`` or ``OSError`` if it cannot now."""

    async def lag(self) -> int | None: ...


def check_topics(topic: str, dead_letter: str) -> None:
    """Refuse dead letters to the topic read: they would come back to the consumer for ever."""
    if dead_letter == topic:
        raise InputError("dead-letter", f"{dead_letter!r} is the topic this consumer reads: "
                         "dead letters must go to a topic it does not read")


class KafkaSource:
    """A consumer of a group on one topic; dead letters go to another topic."""

    def __init__(self, log: KafkaLog, topic: str, dead_letter: str) -> None:
        check_topics(topic, dead_letter)
        self.log = log
        self.topic = topic
        self.dead_topic = dead_letter
        self._seen: dict[Partition, int] = {}  # the highest offset fetched, per partition
        self._held: dict[Partition, tuple[int, float]] = {}  # offset handed back, until (monotonic)
        self._termed: list[Message] = []  # given up on: acknowledged with the next batch

    async def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        try:
            records = await self.log.fetch(max_messages, int(timeout_s * 1000))
        except (OSError, ConnectionError) as exc:
            raise SourceUnavailable(f"fetch: {exc}") from exc
        out = []
        for r in records:
            where = (r.topic, r.partition)
            if self._holding(where):
                continue
            again = r.offset <= self._seen.get(where, -1)
            self._seen[where] = max(r.offset, self._seen.get(where, -1))
            out.append(Message(r.value or b"", 2 if again else 1,
                               {"topic": r.topic, "partition": r.partition, "offset": r.offset},
                               where + (r.offset,)))
        if records and not out:  # every partition that had records waits: so does the fetch
            await asyncio.sleep(min(timeout_s, self._next_release()))
        return out

    def _holding(self, where: Partition) -> bool:
        """Whether the partition waits; the position stays at the offset it waits on, meanwhile."""
        held = self._held.get(where)
        if held is None:
            return False
        if time.monotonic() >= held[1]:
            del self._held[where]
            return False
        self.log.seek(where, held[0])
        return True

    def _next_release(self) -> float:
        return max(0.0, min((until for _, until in self._held.values()), default=0.0) - time.monotonic())

    async def ack(self, messages: Sequence[Message]) -> None:
        ends: dict[Partition, int] = {}
        for m in [*messages, *self._termed]:
            topic, partition, offset = m.handle
            ends[(topic, partition)] = max(offset + 1, ends.get((topic, partition), 0))
        for where, (offset, _) in self._held.items():  # never past a message handed back
            if where in ends:
                ends[where] = min(ends[where], offset)
        try:
            await self.log.commit(ends)
        except (OSError, ConnectionError) as exc:
            raise SourceUnavailable(f"commit: {exc}") from exc
        self._termed.clear()

    async def nak(self, messages: Sequence[Message], delay_s: float) -> None:
        starts: dict[Partition, int] = {}
        for m in messages:
            topic, partition, offset = m.handle
            starts[(topic, partition)] = min(offset, starts.get((topic, partition), offset))
        until = time.monotonic() + delay_s
        for where, offset in starts.items():  # (the loop itself waits before fetching again)
            self.log.seek(where, offset)
            if delay_s > 0:
                held = self._held.get(where, (offset, until))
                self._held[where] = (min(offset, held[0]), max(until, held[1]))

    async def term(self, message: Message) -> None:
        self._termed.append(message)

    async def dead_letter(self, message: Message, reason: dict[str, Any]) -> None:
        event_id = reason.get("event_id")
        try:
            await self.log.produce(self.dead_topic, dead_letter_body(message, reason),
                                   event_id.encode() if isinstance(event_id, str) else None)
        except (OSError, ConnectionError) as exc:
            raise SourceUnavailable(f"dead letter: {exc}") from exc

    async def lag(self, fresh: bool = False) -> int | None:
        return await self.log.lag()  # the log's own figure, asked each time

    async def close(self) -> None:
        closer = getattr(self.log, "close", None)
        if closer is not None:
            await closer()
