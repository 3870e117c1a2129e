"""Publishing usage events to a JetStream stream: one event per message, as JSON.

The message format is the JSONL import's line (docs/stream.md): any service, in any language,
publishes ``{"id": …, "account_id": …, "model": …, …}`` to a subject the stream captures. This
helper checks the event first (a bad one raises ``InputError`` naming the field, and nothing is
published), stamps its time if it has none, and asks JetStream to drop a republish of the same
id within the stream's duplicate window (``Nats-Msg-Id``); the consumer answers any later one
``duplicate`` all the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from nats.js import JetStreamContext

from creditmeter.events import parse_event
from creditmeter.stream.subjects import check_subject
from creditmeter.timeutil import format_instant

DEFAULT_SUBJECT = "usage.events"


def encode_event(event: Mapping[str, Any], now_us: int | None = None) -> bytes:
    """An event as a message body: checked (``InputError`` naming the field), with a
    ``timestamp`` (``now_us``, default the current time) when it has none."""
    body = dict(event)
    if body.get("timestamp") is None:
        body["timestamp"] = format_instant(time.time_ns() // 1000 if now_us is None else now_us)
    parse_event(body)
    return orjson.dumps(body)


def _headers(body: Mapping[str, Any], dedupe: bool) -> dict[str, str] | None:
    return {"Nats-Msg-Id": str(body["id"])} if dedupe else None


async def publish(js: JetStreamContext, event: Mapping[str, Any], *, subject: str = DEFAULT_SUBJECT,
                  dedupe: bool = True, timeout_s: float = 5.0) -> int:
    """Publish one event and wait until the stream has stored it; returns its stream sequence."""
    check_subject(subject, "subject", literal=True)
    data = encode_event(event)
    ack = await js.publish(subject, data, timeout=timeout_s, headers=_headers(event, dedupe))
    return int(ack.seq)


async def publish_many(js: JetStreamContext, events: Iterable[Mapping[str, Any]], *,
                       subject: str = DEFAULT_SUBJECT, dedupe: bool = True,
                       window: int = 1_000) -> int:
    """Publish events with up to ``window`` unconfirmed at a time; returns once the stream has
    stored every one (the count published). Every event is checked before any is sent."""
    check_subject(subject, "subject", literal=True)
    bodies = [(encode_event(event), _headers(event, dedupe)) for event in events]
    pending = []
    for data, headers in bodies:
        pending.append(await js.publish_async(subject, data, headers=headers, wait_stall=30.0))
        if len(pending) >= window:
            for future in pending:
                await future
            pending.clear()
    for future in pending:
        await future
    return len(bodies)
