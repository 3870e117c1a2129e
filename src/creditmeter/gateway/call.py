"""One request through the gateway, whatever its protocol: hold the most it may cost, forward it
to the upstream (its answer whole, or its stream), then settle the usage (the rest of the hold goes
back) or release the hold when the upstream failed. A hold the account's limits refuse is a 429,
one its credits refuse a 402, unless its policy falls back to another model once they run out:
then the request is held for, sent to and charged as that model, and the answer says so.

A protocol's module subclasses ``Call`` with ``run``: what its body means, what to reserve, and
how its answer is read; and says which API it belongs to, where its upstream takes it, and the
shape of its errors.

The request's id is the usage event's id and the hold's id, so a settle that is retried charges
once.
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import anyio
import orjson
from starlette.responses import Response

from creditmeter.allowances import OutOfCredits
from creditmeter.domain import Charge, Hold, Refused
from creditmeter.engine import Engine, Usage
from creditmeter.errors import CreditmeterError, InputError, NotFound, Unavailable
from creditmeter.gateway.errors import JSON, GatewayError, bad, unavailable
from creditmeter.gateway.refusals import insufficient, limit_reached
from creditmeter.gateway.upstream import ANTHROPIC, OPENAI, Gateway, ModelRoute, UpstreamFailure
from creditmeter.money import format_credits

log = logging.getLogger("creditmeter.gateway")
Clock = Callable[[], int]
T = TypeVar("T")
# Ends an upstream stream: True once it was read to its end (the connection can be used again).
Close = Callable[[bool], Awaitable[None]]


class EngineCall(Protocol):
    """Runs an engine call on the loop or on a worker thread (see ``gateway_routes``)."""

    async def __call__(self, fn: Callable[[], T]) -> T: ...


_PROCESS = uuid.uuid4().hex
_COUNT = itertools.count(1)
_APIS = {OPENAI: "the OpenAI API (/v1/chat/completions, /v1/responses, /v1/embeddings)",
         ANTHROPIC: "the Anthropic Messages API (/v1/messages)"}
APPROX_BYTES_PER_TOKEN = 4  # when an upstream's count never came: 4 bytes a token
Settled = tuple[Charge, int]  # the charge, and the credits (µc) the account has left
Bounds = Callable[[ModelRoute], tuple[int, int]]  # a request's most tokens read and written on a route


class Call:
    """One request through the gateway; ``run`` answers it."""

    path: ClassVar[str]  # the route the protocol's requests come to
    api: ClassVar[str] = OPENAI  # the API whose models it serves
    upstream_path: ClassVar[str]  # where the upstream takes it, after the model's base URL
    route: ModelRoute  # both set by ``run`` once the body is read
    stream: bool

    def __init__(self, engine: Engine, gateway: Gateway, clock: Clock, call: EngineCall,
                 account_id: str, raw: bytes, headers: Mapping[str, str] | None = None,
                 query: str = "", *, key_id: str | None = None) -> None:
        self.engine, self.gateway, self.clock, self.call = engine, gateway, clock, call
        self.account_id = account_id
        self.key_id = key_id  # the calling key's id: the key's own limits count its holds
        self.raw = raw
        self.headers = headers or {}  # the client's request headers
        self.query = query  # the client's query string
        # Unique without a random draw per request: this process's random prefix and a count.
        self.id = f"gw-{_PROCESS}-{next(_COUNT):x}"
        self.held = False  # a hold was made (so a failure releases it)
        self.refused = False  # the engine refused the settle (logged; no retry can help)
        self.fallback_from: str | None = None  # the model asked for, when its fallback answers

    async def run(self) -> Response:
        raise NotImplementedError

    @classmethod
    def render(cls, error: GatewayError) -> Response:
        """``error`` in the protocol's own shape."""
        return error.response()

    # -- the start of a call --------------------------------------------------------------------

    def json_body(self) -> dict[str, Any]:
        try:
            body = orjson.loads(self.raw)
        except orjson.JSONDecodeError as exc:
            raise bad("body", f"is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise bad("body", "must be a JSON object")
        return body

    @staticmethod
    def answer_of(content: bytes) -> dict[str, Any] | None:
        """An upstream's whole answer as a JSON object; None when it is not one."""
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def route_of(self, model: object) -> ModelRoute:
        """The configured route of the body's ``model``."""
        if not isinstance(model, str) or not model:
            raise bad("model", "is required (a model id from GET /v1/models)")
        route = self.gateway.routes.get(model)
        if route is None:
            raise GatewayError(404, f"The model '{model[:255]}' does not exist or is not served here",
                               param="model", code="model_not_found")
        why = self.unservable(route)
        if why is not None:
            there = ": call it there" if route.api != self.api else ""
            raise GatewayError(400, f"The model '{model}' {why}{there}", param="model", code="wrong_api")
        return route

    def unservable(self, route: ModelRoute) -> str | None:
        """Why this call's route cannot serve ``route``'s model; None when it can."""
        if route.api != self.api:  # no translation between protocols
            return f"is served through {_APIS[route.api]}, not {self.path}"
        if route.is_demo and self.upstream_path != "/chat/completions":
            return "is the built-in demo upstream, which answers chat completions only"
        return None

    def input_bound(self, body: Mapping[str, Any], route: ModelRoute, *url_keys: str) -> int:
        """The most tokens the request's prompt may be on ``route``: its bytes (a token is at least
        one byte; ``prompt_bytes_per_token`` of them when the operator says so), and
        ``image_url_tokens`` for each key in ``body`` named one of ``url_keys`` (an image or a file
        given by URL: a few bytes here, many tokens upstream). Keys are counted in the body
        as orjson writes it: spelt plainly however the client escaped them (``"\\u0075rl"``), each
        followed by its colon (so a string that reads the same is not a key)."""
        written = orjson.dumps(body)
        urls = sum(written.count(b'"' + key.encode() + b'":') for key in url_keys)
        return math.ceil(len(self.raw) / route.prompt_bytes_per_token) + urls * route.image_url_tokens

    async def reserve(self, bounds: Bounds, service_tier: str | None = None) -> None:
        """Hold the most the request may cost: ``bounds`` on the model's route (the most tokens it
        may read and write there) at the rates of the ``service_tier`` it asks for. When the
        account's credits ran out and its policy falls back to another model, hold for that one
        instead: the request goes to it (``route`` becomes its route). Else answer why the
        request cannot run: 429 when it would pass a limit, 402 when the credits cannot cover it."""
        at = self.clock()
        hold, estimate = await self._hold(self.route, bounds, service_tier, at)
        if isinstance(hold, Refused) and hold.limit is None and hold.fallback_model is not None:
            await self._fall_back(hold, estimate, bounds, service_tier, at)
        elif isinstance(hold, Refused):
            if hold.limit is not None:  # Retry-After counts from now: the hold may have waited for a lock
                raise limit_reached(hold, estimate, self.clock())
            raise insufficient(hold, estimate, await self._policy(at))
        self.held = True

    async def _hold(self, route: ModelRoute, bounds: Bounds, service_tier: str | None, at: int,
                    fallback: bool = False) -> tuple[Hold | Refused, int]:
        read, written = bounds(route)
        try:
            return await self.call(
                lambda: self.engine.reserve_estimate(self.account_id, route.alias, read, written, at,
                                                     hold_id=self.id, ttl_s=self.gateway.hold_ttl_s,
                                                     service_tier=service_tier, key_id=self.key_id,
                                                     fallback=fallback))
        except InputError as exc:
            if exc.field == "model":
                raise self.unpriced(route) from None
            raise bad(exc.field, exc.reason) from None
        except NotFound:
            raise GatewayError(404, "this key's account does not exist", code="account_not_found") from None
        except Unavailable:
            raise unavailable() from None

    async def _fall_back(self, refused: Refused, estimate: int, bounds: Bounds, service_tier: str | None,
                         at: int) -> None:
        """Hold for the model the account's policy falls back to (``refused`` names it), and send
        the request there; else answer 402 saying why it cannot."""
        model = refused.fallback_model
        assert model is not None
        route = self.gateway.routes.get(model)
        why = "is not served here" if route is None else self.unservable(route)
        if route is None or why is not None:
            raise insufficient(refused, estimate, why=f"the account's fallback model '{model}' {why}")
        try:
            hold, most = await self._hold(route, bounds, service_tier, at, fallback=True)
        except GatewayError as exc:
            if exc.code != "model_not_found":
                raise
            raise insufficient(refused, estimate, why=f"the account's fallback model '{model}' has no "
                                                      "price in the catalog") from None
        if isinstance(hold, Refused):
            if hold.limit is not None:
                raise limit_reached(hold, most, self.clock())
            raise insufficient(refused, estimate, why=hold.reason)
        self.fallback_from, self.route = self.route.alias, route

    async def _policy(self, at: int) -> OutOfCredits | None:
        """The account's policy when credits run out (None when it cannot be read now): a 402
        says what it allowed."""
        try:
            return await self.call(lambda: self.engine.out_of_credits(self.account_id, at))
        except CreditmeterError:
            return None

    async def check_priced(self) -> None:
        """Answer 404 unless the catalog prices the model now (for a request that holds nothing)."""
        try:
            book = await self.call(self.engine.price_book)
        except Unavailable:
            raise unavailable() from None
        version = book.at(self.clock())
        if version is None or self.route.alias not in version.catalog.models:
            raise self.unpriced()

    def unpriced(self, route: ModelRoute | None = None) -> GatewayError:
        return GatewayError(404, f"The model '{(route or self.route).alias}' has no price in the catalog",
                            param="model", code="model_not_found")

    # -- the upstream ---------------------------------------------------------------------------

    def upstream_url(self) -> str:
        return self.route.base + self.upstream_path

    def upstream_headers(self) -> Mapping[str, str]:
        """The headers sent upstream: the model's (its key), and what the protocol passes on."""
        return self.route.headers

    async def post(self, payload: Mapping[str, Any]) -> bytes:
        """The upstream's whole answer to ``payload``; if it failed, the hold is released."""
        route = self.route
        assert route.pool is not None
        try:
            async with await route.pool.post(self.upstream_url(), orjson.dumps(payload),
                                             self.upstream_headers(), self.id) as answer:
                status, content = answer.status, await answer.read()
        except UpstreamFailure as exc:
            await self.release("an upstream failure")
            raise self.upstream_failed(None, type(exc).__name__) from None
        if status >= 400:
            await self.release("an upstream error")
            raise self.upstream_answered(status, content)
        return content

    async def post_stream(self, payload: Mapping[str, Any]) -> tuple[AsyncIterator[bytes], Close]:
        """The upstream's streamed answer to ``payload`` as it arrives, and how to end it; if the
        upstream failed before its stream began, the hold is released."""
        route = self.route
        assert route.pool is not None
        try:
            answer = await route.pool.post(self.upstream_url(), orjson.dumps(payload),
                                           self.upstream_headers(), self.id)
        except UpstreamFailure as exc:
            await self.release("an upstream failure")
            raise self.upstream_failed(None, type(exc).__name__) from None
        if answer.status >= 400:
            try:
                content = await answer.read()
            except UpstreamFailure:
                content = b""
            answer.release()
            await self.release("an upstream error")
            raise self.upstream_answered(answer.status, content)

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

        return answer.content.iter_any(), close

    def upstream_answered(self, status: int, content: bytes) -> GatewayError:
        """What the client is told of an upstream's error answer."""
        if status in (400, 413, 422):  # the request's own fault: the upstream says why
            return GatewayError(status, _upstream_message(content), code="upstream_rejected")
        return self.upstream_failed(status, "")

    def upstream_failed(self, status: int | None, detail: str) -> GatewayError:
        what = f"answered {status}" if status is not None else f"failed ({detail})"
        if status == 429:
            return GatewayError(429, f"the upstream for '{self.route.alias}' is rate limited; retry later",
                                "rate_limit_error", code="upstream_rate_limited",
                                headers={"Retry-After": "1"})
        if status == 529:  # Anthropic's "overloaded": its clients wait and retry
            return GatewayError(529, f"the upstream for '{self.route.alias}' is overloaded; retry later; "
                                     "nothing was charged", "server_error", code="upstream_overloaded",
                                headers={"Retry-After": "1"})
        return GatewayError(502, f"the upstream for '{self.route.alias}' {what}; nothing was charged",
                            "upstream_error", code="upstream_error")

    # -- the end of a call ----------------------------------------------------------------------

    async def release(self, why: str) -> None:
        if not self.held:
            return
        try:
            await self.call(lambda: self.engine.release(self.id, self.clock()))
        except CreditmeterError as exc:  # the hold's ttl frees it anyway
            log.warning("request %s: release after %s failed (%s); the hold lapses at its ttl",
                        self.id, why, exc)

    async def answered(self, content: bytes, data: dict[str, Any], usage: Usage | None,
                       counted: Callable[[], Usage]) -> Response:
        """A whole answer: settle its ``usage`` (or, when the upstream gave none, what ``counted``
        makes of it), and pass it on with the credits charged in its headers (and the model that
        answered, when the account's fallback did)."""
        source = "upstream"
        if usage is None:
            usage, source = counted(), "counted"
        settled = await self.settle(usage, source, "complete")
        if self.rename(data):
            content = orjson.dumps(data)
        headers = {"x-request-id": self.id, **self.fallback_header()}
        headers.update({f"x-credits-{k}": str(v).lower() for k, v in self.credits(settled).items()})
        return Response(content, 200, headers, media_type=JSON)

    def fallback_header(self) -> dict[str, str]:
        """``x-credits-fallback``: the model that answered, when the account's fallback did."""
        return {} if self.fallback_from is None else {"x-credits-fallback": self.route.alias}

    def rename(self, data: dict[str, Any]) -> bool:
        """Name the model as the client did (its alias) where the upstream named its own; True if
        ``data`` changed."""
        if data.get("model") == self.route.upstream_model != self.route.alias:
            data["model"] = self.route.alias
            return True
        return False

    def credits(self, settled: Settled | None) -> dict[str, str | bool]:
        """What the client is told of the charge: ``charged`` and ``remaining`` credits, or
        ``pending`` when the database could not take it yet (nothing, when it was refused)."""
        if settled is not None:
            return {"charged": format_credits(settled[0].cost_uc), "remaining": format_credits(settled[1])}
        return {} if self.refused else {"pending": True}

    def fallback_metadata(self) -> dict[str, str]:
        return {} if self.fallback_from is None else {"fallback_from": self.fallback_from}

    async def settle(self, usage: Usage, source: str, finish: str) -> tuple[Charge, int] | None:
        """Charge ``usage``; None when the database cannot take it now (retried in the background)."""
        usage = Usage(usage.model, usage.input_tokens, usage.output_tokens, usage.cached_input_tokens,
                      usage.cache_write_tokens, (), {"gateway_request": self.id, "usage": source,
                                                     "finish": finish, "stream": self.stream,
                                                     "upstream_model": self.route.upstream_model,
                                                     **self.fallback_metadata()},
                      reasoning_tokens=usage.reasoning_tokens,
                      cache_write_1h_tokens=usage.cache_write_1h_tokens, service_tier=usage.service_tier)
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


def local_stream(chunks: AsyncGenerator[bytes, None]) -> tuple[AsyncIterator[bytes], Close]:
    """A stream made in this process (the built-in demo upstream), as ``post_stream`` answers."""

    async def close(complete: bool) -> None:
        await chunks.aclose()

    return chunks, close


def approx_tokens(value: object) -> int:
    """Tokens of ``value`` (some of a request or an answer) when the upstream gave no count: its
    JSON at 4 bytes a token."""
    return math.ceil(len(orjson.dumps(value)) / APPROX_BYTES_PER_TOKEN)


def delta_tokens(text: str) -> int:
    """Tokens of a piece of streamed text (a delta of many tokens) when the upstream's count never
    came: 4 bytes a token, at least one."""
    return max(1, math.ceil(len(text.encode()) / APPROX_BYTES_PER_TOKEN))


def _upstream_message(content: bytes) -> str:
    try:
        error = orjson.loads(content).get("error")
        message = error.get("message") if isinstance(error, Mapping) else None
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    return f"the upstream refused the request: {message}" if isinstance(message, str) else \
        "the upstream refused the request"
