"""The HTTP API (``/api``, ``/healthz``, ``/metrics``): the engine over JSON, every call scoped by
the caller's key (see ``auth``).

The assembly (``creditmeter.server``) builds the app: it puts an :class:`ApiContext` on it and
calls :func:`mount`; the routes live in ``routers/``, one module per area.
"""

from fastapi import FastAPI

from creditmeter.api import routers
from creditmeter.api.context import ApiContext, install


def mount(app: FastAPI, context: ApiContext) -> None:
    """Add the API's routes to ``app``, working with ``context``."""
    install(app, context)
    routers.mount(app)


__all__ = ["ApiContext", "mount"]
