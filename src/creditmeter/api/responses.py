"""JSON in and out: answers written by orjson, and request bodies read with every fractional
number as an exact ``Decimal`` (never a float: amounts are money)."""

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


class ExactJSONRequest(Request):
    """Reads JSON bodies with every fractional number as an exact Decimal, never a float."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
            except json.JSONDecodeError:
                raise
            except ValueError as exc:  # NaN/Infinity, an integer too long to read
                raise json.JSONDecodeError(str(exc), body.decode("utf-8", "replace"), 0) from None
        return self._json


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


class ExactJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            response: Response = await handler(ExactJSONRequest(request.scope, request.receive))
            return response

        return run
