"""Anthropic's Messages API (``POST /v1/messages``, whole and streamed) and its free token count
(``POST /v1/messages/count_tokens``), in front of the models whose upstream speaks it
(``api: anthropic``).

What a request may cost: its bytes bound its prompt's tokens (the system prompt, the messages and
the tools are all in them), plus ``max_tokens`` (which Anthropic requires, and within which any
thinking budget lies). The usage: ``input_tokens`` (Anthropic's count leaves out the cache's
tokens), ``cache_read_input_tokens`` read from the cache, ``cache_creation_input_tokens`` written
to it (the 1-hour writes, ``cache_creation.ephemeral_1h_input_tokens``, apart from the 5-minute
ones), ``output_tokens`` (of which ``output_tokens_details.thinking_tokens`` are reasoning) and the
priority service tier. A stream states the prompt's usage in ``message_start`` and the output's,
cumulative, in ``message_delta``: the last ``message_delta`` is held back until the charge is
settled, then sent with ``credits_charged`` and ``credits_remaining`` in its ``usage``, before
``message_stop``. Errors are in Anthropic's shape; a stream that fails ends with an ``error``
event (of the upstream's own error type, when it sent one of Anthropic's).
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
from creditmeter.gateway.errors import (
    ANTHROPIC_ERROR_TYPES,
    JSON,
    GatewayError,
    bad,
    check_messages,
    streamed,
    whole,
)
from creditmeter.gateway.relay import Relay, parse_event, sse
from creditmeter.gateway.upstream import ANTHROPIC, ANTHROPIC_VERSION, ModelRoute

MAX_TOKENS = 10_000_000
_CHARGED = "what was sent was charged"
_NOT_OUTPUT = ("signature_delta",)  # deltas that carry no generated tokens
_DELTA_TEXT = ("text", "partial_json", "thinking")  # where a delta's generated text is


def _count(source: Mapping[str, Any], name: str) -> int:
    value = source.get(name)
    return value if type(value) is int and value > 0 else 0


def _whole(value: object) -> bool:
    return type(value) is int and value >= 0


def _take(reported: dict[str, Any], usage: Mapping[str, Any]) -> None:
    """Take into ``reported`` what ``usage`` states validly: its whole numbers, the service tier,
    and the whole numbers of its groups (``cache_creation``, ``output_tokens_details``). A null,
    or anything else, leaves what was reported before as it was."""
    for name, value in usage.items():
        if _whole(value) or (name == "service_tier" and isinstance(value, str)):
            reported[name] = value
        elif isinstance(value, Mapping):
            group = dict(reported[name]) if isinstance(reported.get(name), Mapping) else {}
            group.update({k: v for k, v in value.items() if _whole(v)})
            reported[name] = group


def _generated(delta: object) -> int:
    """The tokens a ``content_block_delta`` carries, as counted when the upstream's count never
    came: its text (or tool input, or thinking) at 4 bytes a token; one for any other delta."""
    if not isinstance(delta, Mapping):
        return 1
    if delta.get("type") in _NOT_OUTPUT:
        return 0
    text = next((delta[k] for k in _DELTA_TEXT if isinstance(delta.get(k), str)), None)
    return delta_tokens(text) if text is not None else 1


def messages_usage(reported: object, alias: str) -> Usage | None:
    """Anthropic's usage object as the engine's Usage; None if it is not a usable one. Each token
    is counted once: the 1-hour cache writes apart from the others, the thinking apart from the
    rest of the output."""
    if not isinstance(reported, Mapping):
        return None
    read, output = reported.get("input_tokens"), reported.get("output_tokens")
    if type(read) is not int or type(output) is not int or read < 0 or output < 0:
        return None
    written = _count(reported, "cache_creation_input_tokens")
    hour = 0
    split = reported.get("cache_creation")
    if isinstance(split, Mapping):
        hour = _count(split, "ephemeral_1h_input_tokens")
        written = max(written, _count(split, "ephemeral_5m_input_tokens") + hour)
    details = reported.get("output_tokens_details")
    thinking = min(_count(details, "thinking_tokens"), output) if isinstance(details, Mapping) else 0
    tier = "priority" if reported.get("service_tier") == "priority" else None
    return Usage(alias, read, output - thinking, _count(reported, "cache_read_input_tokens"), written - hour,
                 reasoning_tokens=thinking, cache_write_1h_tokens=hour, service_tier=tier)


class _AnthropicCall(Call):
    """What Anthropic's routes share: their models, their errors and the headers sent upstream."""

    api = ANTHROPIC

    @classmethod
    def render(cls, error: GatewayError) -> Response:
        return error.anthropic_response()

    def upstream_url(self) -> str:
        # The client's query goes along (Anthropic's clients ask ``?beta=true`` for beta features).
        return self.route.base + self.upstream_path + (f"?{self.query}" if self.query else "")

    def upstream_headers(self) -> Mapping[str, str]:
        headers = {**self.route.headers,
                   "anthropic-version": self.headers.get("anthropic-version") or ANTHROPIC_VERSION}
        if self.headers.get("anthropic-beta"):
            headers["anthropic-beta"] = self.headers["anthropic-beta"]
        return headers

    def parse(self) -> tuple[dict[str, Any], ModelRoute]:
        body = self.json_body()
        route = self.route_of(body.get("model"))
        check_messages(body)
        return body, route

    def forwarded(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.route.upstream_model}


class CountTokens(_AnthropicCall):
    """``POST /v1/messages/count_tokens``: passed to the upstream; no hold, no charge."""

    path = "/v1/messages/count_tokens"
    upstream_path = "/v1/messages/count_tokens"

    async def run(self) -> Response:
        body, self.route = self.parse()
        self.stream = False
        await self.check_priced()  # served as /v1/messages serves it: 404 if not priced
        content = await self.post(self.forwarded(body))
        return Response(content, 200, {"x-request-id": self.id, "x-credits-charged": "0"},
                        media_type=JSON)


class Messages(_AnthropicCall):
    """One Messages request through the gateway."""

    path = "/v1/messages"
    upstream_path = "/v1/messages"
    body: dict[str, Any]

    async def run(self) -> Response:
        body, route = self.parse()
        cap = whole(body, "max_tokens", 1, MAX_TOKENS)
        if cap is None:
            raise bad("max_tokens", f"is required: a whole number from 1 to {MAX_TOKENS}")
        streamed(body)
        self.route, self.body, self.stream = route, body, body.get("stream") is True
        # An image or document by URL holds more. The request's service_tier ("auto" or
        # "standard_only") asks for no priority: the hold is at the standard rates.
        await self.reserve(lambda on: (self.input_bound(body, on, "url"), cap))
        route = self.route  # the account's fallback model's, when its credits ran out
        payload = self.forwarded(body)
        if self.stream:
            source, close = await self.post_stream(payload)
            return _MessagesRelay(self, source, close)
        content = await self.post(payload)
        data = self.answer_of(content)
        if data is None or data.get("type") == "error":
            await self.release("an unreadable upstream answer")
            raise self.upstream_failed(None, "its answer was an error or not a message")
        usage = messages_usage(data.get("usage"), route.alias)
        return await self.answered(content, data, usage,
                                   lambda: self.counted(approx_tokens(data.get("content"))))

    def counted(self, generated: int, seen: Usage | None = None) -> Usage:
        """What was generated when the upstream's count is missing or cut short: the output
        relayed (``generated`` tokens, as counted), and the prompt as the upstream counted it (or
        approximated from the request's text)."""
        if seen is not None:
            total = max(seen.output_tokens + seen.reasoning_tokens, generated)
            return replace(seen, output_tokens=total - seen.reasoning_tokens)
        return Usage(self.route.alias, self.approx_prompt(), generated)

    def approx_prompt(self) -> int:
        """The prompt's tokens when the upstream gave no count of it: its text at 4 bytes a token."""
        body = self.body
        return approx_tokens([body.get("system"), body.get("messages"), body.get("tools")])


class _MessagesRelay(Relay):
    """A Messages stream: its input usage from ``message_start``, its output from ``message_delta``
    (the last held back until the charge is settled, then sent with the credits)."""

    call: Messages

    def __init__(self, call: Messages, source: AsyncIterator[bytes], close: Close) -> None:
        super().__init__(call, source, close)
        self.reported: dict[str, Any] = {}  # the usage so far: message_start's, then message_delta's
        self.delta: dict[str, Any] | None = None  # the latest message_delta, held back
        self.output_reported = False  # a message_delta gave the output's count
        self.error = {"type": "api_error", "message": f"the upstream stream broke off; {_CHARGED}"}

    async def event(self, event: bytes, send: Send) -> bool:
        name, raw = parse_event(event)
        try:
            data = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            if event.strip():
                await self._send(send, event + b"\n\n")  # a comment, or what is not ours to read
            return False
        kind = data.get("type") or name
        if kind == "error":
            self._upstream_error(data.get("error"))
            raise ValueError(f"the upstream sent an error: {str(data.get('error'))[:200]}")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            message = data["message"]
            self._report(message.get("usage"))
            if self.call.rename(message):
                await self._send(send, sse(data, "message_start"))
                return False
        elif kind == "content_block_delta":
            self.pieces += _generated(data.get("delta"))
        elif kind == "message_delta":
            if self.delta is not None:  # not the last one after all
                await self._send(send, sse(self.delta, "message_delta"))
            self.delta = data
            self._report(data.get("usage"), delta=True)
            return False
        elif kind == "message_stop":
            await self._end(send, "complete")
            await self._send(send, event + b"\n\n")
            return True
        await self._send(send, event + b"\n\n")
        return False

    def _report(self, usage: object, delta: bool = False) -> None:
        """Take a usage object's valid counts (a message_delta's are cumulative: they replace the
        earlier ones, and its output count is the output's)."""
        if isinstance(usage, Mapping):
            _take(self.reported, usage)
            self.output_reported = self.output_reported or (delta and _whole(usage.get("output_tokens")))
            self.seen = messages_usage(self.reported, self.call.route.alias) or self.seen

    def _upstream_error(self, error: object) -> None:
        """What the client's error event will say of an upstream's: its type when it is one of
        Anthropic's (``overloaded_error`` stays one, so the client may retry), and its message."""
        if not isinstance(error, Mapping):
            return
        if error.get("type") in ANTHROPIC_ERROR_TYPES:
            self.error["type"] = error["type"]
        if isinstance(error.get("message"), str):
            self.error["message"] = f"the upstream stream broke off: {error['message'][:200]}; {_CHARGED}"

    async def done(self, send: Send) -> None:  # the upstream ended without its message_stop
        await self._end(send, "complete")
        await self._send(send, sse({"type": "message_stop"}, "message_stop"))

    async def broke_off(self, send: Send) -> None:
        await self._end(send, "upstream_broke_off")
        await self._send(send, sse({"type": "error", "error": self.error}, "error"))

    async def _end(self, send: Send, finish: str) -> None:
        """Settle, then send the last message_delta with the usage and the credits charged."""
        settled = await self._settle(finish)
        delta = self.delta or {"type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None}}
        charged = self.usage(finish)
        usage = dict(delta.get("usage") or {}) if isinstance(delta.get("usage"), Mapping) else {}
        usage["output_tokens"] = charged.output_tokens + charged.reasoning_tokens
        usage.update({f"credits_{k}": v for k, v in self.call.credits(settled).items()})
        delta["usage"] = usage
        self.delta = None
        await self._send(send, sse(delta, "message_delta"))

    def usage(self, finish: str) -> Usage:
        """The upstream's own count when the stream completed with one (its prompt approximated
        when no message_start counted it); else what was relayed, counted."""
        reported = self.seen
        if reported is None and "output_tokens" in self.reported:  # a message_delta, no message_start
            prompt = {**self.reported, "input_tokens": self.call.approx_prompt()}
            reported = messages_usage(prompt, self.call.route.alias)
        if reported is not None and finish == "complete" and self.output_reported:
            return reported
        return self.call.counted(self.pieces, reported)
