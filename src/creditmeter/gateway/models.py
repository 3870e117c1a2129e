"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models an account's key may call, as each
family of clients expects them. OpenAI's shape, listing the models served through the OpenAI API,
by default; Anthropic's (paged by ``limit``, ``after_id`` and ``before_id``), listing the models
served through the Messages API, when the request comes from an Anthropic client: it names an
``anthropic-version``, or sends its key as ``x-api-key``. A model is listed once it is configured
and priced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from creditmeter.engine import Engine
from creditmeter.errors import Unavailable
from creditmeter.gateway import demo
from creditmeter.gateway.call import Clock, EngineCall
from creditmeter.gateway.errors import JSON, GatewayError, bad, unavailable
from creditmeter.gateway.upstream import ANTHROPIC, OPENAI, Gateway, ModelRoute
from creditmeter.keys import Principal

CREATED_AT = "1970-01-01T00:00:00Z"  # a configured model has no date of its own
MAX_PAGE = 1000


def model_routes(engine: Engine, gateway: Gateway, clock: Clock, call: EngineCall,
                 caller: Callable[[Request], Awaitable[Principal]]) -> list[Route]:
    """The two routes, behind the caller's account key."""

    async def callable_models(request: Request, api: str) -> list[ModelRoute]:
        await caller(request)
        book = await call(engine.price_book)
        version = book.at(clock())
        priced = version.catalog.models if version is not None else {}
        return [route for alias, route in sorted(gateway.routes.items())
                if alias in priced and route.api == api]

    async def index(request: Request) -> Response:
        anthropic = _from_anthropic(request)
        try:
            routes = await callable_models(request, ANTHROPIC if anthropic else OPENAI)
            body = _anthropic_page(request, routes) if anthropic else \
                {"object": "list", "data": [_openai_model(r) for r in routes]}
        except GatewayError as exc:
            return _render(exc, anthropic)
        except Unavailable:
            return _render(unavailable(), anthropic)
        return Response(orjson.dumps(body), media_type=JSON)

    async def one(request: Request) -> Response:
        anthropic = _from_anthropic(request)
        model = request.path_params["model"]
        try:
            routes = await callable_models(request, ANTHROPIC if anthropic else OPENAI)
            found = next((r for r in routes if r.alias == model), None)
            if found is None:
                raise GatewayError(404, f"The model '{model[:255]}' does not exist or is not served here",
                                   param="model", code="model_not_found")
        except GatewayError as exc:
            return _render(exc, anthropic)
        except Unavailable:
            return _render(unavailable(), anthropic)
        body = _anthropic_model(found) if anthropic else _openai_model(found)
        return Response(orjson.dumps(body), media_type=JSON)

    return [Route("/v1/models", index, methods=["GET"], include_in_schema=False),
            Route("/v1/models/{model:path}", one, methods=["GET"], include_in_schema=False)]


def _from_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers or "x-api-key" in request.headers


def _render(error: GatewayError, anthropic: bool) -> Response:
    return error.anthropic_response() if anthropic else error.response()


def _openai_model(route: ModelRoute) -> dict[str, Any]:
    return {"id": route.alias, "object": "model", "created": 0,
            "owned_by": demo.OWNER if route.is_demo else "creditmeter"}


def _anthropic_model(route: ModelRoute) -> dict[str, Any]:
    return {"type": "model", "id": route.alias, "display_name": route.alias, "created_at": CREATED_AT}


def _anthropic_page(request: Request, routes: list[ModelRoute]) -> dict[str, Any]:
    """One page of Anthropic's list: ``limit`` models (20 unless asked) after ``after_id`` or
    before ``before_id``."""
    limit = request.query_params.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
        raise bad("limit", f"must be a whole number from 1 to {MAX_PAGE}")
    ids = [route.alias for route in routes]
    start, end = 0, len(ids)
    if "after_id" in request.query_params:
        after = request.query_params["after_id"]
        start = ids.index(after) + 1 if after in ids else len(ids)
    if "before_id" in request.query_params:
        before = request.query_params["before_id"]
        end = ids.index(before) if before in ids else 0
    chosen = routes[start:end]
    if "before_id" in request.query_params and "after_id" not in request.query_params:
        page, more = chosen[-int(limit):], len(chosen) > int(limit)
    else:
        page, more = chosen[:int(limit)], len(chosen) > int(limit)
    data = [_anthropic_model(route) for route in page]
    return {"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}
