"""The local upstream's ``--stream-seconds``: a stream's first event at once, the rest spread."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from tests.gateway.upstream import REPLY_WORDS, Upstream


def stream_times(upstream: Upstream) -> list[tuple[float, bytes]]:
    """When each body piece of one streamed chat completion was sent (seconds from the start)."""
    body = orjson.dumps({"model": "fake-model", "stream": True, "stream_options": {"include_usage": True},
                         "messages": [{"role": "user", "content": "hello there"}]})
    received = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[tuple[float, bytes]] = []
    scope = {"type": "http", "path": "/v1/chat/completions", "query_string": b"", "headers": []}
    started = time.perf_counter()

    async def receive() -> dict[str, Any]:
        return received.pop(0)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append((time.perf_counter() - started, message["body"]))

    asyncio.run(upstream(scope, receive, send))
    return sent


def test_a_paced_stream_sends_its_first_event_at_once_and_the_rest_over_the_seconds_given() -> None:
    sent = stream_times(Upstream(stream_seconds=0.5))
    assert len(sent) == REPLY_WORDS + 3  # the words, the finish, the usage, [DONE]
    assert sent[0][0] < 0.1
    assert 0.45 <= sent[-1][0] < 1.5
    assert sent[-1][1] == b"data: [DONE]\n\n"


def test_streams_are_not_paced_by_default() -> None:
    assert stream_times(Upstream())[-1][0] < 0.2
