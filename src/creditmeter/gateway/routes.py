"""The gateway's routes for the app to mount: ``GET /v1/models`` and one route per protocol
(``POST /v1/chat/completions``), each behind the caller's account key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from creditmeter.engine import Engine
from creditmeter.errors import Unavailable
from creditmeter.gateway import demo
from creditmeter.gateway.call import Call, Clock, EngineCall
from creditmeter.gateway.errors import JSON, GatewayError, unavailable
from creditmeter.gateway.openai_chat import ChatCompletion
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
        operator's (both routes answer an account)."""
        secret = bearer_secret(request.headers.get("authorization"))
        if secret is None:
            raise GatewayError(401, "missing API key: send 'Authorization: Bearer KEY' (an account key)",
                               code="invalid_api_key")
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

    def post(kind: type[Call]) -> Route:
        return Route(kind.path, _endpoint(kind, engine, gateway, clock, call, caller), methods=["POST"],
                     include_in_schema=False)

    return [post(ChatCompletion), Route("/v1/models", models, methods=["GET"], include_in_schema=False)]


def _endpoint(kind: type[Call], engine: Engine, gateway: Gateway, clock: Clock, call: EngineCall,
              caller: Callable[[Request], Awaitable[Principal]]) -> Endpoint:
    """Answers one protocol's requests: an account's key, then the call (``kind``)."""

    async def endpoint(request: Request) -> Response:
        try:
            who = await caller(request)
            assert who.account_id is not None  # ``caller`` lets account keys in only
            raw = await request.body()
            this = kind(engine, gateway, clock, call, who.account_id, raw)
        except GatewayError as exc:
            return exc.response()
        try:
            return await this.run()
        except GatewayError as exc:
            answer = exc.response()
            answer.headers["x-request-id"] = this.id
            return answer

    return endpoint
