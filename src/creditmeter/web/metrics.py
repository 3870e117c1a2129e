"""Prometheus metrics: requests, latencies, credits charged, events by outcome.

Shared by every route of the app (the API's, the console's and the gateway's). With several worker
processes (``serve --workers N``) every process writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` adds them up (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from creditmeter.domain import Charge, Rejected

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("creditmeter_http_requests", "HTTP requests by route and status.",
                   ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("creditmeter_http_request_duration_seconds", "HTTP request latency by route.",
                    ["route"], registry=REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
CREDITS = Counter("creditmeter_credits_charged", "Credits charged for usage (new charges only).",
                  registry=REGISTRY)
EVENTS = Counter("creditmeter_usage_events", "Usage events by outcome.", ["status"], registry=REGISTRY)
REJECTED = Counter("creditmeter_usage_events_rejected", "Usage events rejected, by reason.",
                   ["reason"], registry=REGISTRY)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def count_results(results: list[Charge | Rejected]) -> None:
    """Count the outcome of recorded events (and the credits newly charged)."""
    charged_uc = 0
    for result in results:
        if isinstance(result, Rejected):
            EVENTS.labels("rejected").inc()
            REJECTED.labels(f"{result.error_type}:{result.field or '-'}").inc()
        else:
            EVENTS.labels(result.status).inc()
            if result.status == "charged":
                charged_uc += result.cost_uc
    if charged_uc:
        CREDITS.inc(charged_uc / 1_000_000)


def exposition() -> tuple[bytes, str]:
    """The metrics text, summed over every worker process when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every request by its route template (never the raw path) and times it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - start)
