"""What the API's routes work with — the engine, the clock and the key check — reached through a
FastAPI dependency (``Ctx``), never through closures.

The assembly (``creditmeter.server``) puts one ``ApiContext`` on the app it builds
(:func:`install`); every route asks for it as a parameter ``ctx: Ctx``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from creditmeter.engine import Engine
from creditmeter.web.access import Access

Clock = Callable[[], int]
PREFIX = "/api"  # every route of the API but /healthz and /metrics


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The API's collaborators.

    Attributes:
      engine: the engine every route calls.
      clock: "now" in µs; read once per request, at the edge.
      access: the key check, shared with the console and the gateway.
      replay_horizon_s: how long a replayed delivery is retried (the delivery settings' horizon).
    """

    engine: Engine
    clock: Clock
    access: Access
    replay_horizon_s: float = 3 * 86_400.0


def install(app: FastAPI, context: ApiContext) -> None:
    app.state.creditmeter_api = context


def of(request: Request) -> ApiContext:
    """The context of the app serving ``request``."""
    context: ApiContext = request.app.state.creditmeter_api
    return context


async def context(request: Request) -> ApiContext:
    return of(request)


Ctx = Annotated[ApiContext, Depends(context)]
