"""JSON in and out: answers written by orjson, and request bodies read strictly (``jsonbody``):
valid UTF-8 text, every fractional number an exact ``Decimal`` (never a float: amounts are money)."""

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from creditmeter.api.jsonbody import read_json


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


class ExactJSONRequest(Request):
    """Reads JSON bodies strictly, with every fractional number as an exact Decimal."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = read_json(await self.body())
        return self._json


class ExactJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            response: Response = await handler(ExactJSONRequest(request.scope, request.receive))
            return response

        return run
