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
from creditmeter.stream.core import Message, SourceUnavailable, dead_letter_body
from creditmeter.stream.subjects import check_dead_letter

MAX_ACK_PENDING = 50_000  # across every consumer of the durable: several batches each in hand
_BROKER_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


class NatsSource:
    """A durable pull consumer on ``stream``, reading ``subject``; dead letters to ``dead_letter``."""

    def __init__(self, nc: Client, js: JetStreamContext, sub: JetStreamContext.PullSubscription,
                 dead_letter: str, names: tuple[str, str]) -> None:
        self.nc, self.js, self.sub = nc, js, sub
        self.dead_subject = dead_letter
        self.stream, self.durable = names
        self._lag: int | None = None
        self._fresh = False  # whether ``_lag`` came from the last fetch
        self._closing: list[bool] = []

    @classmethod
    async def open(cls, url: str, *, stream: str, subject: str, durable: str, dead_letter: str,
                   ack_wait_s: float = 30.0, create: bool = True,
                   notice: Callable[[str], None] | None = None) -> NatsSource:
        """Connect (reconnecting for ever after), make the stream and the durable consumer when
        missing (``create``), and check the configuration; a bad one raises ``InputError``.
        ``notice`` hears a line when the connection is lost, comes back, or fails."""
        check_dead_letter(subject, dead_letter)
        tell = notice or (lambda _: None)
        closing: list[bool] = []  # set by close(): its disconnect is no news

        async def on_error(exc: Exception) -> None:
            tell(f"nats: {exc or type(exc).__name__}")

        async def on_disconnect() -> None:
            if not closing:
                tell("nats: disconnected; reconnecting")

        async def on_reconnect() -> None:
            tell("nats: reconnected")

        try:
            nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                    connect_timeout=5, allow_reconnect=True, error_cb=on_error,
                                    disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"cannot connect to {url}: {exc or type(exc).__name__}") from exc
        js = nc.jetstream()
        try:
            await _stream(js, stream, [subject], create, "stream")
            await _dead_letter_stream(js, stream, dead_letter, create)
            config = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ack_wait_s,
                                        max_ack_pending=MAX_ACK_PENDING, max_deliver=-1)
            sub = await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
        except BadRequestError as exc:
            await nc.close()
            raise InputError("subject", f"JetStream refused the consumer: {exc.description}") from exc
        except BaseException:
            await nc.close()
            raise
        source = cls(nc, js, sub, dead_letter, (stream, durable))
        source._closing = closing
        return source

    async def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        try:
            msgs = await self.sub.fetch(max_messages, timeout=timeout_s)
        except nats.errors.TimeoutError:
            self._fresh = False
            return []
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"fetch: {exc or type(exc).__name__}") from exc
        if msgs:
            self._lag, self._fresh = msgs[-1].metadata.num_pending, True
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

    async def dead_letter(self, message: Message, reason: dict[str, Any]) -> None:
        body = dead_letter_body(message, reason)
        # The same dead letter twice (its acknowledgement was lost) is stored once.
        msg_id = f"dead:{self.stream}:{message.where.get('stream_sequence')}"
        try:
            await self.js.publish(self.dead_subject, body, timeout=5,
                                  headers={"Nats-Msg-Id": msg_id})
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"dead letter: {exc or type(exc).__name__}") from exc

    async def lag(self) -> int | None:
        if self._fresh:
            return self._lag
        try:
            info = await self.sub.consumer_info()
        except _BROKER_ERRORS as exc:
            raise SourceUnavailable(f"consumer info: {exc or type(exc).__name__}") from exc
        self._lag = info.num_pending
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
