"""OpenAI's chat completions (``POST /v1/chat/completions``): what a request's body must hold, what
it may cost (its prompt bytes as an upper bound of its tokens, plus its max output tokens, times
``n``), how the upstream's usage is read from a whole answer or a stream, and what is counted when
the upstream gave no count."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Send

from creditmeter.engine import Usage
from creditmeter.gateway import demo
from creditmeter.gateway.call import APPROX_BYTES_PER_TOKEN, Call, Close, local_stream
from creditmeter.gateway.errors import GatewayError, bad, check_messages, streamed, whole
from creditmeter.gateway.relay import Relay, sse
from creditmeter.gateway.upstream import ModelRoute

MAX_N = 128
_DONE = b"data: [DONE]\n\n"
_BROKE_OFF = sse(GatewayError(502, "the upstream stream broke off; what was sent was charged",
                              "upstream_error", code="upstream_error").body())


def approx_prompt_tokens(messages: list[Any]) -> int:
    """A prompt's tokens when no upstream count came: its text at 4 bytes a token, plus OpenAI's
    framing (3 a message, 3 for the reply)."""
    total = 3
    for message in messages:
        total += 3
        if isinstance(message, Mapping):
            content = message.get("content")
            size = len(content.encode()) if isinstance(content, str) else len(orjson.dumps(content))
            total += math.ceil(size / APPROX_BYTES_PER_TOKEN)
    return total


def usage_of(reported: object, alias: str, tier: object = None) -> Usage | None:
    """The upstream's usage object as the engine's Usage (``tier``: the answer's service tier);
    None if it is not a usable one. Cache reads and writes, and reasoning, are counted once each:
    taken out of the prompt's and the completion's counts that include them."""
    if not isinstance(reported, Mapping):
        return None
    prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
    if type(prompt) is not int or type(completion) is not int or prompt < 0 or completion < 0:
        return None
    cached = detail(reported, "prompt_tokens_details", "cached_tokens")
    if not cached and type(reported.get("prompt_cache_hit_tokens")) is int:  # DeepSeek's name for it
        cached = reported["prompt_cache_hit_tokens"]
    cached = max(0, min(cached, prompt))
    written = min(detail(reported, "prompt_tokens_details", "cache_write_tokens"), prompt - cached)
    reasoning = min(detail(reported, "completion_tokens_details", "reasoning_tokens"), completion)
    return Usage(alias, prompt - cached - written, completion - reasoning, cached, written,
                 reasoning_tokens=reasoning, service_tier=service_tier(tier))


def detail(reported: Mapping[str, Any], group: str, name: str) -> int:
    """A count in one of a usage object's detail groups; 0 when absent or not a count."""
    details = reported.get(group)
    value = details.get(name) if isinstance(details, Mapping) else None
    return value if type(value) is int and value > 0 else 0


def service_tier(value: object) -> str | None:
    """The service tier an answer states (or a request asks for), as the catalog prices it:
    ``priority``, ``flex``, or None for the standard one (``default``, ``auto``, absent)."""
    return value if value in ("priority", "flex") else None


class ChatCompletion(Call):
    """One chat completion request through the gateway."""

    path = "/v1/chat/completions"
    upstream_path = "/chat/completions"
    body: dict[str, Any]

    def _parse(self) -> tuple[dict[str, Any], ModelRoute]:
        body = self.json_body()
        route = self.route_of(body.get("model"))
        check_messages(body)
        streamed(body)
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise bad("stream_options", "must be an object")
        return body, route

    async def run(self) -> Response:
        body, route = self._parse()
        asked = [value for value in (whole(body, "max_completion_tokens", 1, 10_000_000),
                                     whole(body, "max_tokens", 1, 10_000_000)) if value is not None]

        def cap_on(route: ModelRoute) -> int:
            # The larger of the two names the client used (an upstream may honour either), else
            # the model's default; sent under the name the upstream honours, so it cannot write more.
            return max(asked) if asked else route.max_output_tokens

        n = whole(body, "n", 1, MAX_N) or 1
        stream = body.get("stream") is True
        self.route, self.body, self.stream = route, body, stream
        tier = service_tier(body.get("service_tier"))  # a priority request holds at priority rates
        await self.reserve(lambda on: (self.input_bound(body, on, "image_url"), cap_on(on) * n), tier)
        route = self.route  # the account's fallback model's, when its credits ran out
        cap = cap_on(route)
        payload = dict(body)
        payload["model"] = route.upstream_model
        payload[route.max_tokens_param] = cap
        if stream:
            payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            source, close = (local_stream(demo.stream(payload)) if route.is_demo
                             else await self.post_stream(payload))
            return _ChatRelay(self, source, close)
        return await self._answer(demo.complete(payload) if route.is_demo else await self.post(payload))

    async def _answer(self, content: bytes) -> Response:
        data = self.answer_of(content)
        if data is None or ("error" in data and not data.get("choices")):
            await self.release("an unreadable upstream answer")
            raise self.upstream_failed(None, "its answer was an error or not a chat completion")
        usage = usage_of(data.get("usage"), self.route.alias, data.get("service_tier"))
        return await self.answered(content, data, usage, lambda: self.counted(_whole_answer_pieces(data)))

    def counted(self, pieces: int, seen: Usage | None = None) -> Usage:
        """What was generated when the upstream's count is missing: the pieces of output relayed
        (one token each), and the prompt approximated from its text."""
        if seen is not None:
            return replace(seen, output_tokens=max(seen.output_tokens, pieces - seen.reasoning_tokens))
        return Usage(self.route.alias, approx_prompt_tokens(self.body["messages"]), pieces)


def _whole_answer_pieces(data: Mapping[str, Any]) -> int:
    """A whole answer's output as tokens when the upstream gave no count: 4 bytes a token."""
    size = 0
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if isinstance(message, Mapping):
            size += len(orjson.dumps({k: message.get(k) for k in ("content", "tool_calls", "refusal")}))
    return math.ceil(size / APPROX_BYTES_PER_TOKEN)


class _ChatRelay(Relay):
    """A chat completion's stream: holds back the upstream's usage chunk until the charge is
    settled, and adds the credits to it."""

    call: ChatCompletion

    def __init__(self, call: ChatCompletion, source: AsyncIterator[bytes], close: Close) -> None:
        super().__init__(call, source, close)
        self.usage_chunk: dict[str, Any] | None = None  # its final usage chunk, held back
        self.template: dict[str, Any] = {}
        self.rename = call.route.upstream_model != call.route.alias

    async def event(self, event: bytes, send: Send) -> bool:
        data = b"".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            if event.strip():
                await self._send(send, event + b"\n\n")  # a comment or keep-alive
            return False
        if data.strip() == b"[DONE]":
            await self.done(send)
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            await self._send(send, event + b"\n\n")
            return False
        if "error" in chunk and not chunk.get("choices"):  # the upstream failed mid-stream
            raise ValueError(f"the upstream sent an error: {str(chunk['error'])[:200]}")
        if not self.template:
            self.template = {k: chunk[k] for k in ("id", "object", "created", "model", "system_fingerprint")
                             if k in chunk}
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            choices = []
        usage = usage_of(chunk.get("usage"), self.call.route.alias, chunk.get("service_tier"))
        changed = False
        if usage is not None:
            self.seen = usage
            if not choices:  # the final usage chunk: sent once the charge is settled
                self.usage_chunk = chunk
                return False
            # Usage beside output (an upstream that counts as it goes): the client gets the
            # count once, in the final usage chunk.
            del chunk["usage"]
            changed = True
        pieces = sum(1 for c in choices if isinstance(c, Mapping) and _has_output(c.get("delta")))
        if self.rename and chunk.get("model") == self.call.route.upstream_model:
            chunk["model"] = self.call.route.alias
            changed = True
        await self._send(send, sse(chunk) if changed else event + b"\n\n")
        self.pieces += pieces
        return False

    async def done(self, send: Send) -> None:
        await self._end(send, "complete")
        await self._send(send, _DONE)

    async def broke_off(self, send: Send) -> None:
        await self._end(send, "upstream_broke_off")
        await self._send(send, _BROKE_OFF)

    async def _end(self, send: Send, finish: str) -> None:
        """Settle, then send the usage chunk with the credits charged."""
        settled = await self._settle(finish)
        chunk = self.usage_chunk or {**self.template, "object": "chat.completion.chunk", "choices": []}
        if self.rename and chunk.get("model") in (None, self.call.route.upstream_model):
            chunk["model"] = self.call.route.alias
        usage = self.usage(finish)
        if chunk.get("usage") is None:
            prompt = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
            completion = usage.output_tokens + usage.reasoning_tokens
            chunk["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}
        chunk.update({f"credits_{k}": v for k, v in self.call.credits(settled).items()})
        await self._send(send, sse(chunk))

    def usage(self, finish: str) -> Usage:
        """The upstream's own final count when the stream completed with one; else counted."""
        if self.seen is not None and (self.usage_chunk is not None or finish == "complete"):
            return self.seen
        return self.call.counted(self.pieces, self.seen)


def _has_output(delta: object) -> bool:
    return isinstance(delta, Mapping) and any(
        delta.get(k) for k in ("content", "tool_calls", "function_call", "refusal", "reasoning_content"))
