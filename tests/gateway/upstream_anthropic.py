"""The local upstream's Anthropic Messages API: ``POST /v1/messages`` (whole and streamed, with
the real event sequence) and ``POST /v1/messages/count_tokens``; errors in Anthropic's shape.

A prompt's tokens: 3, plus the system prompt's words, plus 3 and the words of each message's text.
``fake-cached`` reports half the prompt read from the cache and a quarter written to it (of which
half, rounded down, for one hour); ``input_tokens`` is the rest, as Anthropic counts it.
``fake-reasoning`` sends a thinking block (``upstream_common.reasoning``) before the text (counted
in ``output_tokens`` and stated in ``output_tokens_details.thinking_tokens``, as Anthropic does).
``fake-priority`` reports the priority service tier. A request without an ``anthropic-version``
header, or without ``max_tokens``, answers 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.gateway.upstream_common import (
    CHUNK_WORDS,
    ERROR_STATUS,
    WORDS,
    Answer,
    break_off,
    reasoning,
    reply,
    words,
)

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def prompt_tokens(body: Mapping[str, Any]) -> int:
    messages = body.get("messages") or []
    return 3 + words(body.get("system")) + sum(3 + words(m.get("content")) for m in messages)


def input_usage(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a request's prompt is reported as: read from the cache, written to it, or neither."""
    prompt = prompt_tokens(body)
    model = body.get("model")
    read = written = hour = 0
    if model in ("fake-cached", "fake-cache-nosplit", "fake-nulldelta"):
        read, written = prompt // 2, prompt // 4
        hour = written // 2 if model != "fake-cache-nosplit" else 0
    usage: dict[str, Any] = {"input_tokens": prompt - read - written, "cache_creation_input_tokens": written,
                             "cache_read_input_tokens": read}
    if model != "fake-cache-nosplit":
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": written - hour,
                                   "ephemeral_1h_input_tokens": hour}
    usage["service_tier"] = "priority" if model == "fake-priority" else "standard"
    return usage


def error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": "req_fake"}


async def handle(path: str, body: dict[str, Any], headers: Mapping[str, str], answer: Answer,
                 record: dict[str, Any]) -> None:
    """Answers ``/v1/messages`` and ``/v1/messages/count_tokens``; the usage it reports goes in
    ``record``."""
    model = body.get("model")
    if "anthropic-version" not in headers:
        await answer.json(400, error(400, "anthropic-version: header is required"))
        return
    if model in ERROR_STATUS:
        status = ERROR_STATUS[model]
        await answer.json(status, error(status, "context too long" if status == 400 else "boom"))
        return
    if path.endswith("/count_tokens"):
        record["usage"] = {"input_tokens": prompt_tokens(body)}
        await answer.json(200, record["usage"])
        return
    if type(body.get("max_tokens")) is not int:
        await answer.json(400, error(400, "max_tokens: Field required"))
        return
    limit = body["max_tokens"]
    thinking = [WORDS[i % len(WORDS)] for i in range(reasoning(model, limit))]
    text = reply(limit - len(thinking))
    usage = {**input_usage(body), "output_tokens": len(thinking) + len(text)}
    if thinking:
        usage["output_tokens_details"] = {"thinking_tokens": len(thinking)}
    record["usage"] = usage
    stop = "max_tokens" if len(text) < len(reply(None)) else "end_turn"
    message: dict[str, Any] = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                               "content": [], "stop_reason": None, "stop_sequence": None}
    if not body.get("stream"):
        blocks = [{"type": "thinking", "thinking": " ".join(thinking), "signature": "c2ln"}][:len(thinking)]
        blocks.append({"type": "text", "text": " ".join(text)})
        await answer.json(200, {**message, "content": blocks, "stop_reason": stop, "usage": usage})
        return
    await stream(answer, model, message, usage, thinking, text, stop)


async def stream(answer: Answer, model: object, message: dict[str, Any], usage: dict[str, Any],
                 thinking: list[str], text: list[str], stop: str) -> None:
    await answer.start_stream()
    start_usage = {k: v for k, v in usage.items() if not k.startswith("output_tokens")} | {"output_tokens": 1}
    if model != "fake-nostart":
        await answer.event({"type": "message_start", "message": {**message, "usage": start_usage}},
                           "message_start")
    else:  # its text in deltas of CHUNK_WORDS words
        text = [" ".join(text[i:i + CHUNK_WORDS]) for i in range(0, len(text), CHUNK_WORDS)]
    index = 0
    sent = 0
    blocks: list[tuple[dict[str, Any], str, list[str]]] = []
    if thinking:
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, "thinking_delta", thinking))
    blocks.append(({"type": "text", "text": ""}, "text_delta", text))
    for block, kind, pieces in blocks:
        await answer.event({"type": "content_block_start", "index": index, "content_block": block},
                           "content_block_start")
        if index == 0:
            await answer.event({"type": "ping"}, "ping")
        for i, word in enumerate(pieces):
            if model == "fake-break" and sent == 3:
                break_off()
            if model == "fake-errorevent" and sent == 2:
                await answer.event(error(529, "Overloaded"), "error")
                await answer.end()
                return
            field = "thinking" if kind == "thinking_delta" else "text"
            delta = {"type": kind, field: word if i == 0 else " " + word}
            await answer.event({"type": "content_block_delta", "index": index, "delta": delta},
                               "content_block_delta")
            sent += 1
        if kind == "thinking_delta":
            signature = {"type": "signature_delta", "signature": "c2ln"}
            await answer.event({"type": "content_block_delta", "index": index, "delta": signature},
                               "content_block_delta")
        await answer.event({"type": "content_block_stop", "index": index}, "content_block_stop")
        index += 1
    final = {k: v for k, v in usage.items() if k.startswith("output_tokens")}
    if model == "fake-nulldelta":
        final |= {"input_tokens": None, "cache_read_input_tokens": None, "cache_creation_input_tokens": 1.5}
    await answer.event({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": final}, "message_delta")
    await answer.event({"type": "message_stop"}, "message_stop")
    await answer.end()
