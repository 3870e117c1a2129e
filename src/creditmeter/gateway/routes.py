"""The gateway's routes for the app to mount: one per protocol's request (``POST
/v1/chat/completions``, ``/v1/responses``, ``/v1/embeddings``, ``/v1/messages`` and
``/v1/messages/count_tokens``) and ``GET /v1/models`` (in OpenAI's shape, or Anthropic's for its
clients), each behind the caller's account key: ``Authorization: Bearer KEY``, or ``x-api-key:
KEY`` as Anthropic's clients send it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from creditmeter.engine import Engine
from creditmeter.errors import Unavailable
from creditmeter.gateway.anthropic_messages import CountTokens, Messages
from creditmeter.gateway.call import Call, Clock, EngineCall
from creditmeter.gateway.embeddings import Embeddings
from creditmeter.gateway.errors import GatewayError, unavailable
from creditmeter.gateway.models import model_routes
from creditmeter.gateway.openai_chat import ChatCompletion
from creditmeter.gateway.openai_responses import Responses
from creditmeter.gateway.pending import PendingSettles, database_key, default_directory
from creditmeter.gateway.upstream import Gateway
from creditmeter.keys import Principal
from creditmeter.web.access import bearer_secret

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]


def gateway_routes(engine: Engine, gateway: Gateway, *, clock: Clock,
                   authenticate: Callable[[str], Principal | None], inline: bool) -> list[Route]:
    """The gateway's routes, for the app to mount. ``authenticate`` is the API's key check
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
        """The account whose key the request presents; 401 without a valid key, 403 for the
        operator's (every route answers an account)."""
        secret = bearer_secret(request.headers.get("authorization")) or request.headers.get("x-api-key")
        if not secret:
            raise GatewayError(401, "missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY' "
                                    "(an account key)", code="invalid_api_key")
        try:
            who = await call(lambda: authenticate(secret))
        except Unavailable:
            raise unavailable() from None
        if who is None:
            raise GatewayError(401, "invalid API key: unknown or revoked", code="invalid_api_key")
        if who.account_id is None:  # the operator's key: no account to charge, or to price for
            raise GatewayError(403, "the gateway charges an account: call it with an account key",
                               "permission_error", code="account_key_required")
        return who

    def post(kind: type[Call]) -> Route:
        return Route(kind.path, _endpoint(kind, engine, gateway, clock, call, caller), methods=["POST"],
                     include_in_schema=False)

    kinds: list[type[Call]] = [ChatCompletion, Responses, Embeddings, Messages, CountTokens]
    return [*(post(kind) for kind in kinds), *model_routes(engine, gateway, clock, call, caller)]


def _endpoint(kind: type[Call], engine: Engine, gateway: Gateway, clock: Clock, call: EngineCall,
              caller: Callable[[Request], Awaitable[Principal]]) -> Endpoint:
    """Answers one protocol's requests: an account's key, then the call (``kind``)."""

    async def endpoint(request: Request) -> Response:
        try:
            who = await caller(request)
            assert who.account_id is not None  # ``caller`` lets account keys in only
            raw = await request.body()
            # The query as the URL's (``request.url`` would build the whole URL to get it).
            query = request.scope.get("query_string", b"").decode("latin-1")
            this = kind(engine, gateway, clock, call, who.account_id, raw, request.headers, query,
                        key_id=who.key_id)
        except GatewayError as exc:
            return kind.render(exc)
        try:
            return await this.run()
        except GatewayError as exc:
            answer = kind.render(exc)
            answer.headers["x-request-id"] = this.id
            return answer

    return endpoint
