"""OpenAI's Responses API (``POST /v1/responses``, whole and streamed), in front of models whose
upstream speaks the OpenAI API.

What a request may cost: its bytes bound its prompt's tokens (input, instructions and tools are all
in them), plus ``max_output_tokens`` or the model's default (reasoning lies within it; the cap is
sent upstream, so it cannot write more). The usage: ``input_tokens`` less the cached and the
cache-written ones (``input_tokens_details``), ``output_tokens`` less the reasoning ones
(``output_tokens_details``), and the answer's ``service_tier``. A stream's typed events are passed
on as they come; its last (``response.completed``, ``.incomplete`` or ``.failed``) holds the usage,
and is sent once the charge is settled with ``credits_charged`` and ``credits_remaining`` in its
``response.usage``. A stream that fails, or that the upstream ends without its final event, ends
with a ``response.failed`` event saying which. A ``background`` request is refused: the upstream
would queue it and answer at once, with no usage to charge.

A request that names an earlier response (``previous_response_id``) or a conversation brings
the upstream's stored context along, which its own bytes do not bound: it is charged in full, and
what the hold did not cover is charged like any usage (overage when the credits run out).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Send

from creditmeter.engine import Usage
from creditmeter.gateway.call import Call, Close, approx_tokens, delta_tokens
from creditmeter.gateway.errors import bad, streamed, whole
from creditmeter.gateway.openai_chat import detail, service_tier
from creditmeter.gateway.relay import Relay, parse_event, sse

MAX_OUTPUT_TOKENS = 10_000_000
_ENDS = ("response.completed", "response.incomplete", "response.failed")
_NOT_TEXT = ("response.audio.delta",)  # deltas of data, not text: counted one token each
_BROKE_OFF = "the upstream stream broke off; what was sent was charged"
_NO_END = "the upstream's stream ended without its final event; what was sent was charged"


def responses_usage(reported: object, alias: str, tier: object = None) -> Usage | None:
    """A response's usage object as the engine's Usage (``tier``: its service tier); None if it
    is not a usable one. Each token is counted once."""
    if not isinstance(reported, Mapping):
        return None
    read, output = reported.get("input_tokens"), reported.get("output_tokens")
    if type(read) is not int or type(output) is not int or read < 0 or output < 0:
        return None
    cached = min(detail(reported, "input_tokens_details", "cached_tokens"), read)
    written = min(detail(reported, "input_tokens_details", "cache_write_tokens"), read - cached)
    reasoning = min(detail(reported, "output_tokens_details", "reasoning_tokens"), output)
    return Usage(alias, read - cached - written, output - reasoning, cached, written,
                 reasoning_tokens=reasoning, service_tier=service_tier(tier))


class Responses(Call):
    """One Responses request through the gateway."""

    path = "/v1/responses"
    upstream_path = "/responses"
    body: dict[str, Any]

    async def run(self) -> Response:
        body = self.json_body()
        route = self.route_of(body.get("model"))
        if body.get("input") is not None and not isinstance(body["input"], str | list):
            raise bad("input", "must be a string or a list of input items")
        if body.get("instructions") is not None and not isinstance(body["instructions"], str):
            raise bad("instructions", "must be a string")
        streamed(body)
        if body.get("background") not in (None, False):
            # The upstream would queue the work and answer at once, with no usage to charge.
            raise bad("background", "is not served here: a response is charged as it is answered, "
                                    "so ask without background (stream it for a long one)")
        asked = whole(body, "max_output_tokens", 1, MAX_OUTPUT_TOKENS)
        self.route, self.body, self.stream = route, body, body.get("stream") is True
        await self.reserve(lambda on: (self.input_bound(body, on, "image_url", "file_url"),
                                       asked or on.max_output_tokens), service_tier(body.get("service_tier")))
        route = self.route  # the account's fallback model's, when its credits ran out
        cap = asked or route.max_output_tokens
        payload = {**body, "model": route.upstream_model, "max_output_tokens": cap}
        if self.stream:
            source, close = await self.post_stream(payload)
            return _ResponsesRelay(self, source, close)
        content = await self.post(payload)
        data = self.answer_of(content)
        if data is None:
            data = {"error": "not JSON"}
        usage = responses_usage(data.get("usage"), route.alias, data.get("service_tier"))
        if usage is None and (data.get("error") or data.get("object") != "response"):
            await self.release("an unreadable upstream answer")
            raise self.upstream_failed(None, "its answer was an error or not a response")
        output = data.get("output")
        return await self.answered(content, data, usage, lambda: self.counted(approx_tokens(output)))

    def counted(self, generated: int, seen: Usage | None = None) -> Usage:
        """What was generated when the upstream's count is missing: the output relayed
        (``generated`` tokens, as counted), and the prompt approximated from the request's text."""
        if seen is not None:
            total = max(seen.output_tokens + seen.reasoning_tokens, generated)
            return replace(seen, output_tokens=total - seen.reasoning_tokens)
        body = self.body
        prompt = approx_tokens([body.get("instructions"), body.get("input"), body.get("tools")])
        return Usage(self.route.alias, prompt, generated)


class _ResponsesRelay(Relay):
    """A Responses stream: its events passed on, the last one held until the charge is settled."""

    call: Responses

    def __init__(self, call: Responses, source: AsyncIterator[bytes], close: Close) -> None:
        super().__init__(call, source, close)
        self.response: dict[str, Any] = {}  # the response as ``response.created`` described it
        self.last: dict[str, Any] | None = None  # the final event, once it came
        self.sequence = 0

    async def event(self, event: bytes, send: Send) -> bool:
        name, raw = parse_event(event)
        try:
            data = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            if event.strip():
                await self._send(send, event + b"\n\n")
            return False
        kind = data.get("type") or name or ""
        if type(data.get("sequence_number")) is int:
            self.sequence = data["sequence_number"]
        if kind == "error":
            raise ValueError(f"the upstream sent an error: {str(data.get('message'))[:200]}")
        response = data.get("response")
        if isinstance(response, dict):
            if not self.response:
                self.response = {k: v for k, v in response.items() if k not in ("output", "usage")}
            renamed = self.call.rename(response)
            if kind in _ENDS:
                usage = responses_usage(response.get("usage"), self.call.route.alias,
                                        response.get("service_tier"))
                self.seen = usage or self.seen
                self.last = data
                await self._end(send, "complete")
                return True
            if renamed:
                await self._send(send, sse(data, kind))
                return False
        elif kind.endswith(".delta"):  # text (or a tool call's arguments) at 4 bytes a token
            text = data.get("delta")
            self.pieces += delta_tokens(text) if isinstance(text, str) and kind not in _NOT_TEXT else 1
        await self._send(send, event + b"\n\n")
        return False

    async def done(self, send: Send) -> None:
        # The upstream ended its stream without its final event: the response is not complete,
        # and the client is told so, truthfully.
        await self._end(send, "upstream_broke_off", _NO_END)

    async def broke_off(self, send: Send) -> None:
        await self._end(send, "upstream_broke_off", _BROKE_OFF)

    async def _end(self, send: Send, finish: str, why: str = "") -> None:
        """Settle, then send the final event with the usage and the credits charged (a
        ``response.failed`` of our own, saying ``why``, when the upstream sent none)."""
        settled = await self._settle(finish)
        last = self.last if finish == "complete" else None
        if last is None:
            self.sequence += 1
            error = {"code": "server_error", "message": why}
            last = {"type": "response.failed", "sequence_number": self.sequence,
                    "response": {**self.response, "status": "failed", "error": error, "usage": None}}
            if self.call.route.upstream_model != self.call.route.alias:
                last["response"]["model"] = self.call.route.alias
        response = last["response"]
        charged = self.usage(finish)
        usage = response.get("usage")
        if charged is not self.seen or not isinstance(usage, dict):
            usage = _usage_object(charged)
        usage.update({f"credits_{k}": v for k, v in self.call.credits(settled).items()})
        response["usage"] = usage
        await self._send(send, sse(last, str(last.get("type"))))

    def usage(self, finish: str) -> Usage:
        """The upstream's own final count when the stream completed with one; else counted."""
        if self.seen is not None and finish == "complete" and self.last is not None:
            return self.seen
        return self.call.counted(self.pieces, self.seen)


def _usage_object(usage: Usage) -> dict[str, Any]:
    """``usage`` in the Responses API's shape."""
    read = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
    output = usage.output_tokens + usage.reasoning_tokens
    return {"input_tokens": read, "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": read + output}
