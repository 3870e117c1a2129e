"""The consumer loop, independent of the broker: fetch a batch, charge it, then acknowledge.

A :class:`Source` is the broker seen through six calls (fetch, ack, nak, term, dead-letter, lag);
``nats.py`` and ``kafka.py`` implement it. :func:`consume` drives one, batch by batch:

1. fetch up to ``batch_size`` messages;
2. decode each (a message is one usage event as JSON) and charge them all with one
   ``Engine.record_batch`` call, one transaction;
3. send each event rejected for a reason retrying cannot fix (bad JSON, unknown model, too old …)
   to the dead-letter destination with its reason; hand back with a delay each one that waiting
   will make chargeable (a timestamp ahead of now: see ``verdicts``);
4. acknowledge the rest, only now that the charges have committed and the dead letters are stored.
   A broker failure on the way hands the whole batch back: nothing is acknowledged.

Exactly once is the event id as idempotency key plus the acknowledgement after the commit: a
message delivered again (its acknowledgement was lost, or its consumer died before sending it)
answers ``duplicate`` and costs nothing twice. When the database is unavailable nothing is
acknowledged: the batch is handed back to the broker (``nak``) and the consumer backs off, so
every message stays in the stream until a charge of it has committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from creditmeter.collector import collector_paused
from creditmeter.domain import Charge, Rejected
from creditmeter.engine import Engine
from creditmeter.errors import CreditmeterError, InputError, Unavailable
from creditmeter.stream.metrics import StreamStats
from creditmeter.stream.verdicts import wait_for

# Of a rejected message, this much goes in its dead letter: escaped as JSON it may grow to six
# times as long, and it still fits the brokers' default message size (1 MB) with its reason.
MAX_LETTER_MESSAGE = 64 * 1024


class SourceUnavailable(Exception):
    """The broker could not be reached or did not answer now; the consumer backs off and retries."""


class DeadLetterRefused(Exception):
    """The broker will never store this dead letter (it refused it for good, not for now)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message.

    Attributes:
      data: the payload (one usage event as JSON).
      delivered: how many times it has been delivered (1 the first time).
      where: where it came from, for a dead letter (subject or topic, and its position).
      handle: the broker's own object, for the source that made it.
    """

    data: bytes
    delivered: int
    where: dict[str, Any]
    handle: Any


class Source(Protocol):
    """A broker as the consumer loop sees it."""

    async def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages; an empty list when none came within ``timeout_s``."""

    async def ack(self, messages: Sequence[Message]) -> None:
        """These are done: never deliver them again."""

    async def nak(self, messages: Sequence[Message], delay_s: float) -> None:
        """These were not done: deliver them again (to any consumer) after ``delay_s``. A source
        whose acknowledgement covers everything before a position (Kafka) is asked this first:
        a later ``ack`` never acknowledges past them."""

    async def term(self, message: Message) -> None:
        """Never deliver this one again, though it was not done (its dead letter was refused)."""

    async def dead_letter(self, message: Message, reason: dict[str, Any]) -> None:
        """Put this message, with why it can never be charged, where someone will look at it;
        returns once the broker has stored it. Raises ``SourceUnavailable`` when it could not now,
        ``DeadLetterRefused`` when it never will."""

    async def lag(self, fresh: bool = False) -> int | None:
        """Messages in the stream not delivered to this consumer group yet (None: unknown);
        ``fresh``: asked of the broker now, not a figure it gave a moment ago."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait after a failure: doubling from ``first_s`` up to ``max_s``."""

    first_s: float = 0.2
    max_s: float = 5.0

    def after(self, failures: int) -> float:
        return float(min(self.max_s, self.first_s * 2 ** max(0, failures - 1)))


@dataclass(frozen=True, slots=True)
class ConsumeOptions:
    """How the loop runs: batch size, how long a fetch waits, when an idle consumer stops."""

    batch_size: int = 500
    fetch_timeout_s: float = 1.0
    idle_exit_s: float | None = None
    backoff: Backoff = Backoff()


def decode(data: bytes) -> dict[str, Any] | InputError:
    """A message's event, or why it is not one (the message is not a JSON object)."""
    try:
        item = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return InputError("message", f"malformed JSON: {exc}")
    if type(item) is not dict:
        return InputError("event", "must be a JSON object")
    return item


def dead_letter_reason(error: CreditmeterError, event_id: str | None) -> dict[str, Any]:
    """What a dead letter says about why its event was not charged."""
    return {"type": error.kind, "field": getattr(error, "field", None),
            "reason": getattr(error, "reason", None) or str(error), "event_id": event_id}


def dead_letter_body(message: Message, reason: dict[str, Any]) -> bytes:
    """A dead letter: why, where the message came from, and the message itself as it was — its
    first ``MAX_LETTER_MESSAGE`` bytes when it is longer (``message_bytes`` is its whole size,
    ``truncated`` says whether it was cut), so that a letter always fits in one message."""
    data = message.data
    text = data[:MAX_LETTER_MESSAGE].decode("utf-8", errors="replace")
    return orjson.dumps({**reason, **message.where, "delivered": message.delivered,
                         "message_bytes": len(data), "truncated": len(data) > MAX_LETTER_MESSAGE,
                         "message": text})


async def charge_batch(engine: Engine, messages: Sequence[Message],
                       at_us: int) -> tuple[list[dict[str, Any] | None], list[Charge | Rejected]]:
    """Each message's event (None: not one) and its result, in order: the decodable events charged
    in one transaction."""
    decoded = [decode(m.data) for m in messages]
    events = [item for item in decoded if not isinstance(item, InputError)]
    charged = iter(await asyncio.to_thread(_record, engine, events, at_us) if events else [])
    results = [Rejected(None, item) if isinstance(item, InputError) else next(charged) for item in decoded]
    return [None if isinstance(item, InputError) else item for item in decoded], results


def _record(engine: Engine, events: list[dict[str, Any]], at_us: int) -> list[Charge | Rejected]:
    with collector_paused():  # see creditmeter.collector
        return engine.record_batch(events, at_us)


async def handle_batch(source: Source, engine: Engine, messages: Sequence[Message], at_us: int,
                       stats: StreamStats) -> None:
    """Charge a fetched batch, dead-letter its permanently rejected events, hand back those that
    waiting will make chargeable, then acknowledge the rest.

    Raises ``Unavailable`` (nothing acknowledged) when the charges did not commit, and
    ``SourceUnavailable`` when the broker failed after they did (nothing acknowledged either: the
    caller hands the batch back, its messages come again and answer duplicate).
    """
    with stats.timed("charge"):
        events, results = await charge_batch(engine, messages, at_us)
    done: list[Message] = []
    later: dict[float, list[Message]] = {}
    refused = 0
    with stats.timed("dead_letter"):
        for message, event, result in zip(messages, events, results, strict=True):
            if not isinstance(result, Rejected):
                done.append(message)
                continue
            wait_s = wait_for(result.error, event, at_us, engine.settings.max_future_s)
            if wait_s is not None:
                later.setdefault(wait_s, []).append(message)
                continue
            try:
                await source.dead_letter(message, dead_letter_reason(result.error, result.event_id))
                done.append(message)
            except DeadLetterRefused as exc:
                await source.term(message)  # the broker will never store it: stop asking
                refused += 1
                stats.dead_letter_refused(str(exc))
    with stats.timed("ack"):
        for wait_s, waiting in later.items():
            await source.nak(waiting, wait_s)
        await source.ack(done)
    stats.count_batch(results, sum(1 for m in messages if m.delivered > 1),
                      held=sum(len(v) for v in later.values()), refused=refused)


async def consume(source: Source, engine: Engine, clock: Callable[[], int], stats: StreamStats,
                  stop: asyncio.Event, options: ConsumeOptions = ConsumeOptions()) -> None:
    """Run until ``stop`` is set (the batch in hand is finished first), or until no message came
    for ``options.idle_exit_s``. ``clock`` is "now" in µs, read once per batch."""
    loop = asyncio.get_running_loop()
    idle_since = loop.time()
    failures = 0
    while not stop.is_set():
        started = loop.time()
        try:
            messages = await source.fetch(options.batch_size, options.fetch_timeout_s)
        except SourceUnavailable as exc:
            failures += 1
            stats.broker_failed(str(exc))
            await _pause(stop, options.backoff.after(failures))
            continue
        stats.add_time("fetch" if messages else "idle", loop.time() - started)
        if not messages:
            failures = 0
            stats.lag = await _lag(source, stats.lag)
            if options.idle_exit_s is not None and loop.time() - idle_since >= options.idle_exit_s:
                stats.lag = await _lag(source, stats.lag, fresh=True)  # what it leaves behind
                return
            continue
        idle_since = loop.time()
        try:
            await handle_batch(source, engine, messages, clock(), stats)
            failures = 0
        except (Unavailable, SourceUnavailable) as exc:  # the batch goes back; wait, then again
            failures += 1
            (stats.database_failed if isinstance(exc, Unavailable) else stats.broker_failed)(str(exc))
            delay = options.backoff.after(failures)
            await _hand_back(source, messages, delay)
            await _pause(stop, delay)
        stats.lag = await _lag(source, stats.lag)


async def _hand_back(source: Source, messages: Sequence[Message], delay_s: float) -> None:
    try:
        await source.nak(messages, delay_s)
    except SourceUnavailable:
        pass  # the broker delivers them again anyway once their acknowledgement wait is over


async def _lag(source: Source, known: int | None, *, fresh: bool = False) -> int | None:
    try:
        found = await source.lag(fresh)
    except SourceUnavailable:
        return known
    return known if found is None else found


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
