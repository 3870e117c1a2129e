"""The OpenAI-compatible gateway (SPEC §10): ``POST /v1/chat/completions`` and ``GET /v1/models``,
credits enforced in front of any OpenAI-compatible upstream.

Every request: estimate what it may cost (prompt bytes as an upper bound of its tokens, plus its
max output tokens, at the model's prices) → reserve that → forward → settle the upstream's
reported usage (the rest of the hold goes back) → answer with the credits charged. The request's
id is the usage event's id, so a settle that is retried charges once. Upstream failure: the hold
is released and nothing is charged (502). A client that leaves mid-stream is charged for what it
was sent (or the upstream's own count, if it came before the client left), no more.
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from creditmeter.domain import Charge, Refused
from creditmeter.engine import Engine, Usage
from creditmeter.errors import CreditmeterError, InputError, NotFound, Unavailable
from creditmeter.gateway import demo
from creditmeter.gateway.errors import JSON, GatewayError, bad, unavailable, whole
from creditmeter.gateway.pending import PendingSettles, database_key, default_directory
from creditmeter.gateway.upstream import Gateway as Gateway
from creditmeter.gateway.upstream import ModelRoute, UpstreamFailure
from creditmeter.keys import Principal
from creditmeter.money import format_credits

log = logging.getLogger("creditmeter.gateway")
Clock = Callable[[], int]
T = TypeVar("T")


class Call(Protocol):
    """Runs an engine call on the loop or on a worker thread (see ``gateway_routes``)."""

    async def __call__(self, fn: Callable[[], T]) -> T: ...


_PROCESS = uuid.uuid4().hex
_COUNT = itertools.count(1)
APPROX_BYTES_PER_TOKEN = 4  # when an upstream's count never came: a prompt's text, 4 bytes a token
MAX_N = 128


def gateway_routes(engine: Engine, gateway: Gateway, *, clock: Clock,
                   authenticate: Callable[[str], Principal | None], inline: bool) -> list[Route]:
    """The gateway's two routes, for the app to mount. ``authenticate`` is the API's key check
    (with its cache).

    With ``inline`` (SQLite), the engine's calls run on the event loop: an embedded database's
    writes are short and one at a time anyway, and a hand-off to a thread costs more than the
    write (the thread waits for the interpreter lock while the loop is busy). On a networked
    database they run on worker threads, so the loop never waits on the network.
    """

    async def call(fn: Callable[[], T]) -> T:
        return fn() if inline else await anyio.to_thread.run_sync(fn)

    directory = Path(gateway.section.pending_dir) if gateway.section.pending_dir else default_directory()
    gateway.pending = PendingSettles(directory / database_key(engine.database_url), engine, clock)
    gateway.pending.start()  # what an earlier run of this worker (or another) left to settle

    async def caller(request: Request) -> Principal:
        scheme, _, secret = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise GatewayError(401, "missing API key: send 'Authorization: Bearer KEY' (an account key)",
                               code="invalid_api_key")
        try:
            who = await call(lambda: authenticate(secret.strip()))
        except Unavailable:
            raise unavailable() from None
        if who is None:
            raise GatewayError(401, "invalid API key: unknown or revoked", code="invalid_api_key")
        return who

    async def models(request: Request) -> Response:
        try:
            await caller(request)
            book = await call(engine.price_book)
        except GatewayError as exc:
            return exc.response()
        except Unavailable:
            return unavailable().response()
        version = book.at(clock())
        priced = version.catalog.models if version is not None else {}
        data = [{"id": alias, "object": "model", "created": 0,
                 "owned_by": demo.OWNER if route.is_demo else "creditmeter"}
                for alias, route in sorted(gateway.routes.items()) if alias in priced]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)

    async def chat_completions(request: Request) -> Response:
        try:
            who = await caller(request)
            if who.account_id is None:
                raise GatewayError(403, "the gateway charges an account: call it with an account key",
                                   "permission_error", code="account_key_required")
            raw = await request.body()
            this = _Call(engine, gateway, clock, call, who.account_id, raw)
        except GatewayError as exc:
            return exc.response()
        try:
            return await this.run()
        except GatewayError as exc:
            answer = exc.response()
            answer.headers["x-request-id"] = this.id
            return answer

    return [Route("/v1/chat/completions", chat_completions, methods=["POST"], include_in_schema=False),
            Route("/v1/models", models, methods=["GET"], include_in_schema=False)]


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


def usage_of(reported: object, alias: str) -> Usage | None:
    """The upstream's usage object as the engine's Usage; None if it is not a usable one."""
    if not isinstance(reported, Mapping):
        return None
    prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
    if type(prompt) is not int or type(completion) is not int or prompt < 0 or completion < 0:
        return None
    cached = 0
    details = reported.get("prompt_tokens_details")
    if isinstance(details, Mapping) and type(details.get("cached_tokens")) is int:
        cached = details["cached_tokens"]
    elif type(reported.get("prompt_cache_hit_tokens")) is int:  # DeepSeek's name for it
        cached = reported["prompt_cache_hit_tokens"]
    cached = max(0, min(cached, prompt))
    return Usage(alias, prompt - cached, completion, cached)


class _Call:
    """One chat completion request through the gateway."""

    def __init__(self, engine: Engine, gateway: Gateway, clock: Clock, call: Call, account_id: str,
                 raw: bytes) -> None:
        self.engine, self.gateway, self.clock, self.call = engine, gateway, clock, call
        self.account_id = account_id
        self.raw = raw
        # Unique without a random draw per request: this process's random prefix and a count.
        self.id = f"gw-{_PROCESS}-{next(_COUNT):x}"
        self.refused = False  # the engine refused the settle (logged; no retry can help)

    def _parse(self) -> tuple[dict[str, Any], ModelRoute]:
        try:
            body = orjson.loads(self.raw)
        except orjson.JSONDecodeError as exc:
            raise bad("body", f"is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise bad("body", "must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad("model", "is required (a model id from GET /v1/models)")
        route = self.gateway.routes.get(model)
        if route is None:
            raise GatewayError(404, f"The model '{model[:255]}' does not exist or is not served here",
                               param="model", code="model_not_found")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad("messages", "must be a non-empty list of messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise bad(f"messages[{i}]", "must be an object with a role")
        if body.get("stream") is not None and not isinstance(body["stream"], bool):
            raise bad("stream", "must be true or false")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise bad("stream_options", "must be an object")
        return body, route

    async def run(self) -> Response:
        body, route = self._parse()
        asked = [value for value in (whole(body, "max_completion_tokens", 1, 10_000_000),
                                     whole(body, "max_tokens", 1, 10_000_000)) if value is not None]
        # The larger of the two names the client used (an upstream may honour either), else the
        # model's default; sent under the name the upstream honours, so it cannot write more.
        cap = max(asked) if asked else route.max_output_tokens
        n = whole(body, "n", 1, MAX_N) or 1
        stream = body.get("stream") is True
        self.route, self.body, self.stream = route, body, stream
        # The prompt's bytes bound its tokens from above (a token is at least one byte); an image
        # given by URL is a few bytes here and many tokens upstream.
        input_bound = (math.ceil(len(self.raw) / route.prompt_bytes_per_token)
                       + self.raw.count(b'"image_url"') * route.image_url_tokens)
        try:
            hold, estimate = await self.call(
                lambda: self.engine.reserve_estimate(self.account_id, route.alias, input_bound,
                                                     cap * n, self.clock(), hold_id=self.id,
                                                     ttl_s=self.gateway.hold_ttl_s))
        except InputError as exc:
            if exc.field == "model":
                raise GatewayError(404, f"The model '{route.alias}' has no price in the catalog",
                                   param="model", code="model_not_found") from None
            raise bad(exc.field, exc.reason) from None
        except NotFound:
            raise GatewayError(404, "this key's account does not exist", code="account_not_found") from None
        except Unavailable:
            raise unavailable() from None
        if isinstance(hold, Refused):
            owed = f" (overage {format_credits(hold.overage_uc)} to pay first)" if hold.overage_uc else ""
            raise GatewayError(402, f"insufficient credits: this request may cost up to "
                                    f"{format_credits(estimate)} credits and "
                                    f"{format_credits(hold.available_uc)} are available{owed}",
                               "insufficient_quota", code="insufficient_credits")
        payload = dict(body)
        payload["model"] = route.upstream_model
        payload[route.max_tokens_param] = cap
        if stream:
            payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        if route.is_demo:
            return await (self._demo_stream(payload) if stream else self._demowhole(payload))
        return await (self._forward_stream(payload) if stream else self._forwardwhole(payload))

    # -- the end of a call ----------------------------------------------------------------------

    async def release(self, why: str) -> None:
        try:
            await self.call(lambda: self.engine.release(self.id, self.clock()))
        except CreditmeterError as exc:  # the hold's ttl frees it anyway
            log.warning("request %s: release after %s failed (%s); the hold lapses at its ttl",
                        self.id, why, exc)

    async def settle(self, usage: Usage, source: str, finish: str) -> tuple[Charge, int] | None:
        """Charge ``usage``; None when the database cannot take it now (retried in the background)."""
        usage = Usage(usage.model, usage.input_tokens, usage.output_tokens, usage.cached_input_tokens,
                      usage.cache_write_tokens, (), {"gateway_request": self.id, "usage": source,
                                                     "finish": finish, "stream": self.stream,
                                                     "upstream_model": self.route.upstream_model})
        try:
            return await self.call(
                lambda: self.engine.settle_with_available(self.id, usage, self.clock(), event_id=self.id))
        except Unavailable as exc:
            log.error("request %s: settle failed (%s); kept to retry in the background", self.id, exc)
            try:
                self.gateway.pending.add(self.id, usage)
            except OSError as error:
                log.error("request %s: the settle could not be kept (%s); usage %s", self.id, error, usage)
            return None
        except CreditmeterError as exc:  # retrying cannot help: the operator must look at it
            log.error("request %s: settle refused (%s); usage %s", self.id, exc, usage)
            self.refused = True
            await self.release("a refused settle")
            return None

    def _upstream_answered(self, status: int, content: bytes) -> GatewayError:
        """What the client is told of an upstream's error answer."""
        if status in (400, 413, 422):  # the request's own fault: the upstream says why
            return GatewayError(status, _upstream_message(content), code="upstream_rejected")
        return self._upstream_failed(status, "")

    def _upstream_failed(self, status: int | None, detail: str) -> GatewayError:
        what = f"answered {status}" if status is not None else f"failed ({detail})"
        if status == 429:
            return GatewayError(429, f"the upstream for '{self.route.alias}' is rate limited; retry later",
                                "rate_limit_error", code="upstream_rate_limited",
                                headers={"Retry-After": "1"})
        return GatewayError(502, f"the upstream for '{self.route.alias}' {what}; nothing was charged",
                            "upstream_error", code="upstream_error")

    # -- not streamed ---------------------------------------------------------------------------

    async def _forwardwhole(self, payload: dict[str, Any]) -> Response:
        assert self.route.pool is not None
        try:
            async with self.route.pool.session().post(self.route.url, data=orjson.dumps(payload),
                                                      headers=self.route.headers) as answer:
                status, content = answer.status, await answer.read()
        except UpstreamFailure as exc:
            await self.release("an upstream failure")
            raise self._upstream_failed(None, type(exc).__name__) from None
        if status >= 400:
            await self.release("an upstream error")
            raise self._upstream_answered(status, content)
        return await self._answer(content)

    async def _demowhole(self, payload: dict[str, Any]) -> Response:
        return await self._answer(demo.complete(payload))

    async def _answer(self, content: bytes) -> Response:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or ("error" in data and not data.get("choices")):
            await self.release("an unreadable upstream answer")
            raise self._upstream_failed(None, "its answer was an error or not a chat completion")
        usage = usage_of(data.get("usage"), self.route.alias)
        source = "upstream"
        if usage is None:
            usage, source = self._counted(_whole_answer_pieces(data)), "counted"
        settled = await self.settle(usage, source, "complete")
        if data.get("model") == self.route.upstream_model and self.route.upstream_model != self.route.alias:
            data["model"] = self.route.alias
            content = orjson.dumps(data)
        headers = {"x-request-id": self.id}
        if settled is not None:
            headers["x-credits-charged"] = format_credits(settled[0].cost_uc)
            headers["x-credits-remaining"] = format_credits(settled[1])
        elif not self.refused:
            headers["x-credits-pending"] = "true"
        return Response(content, 200, headers, media_type=JSON)

    def _counted(self, pieces: int, seen: Usage | None = None) -> Usage:
        """What was generated when the upstream's count is missing: the pieces of output relayed
        (one token each), and the prompt approximated from its text."""
        if seen is not None:
            return Usage(seen.model, seen.input_tokens, max(seen.output_tokens, pieces),
                         seen.cached_input_tokens)
        return Usage(self.route.alias, approx_prompt_tokens(self.body["messages"]), pieces)

    # -- streamed -------------------------------------------------------------------------------

    async def _forward_stream(self, payload: dict[str, Any]) -> Response:
        assert self.route.pool is not None
        try:
            answer = await self.route.pool.session().post(self.route.url, data=orjson.dumps(payload),
                                                          headers=self.route.headers)
        except UpstreamFailure as exc:
            await self.release("an upstream failure")
            raise self._upstream_failed(None, type(exc).__name__) from None
        if answer.status >= 400:
            try:
                content = await answer.read()
            except UpstreamFailure:
                content = b""
            answer.release()
            await self.release("an upstream error")
            raise self._upstream_answered(answer.status, content)

        async def close(complete: bool) -> None:
            if complete:  # read the body's end, so the connection goes back to the pool
                try:
                    with anyio.fail_after(1):
                        await answer.content.read()
                except (*UpstreamFailure, anyio.get_cancelled_exc_class()):
                    pass
                answer.release()
            else:
                answer.close()  # drops the connection: the upstream stops generating

        return _Relay(self, answer.content.iter_any(), close)

    async def _demo_stream(self, payload: dict[str, Any]) -> Response:
        chunks = demo.stream(payload)

        async def close(complete: bool) -> None:
            await chunks.aclose()

        return _Relay(self, chunks, close)


def _whole_answer_pieces(data: Mapping[str, Any]) -> int:
    """A whole answer's output as tokens when the upstream gave no count: 4 bytes a token."""
    size = 0
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if isinstance(message, Mapping):
            size += len(orjson.dumps({k: message.get(k) for k in ("content", "tool_calls", "refusal")}))
    return math.ceil(size / APPROX_BYTES_PER_TOKEN)


def _upstream_message(content: bytes) -> str:
    try:
        error = orjson.loads(content).get("error")
        message = error.get("message") if isinstance(error, Mapping) else None
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    return f"the upstream refused the request: {message}" if isinstance(message, str) else \
        "the upstream refused the request"


class _Relay(Response):
    """Passes an upstream's event stream to the client event by event (never the whole body),
    holds back the upstream's usage until the charge is settled, and adds the credits to it.
    """

    MAX_EVENT = 1 << 20  # an upstream that never ends an event is broken off here

    def __init__(self, call: _Call, source: AsyncIterator[bytes],
                 close: Callable[[bool], Awaitable[None]]) -> None:
        super().__init__(None, 200, {"x-request-id": call.id, "cache-control": "no-cache"},
                         media_type="text/event-stream")
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.call = call
        self.source = source
        self.close = close
        self.seen: Usage | None = None  # the latest usage the upstream reported
        self.usage_chunk: dict[str, Any] | None = None  # its final usage chunk, held back
        self.template: dict[str, Any] = {}
        self.pieces = 0  # pieces of output the client was sent
        self.settled = False
        self.rename = call.route.upstream_model != call.route.alias

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        finish = "client_disconnected"
        try:
            async with anyio.create_task_group() as tasks:
                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tasks.cancel_scope.cancel()

                tasks.start_soon(watch)
                finish = await self._pump(send)
                tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.close(finish == "complete")
                if not self.settled:
                    await self._settle(finish)
        if finish != "client_disconnected":
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> str:
        buffer = b""
        try:
            async for data in self.source:
                # One line ending for all (an upstream may use \r\n, or mix them); a \r at the
                # end of a read waits for the \n that may follow in the next.
                buffer = (buffer + data).replace(b"\r\n", b"\n")
                if buffer.endswith(b"\r"):
                    head, buffer = buffer[:-1].replace(b"\r", b"\n"), b"\r"
                else:
                    head, buffer = buffer.replace(b"\r", b"\n"), b""
                *events, rest = head.split(b"\n\n")
                buffer = rest + buffer
                for event in events:
                    if await self._event(event, send):
                        return "complete"
                if len(buffer) > self.MAX_EVENT:
                    raise ValueError("an event longer than 1 MiB")
        except (*UpstreamFailure, ValueError, TypeError, KeyError) as exc:
            log.warning("request %s: the upstream stream broke off (%r)", self.call.id, exc)
            await self._end(send, "upstream_broke_off")
            await self._send(send, _sse({"error": {"message": "the upstream stream broke off; "
                                                              "what was sent was charged",
                                                   "type": "upstream_error", "param": None,
                                                   "code": "upstream_error"}}))
            return "upstream_broke_off"
        if buffer.strip() and await self._event(buffer.rstrip(b"\r\n"), send):
            return "complete"
        await self._end(send, "complete")  # the upstream ended without [DONE]
        await self._send(send, b"data: [DONE]\n\n")
        return "complete"

    async def _event(self, event: bytes, send: Send) -> bool:
        """Relay one server-sent event; True once the stream is done."""
        data = b"".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            if event.strip():
                await self._send(send, event + b"\n\n")  # a comment or keep-alive
            return False
        if data.strip() == b"[DONE]":
            await self._end(send, "complete")
            await self._send(send, b"data: [DONE]\n\n")
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
        usage = usage_of(chunk.get("usage"), self.call.route.alias)
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
        await self._send(send, _sse(chunk) if changed else event + b"\n\n")
        self.pieces += pieces
        return False

    async def _end(self, send: Send, finish: str) -> None:
        """Settle, then send the usage chunk with the credits charged."""
        settled = await self._settle(finish)
        chunk = self.usage_chunk or {**self.template, "object": "chat.completion.chunk", "choices": []}
        if self.rename and chunk.get("model") in (None, self.call.route.upstream_model):
            chunk["model"] = self.call.route.alias
        usage = self._usage(finish)
        if chunk.get("usage") is None:
            chunk["usage"] = {"prompt_tokens": usage.input_tokens + usage.cached_input_tokens,
                              "completion_tokens": usage.output_tokens,
                              "total_tokens": usage.input_tokens + usage.cached_input_tokens
                              + usage.output_tokens}
        if settled is not None:
            chunk["credits_charged"] = format_credits(settled[0].cost_uc)
            chunk["credits_remaining"] = format_credits(settled[1])
        elif not self.call.refused:
            chunk["credits_pending"] = True
        await self._send(send, _sse(chunk))

    def _usage(self, finish: str) -> Usage:
        """The upstream's own final count when the stream completed with one; else counted."""
        if self.seen is not None and (self.usage_chunk is not None or finish == "complete"):
            return self.seen
        return self.call._counted(self.pieces, self.seen)

    async def _settle(self, finish: str) -> tuple[Charge, int] | None:
        usage = self._usage(finish)
        source = "upstream" if usage is self.seen else "counted"
        # Shielded: a client that leaves now must not cancel the charge half-way (the engine
        # call may run on a thread), and the flag is set only once it went through.
        with anyio.CancelScope(shield=True):
            settled = await self.call.settle(usage, source, finish)
        self.settled = True
        return settled

    @staticmethod
    async def _send(send: Send, body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})


def _has_output(delta: object) -> bool:
    return isinstance(delta, Mapping) and any(
        delta.get(k) for k in ("content", "tool_calls", "function_call", "refusal", "reasoning_content"))


def _sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"
