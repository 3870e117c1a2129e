"""The gateway's own lane through the app: its ``POST`` requests (by far the most frequent) go
straight to their endpoint once the app's outer middleware (metrics, body limit) has seen them,
skipping the layers under it that they never use (exception middleware, exit stacks, routing
over every route, the route's own wrapping).

Everything else (other methods on the same paths, other paths, a path under a root path) takes
the app's usual way. What an endpoint raises is answered as the app would: a ``CreditmeterError``
or an ``HTTPException`` by the app's handler for it, anything else left to the server's (a 500).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from creditmeter.errors import CreditmeterError

OnError = Callable[[Request, Exception], Awaitable[Response]]


class GatewayLane:
    """ASGI middleware: the gateway's ``POST`` routes answered without the app's routing."""

    def __init__(self, app: ASGIApp, routes: Sequence[Route], on_error: OnError, on_http: OnError) -> None:
        self.app = app
        self.on_error = on_error
        self.on_http = on_http
        self.routes = {route.path: route for route in routes if route.methods and "POST" in route.methods}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST"
                 and not scope.get("root_path") else None)
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # the metrics count requests by their route's template
        scope["endpoint"] = route.endpoint
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(request)
        except CreditmeterError as exc:
            response = await self.on_error(request, exc)
        except HTTPException as exc:
            response = await self.on_http(request, exc)
        await response(scope, receive, send)
