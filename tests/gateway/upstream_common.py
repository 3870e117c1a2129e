"""What the local upstream's protocols share (``tests.gateway.upstream``): its word count, its
reply, the behaviours chosen by model name, and the ASGI plumbing to answer JSON and event streams.

A token is a word: a text's tokens are its words (``str.split``). The reply is ``REPLY_WORDS``
words, fewer when the request's output cap says so. The upstream model name picks a behaviour, the
same on every protocol (a name not listed answers normally):

- ``fake-cached``: part of the prompt is reported as read from the cache (chat completions and
  Responses: half the prompt; Messages: half read and a quarter written, the writes split between
  5-minute and 1-hour ones, see ``upstream_anthropic``).
- ``fake-cache-nosplit``: Messages only: cache writes without the 5-minute / 1-hour split.
- ``fake-nulldelta``: Messages only: reports the cache as ``fake-cached`` does; its stream's
  ``message_delta`` usage has nulls (input, cache reads) and a non-integer (cache writes) beside
  its output count, as Anthropic's ``MessageDeltaUsage`` allows.
- ``fake-nostart``: Messages only: its stream has no ``message_start``, and its text comes in
  deltas of ``CHUNK_WORDS`` words (an upstream's delta carries many tokens).
- ``fake-noend``: Responses only: its stream ends cleanly without its final event.
- ``fake-reasoning``: Responses and chat completions report reasoning tokens inside the output
  count (``REASONING_TOKENS``, at most half the cap); Messages sends a thinking block first.
- ``fake-priority`` / ``fake-flex``: the answer states that service tier.
- ``fake-slow``: streams an event every 50 ms (for clients that leave mid-stream).
- ``fake-break``: streams 3 pieces of output, then drops the connection.
- ``fake-errorevent``: streams 2 pieces of output, then an error event.
- ``fake-500``, ``fake-400``, ``fake-401``, ``fake-429``, ``fake-529``: answer that status in the
  protocol's error shape.
- ``fake-hang``: waits 30 s before answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

REPLY_WORDS = 20
REASONING_TOKENS = 8
CHUNK_WORDS = 5
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")
ERROR_STATUS = {"fake-500": 500, "fake-400": 400, "fake-401": 401, "fake-429": 429, "fake-529": 529}


def text_of(value: object) -> str:
    """The text in a message's content: a string, a list of blocks or parts, or one of them (its
    ``text``, ``content`` or ``output``); anything else has none."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(text_of(item) for item in value)
    if isinstance(value, Mapping):
        return " ".join(text_of(value.get(k)) for k in ("text", "content", "output") if k in value)
    return ""


def words(value: object) -> int:
    return len(text_of(value).split())


def reply(limit: object) -> list[str]:
    """The reply's words: ``REPLY_WORDS``, or ``limit`` when it is smaller."""
    count = REPLY_WORDS if not isinstance(limit, int) or limit <= 0 else min(REPLY_WORDS, limit)
    return [WORDS[i % len(WORDS)] for i in range(count)]


def reasoning(model: object, limit: object) -> int:
    """The reasoning tokens a ``fake-reasoning`` answer reports (inside its output count)."""
    if model != "fake-reasoning":
        return 0
    cap = limit if isinstance(limit, int) and limit > 0 else REPLY_WORDS * 2
    return min(REASONING_TOKENS, cap // 2)


def tier(model: object, default: str | None) -> str | None:
    return {"fake-priority": "priority", "fake-flex": "flex"}.get(str(model), default)


async def read_body(receive: Any) -> bytes:
    raw = b""
    more = True
    while more:
        message = await receive()
        raw += message.get("body", b"")
        more = message.get("more_body", False)
    return raw


class Answer:
    """One HTTP answer: JSON, or a stream of server-sent events (``event:`` named or not)."""

    def __init__(self, send: Any, model: object) -> None:
        self.send = send
        self.model = model

    async def json(self, status: int, data: Any, headers: Mapping[str, str] | None = None) -> None:
        body = orjson.dumps(data)
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await self.send({"type": "http.response.start", "status": status,
                         "headers": [(b"content-type", b"application/json"),
                                     (b"content-length", str(len(body)).encode()), *extra]})
        await self.send({"type": "http.response.body", "body": body})

    async def start_stream(self) -> None:
        await self.send({"type": "http.response.start", "status": 200,
                         "headers": [(b"content-type", b"text/event-stream"),
                                     (b"cache-control", b"no-cache")]})

    async def event(self, data: Any, name: str | None = None) -> None:
        """One event; ``fake-slow`` waits 50 ms before each."""
        if self.model == "fake-slow":
            await asyncio.sleep(0.05)
        head = f"event: {name}\n".encode() if name else b""
        body = head + b"data: " + orjson.dumps(data) + b"\n\n"
        await self.send({"type": "http.response.body", "body": body, "more_body": True})

    async def end(self, tail: bytes = b"") -> None:
        await self.send({"type": "http.response.body", "body": tail, "more_body": False})


def break_off() -> None:
    """Drops the connection mid-stream (``fake-break``): the server closes it on this error."""
    raise RuntimeError("the connection breaks off here")
