"""The API's routes, one module per area; ``mount`` adds them to an app in the documented order."""

from fastapi import FastAPI

from creditmeter.api.routers import (
    accounts,
    enterprises,
    grants,
    holds,
    limits,
    notifications,
    operations,
    plans,
    service,
    topup,
    usage,
    webhooks,
)

AREAS = (accounts, grants, usage, plans, enterprises, holds, limits, topup, notifications, operations,
         webhooks)


def mount(app: FastAPI) -> None:
    """Every ``/api`` route, then ``/healthz`` and ``/metrics``.

    Each area's router carries the ``/api`` prefix itself: a route's path is then its full
    template, which is what the metrics label requests by.
    """
    for area in AREAS:
        app.include_router(area.router)
    app.include_router(service.health)
    app.include_router(service.router)
