"""The consumer's source over NATS JetStream: a durable pull consumer.

Every consumer started with the same stream and durable name shares that one JetStream consumer:
each fetch gets messages no other consumer holds, and a message that is not acknowledged within
``ack_wait_s`` (its consumer died, or handed it back) is delivered again, to any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError

from creditmeter.errors import InputError
from creditmeter.stream.core import DeadLetterRefused, Message, SourceUnavailable, dead_letter_body
from creditmeter.stream.subjects import check_dead_letter, check_durable, subject_matches

MAX_ACK_PENDING = 50_000  # across every consumer of the durable: several batches each in hand
LAG_EVERY_S = 1.0
_BROKER_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


class NatsSource:
    """A durable pull consumer on ``stream``, reading ``subject``; dead letters to ``dead_letter``."""

    def __init__(self, nc: Client, js: JetStreamContext, sub: JetStreamContext.PullSubscription,
                 dead_letter: str, names: tuple[str, str]) -> None:
        self.nc, self.js, self.sub = nc, js, sub
        self.dead_subject = dead_letter
        self.stream, self.durable = names
        self._lag: int | None = None
        self._asked = 0.0  # when ``_lag`` was asked of the server (loop time)
        self._closing: list[bool] = []

    @classmethod
    async def open(cls, url: str, *, stream: str, subject: str, durable: str, dead_letter: str,
                   ack_wait_s: float = 30.0, create: bool = True,
                   notice: Callable[[str], None] | None = None) -> NatsSource:
        """Connect (once: an unreachable server raises ``SourceUnavailable``; once connected, it
        reconnects for ever), make the stream and the durable consumer when missing (``create``),
        and check the configuration; a bad one raises ``InputError``. ``notice`` hears a line
        when the connection is lost, comes back, or fails."""
        check_dead_letter(subject, dead_letter)
        check_durable(durable)
        tell = notice or (lambda _: None)
        closing: list[bool] = []  # set before a close of ours: its disconnect is no news

        async def on_error(exc: Exception) -> None:
            if connected and not closing:  # a first connection's failure is raised, not told
                tell(f"nats: {exc or type(exc).__name__}")

        async def on_disconnect() -> None:
            if not closing:
                tell("nats: disconnected; reconnecting")

        async def on_reconnect() -> None:
            tell("nats: reconnected")

        connected: list[bool] = []
        try:  # the first connection gives up after two tries: the caller decides when to try again
            nc = await nats.connect(url, max_reconnect_attempts=1, reconnect_time_wait=0.5,
                                    connect_timeout=5, allow_reconnect=True, error_cb=on_error,
                                    disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
        except (*_BROKER_ERRORS, ValueError) as exc:
            raise SourceUnavailable(f"cannot connect to {url}: {exc or type(exc).__name__}") from exc
        nc.options["max_reconnect_attempts"] = -1  # once connected, reconnect for ever
        connected.append(True)
        try:
            sub = await _subscribe(nc.jetstream(), (stream, subject, durable, dead_letter),
                                   ack_wait_s, create)
        except BaseException:
            closing.append(True)
            await nc.close()
            raise
        source = cls(nc, nc.jetstream(), sub, dead_letter, (stream, durable))
        source._closing = closing
        return source

    async def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        try:
            msgs = await self.sub.fetch(max_messages, timeout=timeout_s)
        except nats.errors.TimeoutError:
            return []
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"fetch: {exc or type(exc).__name__}") from exc
        return [_message(m) for m in msgs]

    async def ack(self, messages: Sequence[Message]) -> None:
        try:
            for m in messages:
                await m.handle.ack()
            await self.nc.flush(timeout=5)
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"ack: {exc or type(exc).__name__}") from exc

    async def nak(self, messages: Sequence[Message], delay_s: float) -> None:
        try:
            for m in messages:
                await m.handle.nak(delay=delay_s)
            await self.nc.flush(timeout=5)
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"nak: {exc or type(exc).__name__}") from exc

    async def term(self, message: Message) -> None:
        try:
            await message.handle.term()
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"term: {exc or type(exc).__name__}") from exc

    async def dead_letter(self, message: Message, reason: dict[str, Any]) -> None:
        body = dead_letter_body(message, reason)
        # The same dead letter twice (its acknowledgement was lost) is stored once.
        msg_id = f"dead:{self.stream}:{message.where.get('stream_sequence')}"
        try:
            await self.js.publish(self.dead_subject, body, timeout=5,
                                  headers={"Nats-Msg-Id": msg_id,
                                           "Creditmeter-Reason": str(reason.get("reason"))[:200],
                                           "Creditmeter-Message-Bytes": str(len(message.data))})
        except (nats.errors.MaxPayloadError, BadRequestError) as exc:
            raise DeadLetterRefused(f"{exc or type(exc).__name__}") from exc
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"dead letter: {exc or type(exc).__name__}") from exc

    async def lag(self, fresh: bool = False) -> int | None:
        """Messages not done: not delivered yet plus delivered and not acknowledged (asked of the
        server at most once a second, unless ``fresh``)."""
        now = asyncio.get_running_loop().time()
        if not fresh and self._lag is not None and now - self._asked < LAG_EVERY_S:
            return self._lag
        try:
            info = await self.sub.consumer_info()
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"consumer info: {exc or type(exc).__name__}") from exc
        self._lag, self._asked = (info.num_pending or 0) + (info.num_ack_pending or 0), now
        return self._lag

    async def close(self) -> None:
        self._closing.append(True)
        try:
            await self.nc.close()
        except _BROKER_ERRORS:
            pass


def _message(msg: Msg) -> Message:
    meta = msg.metadata
    return Message(msg.data, meta.num_delivered,
                   {"subject": msg.subject, "stream": meta.stream,
                    "stream_sequence": meta.sequence.stream}, msg)


async def _stream(js: JetStreamContext, name: str, subjects: list[str], create: bool,
                  field: str) -> None:
    try:
        await js.stream_info(name)
    except NotFoundError:
        if not create:
            raise InputError(field, f"there is no stream {name!r}") from None
        await js.add_stream(name=name, subjects=subjects)


async def _dead_letter_stream(js: JetStreamContext, stream: str, subject: str, create: bool) -> None:
    """Dead letters must be stored: by a stream that captures their subject already, or else by
    one made for them (``STREAM_DEAD``)."""
    try:
        await js.find_stream_name_by_subject(subject)
    except NotFoundError:
        await _stream(js, f"{stream}_DEAD", [subject], create, "dead-letter")


async def _subscribe(js: JetStreamContext, names: tuple[str, str, str, str], ack_wait_s: float,
                     create: bool) -> JetStreamContext.PullSubscription:
    """The pull subscription on the durable, made if missing; an existing one must read exactly
    ``subject`` (else ``InputError`` naming ``durable``), and takes the ack wait asked for."""
    stream, subject, durable, dead_letter = names
    try:
        await _stream(js, stream, [subject], create, "stream")
        await _dead_letter_stream(js, stream, dead_letter, create)
        try:
            info = await js.consumer_info(stream, durable)
        except NotFoundError:
            config = api.ConsumerConfig(durable_name=durable, name=durable, filter_subject=subject,
                                        ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ack_wait_s,
                                        max_ack_pending=MAX_ACK_PENDING, max_deliver=-1)
            await js.add_consumer(stream, config=config)
        else:
            await _check_existing(js, stream, info.config, (subject, dead_letter), ack_wait_s)
        return await js.pull_subscribe_bind(durable=durable, stream=stream)
    except BadRequestError as exc:
        raise InputError("durable", f"JetStream refused the consumer {durable!r}: "
                         f"{exc.description}") from exc


async def _check_existing(js: JetStreamContext, stream: str, config: api.ConsumerConfig,
                          reads: tuple[str, str], ack_wait_s: float) -> None:
    subject, dead_letter = reads
    durable = config.durable_name or config.name
    filters = list(config.filter_subjects or ([config.filter_subject] if config.filter_subject else []))
    if not filters:  # no filter: the durable reads every subject of the stream
        filters = list((await js.stream_info(stream)).config.subjects or [])
    for read in filters:
        if subject_matches(read, dead_letter) or read == dead_letter:
            raise InputError("dead-letter", f"{dead_letter!r} is read by the durable {durable!r} "
                             f"(it reads {read!r}): dead letters must go to a subject it does not read")
    if filters != [subject]:
        raise InputError("durable", f"the durable {durable!r} reads {', '.join(filters)}, not "
                         f"subject {subject!r}: give its subject, or another durable name")
    if config.ack_policy not in (None, api.AckPolicy.EXPLICIT):
        raise InputError("durable", f"the durable {durable!r} does not acknowledge each message "
                         "explicitly: give another durable name")
    if config.ack_wait != ack_wait_s or config.max_ack_pending != MAX_ACK_PENDING:
        try:
            await js.add_consumer(stream, config=config.evolve(ack_wait=ack_wait_s,
                                                               max_ack_pending=MAX_ACK_PENDING))
        except BadRequestError as exc:
            raise InputError("ack-wait", f"the durable {durable!r} waits {config.ack_wait} s and "
                             f"could not be changed: {exc.description}") from exc
