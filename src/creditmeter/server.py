"""The assembly: builds the ASGI app from settings and runs it.

``create_app`` puts the HTTP API, the web console and the gateway on one app, sharing one engine
and one key check, with the error shapes, the body limit, the metrics, the background ticker and
the webhook delivery loop.
``serve`` runs it under uvicorn in one or more worker processes; each worker builds its app from
the settings ``serve`` checked, handed over as values (:class:`Serving`), never re-read from the
environment or the file.
"""

import functools
import inspect
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from socket import socket
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from creditmeter import api
from creditmeter.api import errors as api_errors
from creditmeter.console import create_console
from creditmeter.delivery import Deliverer
from creditmeter.engine import Engine, Settings, open_engine
from creditmeter.errors import EXIT_SYSTEM, CreditmeterError
from creditmeter.gateway import Gateway, GatewayError, GatewayLane, gateway_routes
from creditmeter.serverconfig import DEMO_UPSTREAM, GatewaySection, ServerConfig, UpstreamModel
from creditmeter.web import metrics
from creditmeter.web.access import Access
from creditmeter.web.bodylimit import BodyLimit
from creditmeter.web.methods import allowed_methods

DEFAULT_MAX_BODY = 2 * 1024 * 1024
GATEWAY_PATHS = "/v1/"  # the gateway's callers expect its protocols' error shapes there
Clock = Callable[[], int]
log = logging.getLogger("creditmeter.api")


def system_clock() -> int:
    return time.time_ns() // 1000


def create_app(engine: Engine, *, admin_key: str | None = None, clock: Clock = system_clock,
               max_body_bytes: int = DEFAULT_MAX_BODY, threads: int = 8,
               key_cache_s: float = 1.0, tick_interval_s: float = 0,
               gateway: Gateway | None = None, deliverer: Deliverer | None = None,
               deliver_interval_s: float = 1.0, replay_horizon_s: float | None = None) -> FastAPI:
    """The app over ``engine``; ``admin_key`` is an operator key taken from the environment.

    ``key_cache_s``: how long a checked key is trusted without asking the database again. A key
    revoked through this app stops working at once; one revoked elsewhere (another worker, the
    CLI) within that time. 0 checks every request against the database.
    ``tick_interval_s``: run ``Engine.tick`` this often in the background (0: never; ``serve``
    runs it every 60 s by default). Ticks are idempotent, so every worker may run its own.
    ``gateway``: the models the ``/v1`` gateway serves (none: no gateway).
    ``deliverer``: deliver alerts to webhook endpoints in a background thread, looking for due
    deliveries every ``deliver_interval_s`` when idle (none: this app delivers nothing; ``serve``
    delivers unless told not to). Every worker may run its own: none takes another's delivery.
    ``replay_horizon_s``: how long a delivery replayed through the API is retried (none: the
    deliverer's horizon, else the default), whether or not this app delivers.
    """
    access = Access(engine, admin_key, key_cache_s)
    app = FastAPI(title="creditmeter", version=_version(),
                  lifespan=_lifespan(engine, clock, threads, tick_interval_s, gateway,
                                     (deliverer, deliver_interval_s)),
                  description="Credits for AI products: prices, packages, burn-down, holds, usage. "
                              "Amounts are credits strings (up to 6 decimal places); times ISO 8601 UTC.",
                  openapi_tags=[{"name": "api"}])
    if replay_horizon_s is None and deliverer is not None:
        replay_horizon_s = deliverer.policy.horizon_s
    if replay_horizon_s is not None:
        api.mount(app, api.ApiContext(engine, clock, access, replay_horizon_s))
    else:
        api.mount(app, api.ApiContext(engine, clock, access))
    app.include_router(create_console(engine, clock=clock, authenticate=access.principal))
    if gateway is not None:
        # First in the route list: the gateway's requests are the most frequent by far.
        routes = gateway_routes(engine, gateway, clock=clock, authenticate=access.principal,
                                inline=engine.local_reads)
        app.router.routes[:0] = routes
        # Inside the metrics and the body limit (added after it, so outside it), ahead of the rest.
        app.add_middleware(GatewayLane, routes=routes, on_error=api_errors.on_error, on_http=_on_http)
    app.add_exception_handler(CreditmeterError, api_errors.on_error)
    app.add_exception_handler(RequestValidationError, api_errors.on_invalid)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_middleware(BodyLimit, limit=max_body_bytes, too_large=_too_large)
    app.add_middleware(metrics.MetricsMiddleware)
    return app


async def _on_http(request: Request, exc: Exception) -> Response:
    """A plain HTTP error (unknown path, method not allowed …) in the shape its caller expects."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405 and (allow := allowed_methods(request)):
        exc.headers = {**(exc.headers or {}), "Allow": allow}
    if request.url.path.startswith(GATEWAY_PATHS):
        return GatewayError(exc.status_code, str(exc.detail), code=api_errors.http_kind(exc.status_code),
                            headers=exc.headers).response_for(request.url.path)
    return await api_errors.on_http(request, exc)


def _too_large(path: str, message: str) -> Response:
    if path.startswith(GATEWAY_PATHS):
        return GatewayError(413, message, code="too_large").response_for(path)
    return api_errors.too_large(message)


def _lifespan(engine: Engine, clock: Clock, threads: int, tick_interval_s: float, gateway: Gateway | None,
              delivery: tuple[Deliverer | None, float]
              ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Few threads: engine calls are short, and many threads only fight over the GIL.
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        deliverer, interval_s = delivery
        stop = threading.Event()
        # Its own thread: a round may wait on slow endpoints, and must not hold the request threads.
        delivering = None if deliverer is None else threading.Thread(
            target=deliverer.run_forever, args=(interval_s, stop), name="creditmeter-delivery", daemon=True)
        if delivering is not None:
            delivering.start()
        stop_checkpoints = engine.checkpoint_in_background()
        async with anyio.create_task_group() as tasks:
            if tick_interval_s > 0:
                tasks.start_soon(_tick_forever, engine, clock, tick_interval_s)
            yield
            tasks.cancel_scope.cancel()
        stop_checkpoints()
        if delivering is not None and deliverer is not None:
            stop.set()
            await anyio.to_thread.run_sync(delivering.join, 30.0)
            deliverer.close()
        if gateway is not None:
            await gateway.aclose()

    return lifespan


async def _tick_forever(engine: Engine, clock: Clock, interval_s: float) -> None:
    # A random start spreads the workers' ticks; a failed tick is logged and tried again later.
    await anyio.sleep(random.uniform(0, interval_s))
    while True:
        try:
            report = await run_in_threadpool(engine.tick, clock())
            if report.renewed or report.entries:
                log.info("tick: %s subscriptions renewed, %s holds timed out, %s entries",
                         report.renewed, report.holds_expired, report.entries)
        except Exception:  # noqa: BLE001 - the loop must outlive any one failure
            log.exception("tick failed; trying again in %s s", interval_s)
        await anyio.sleep(interval_s)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("creditmeter")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def demo_app(engine: Engine, models: Sequence[str]) -> FastAPI:
    """The app ``creditmeter demo`` serves: no operator key, the gateway on the built-in demo
    upstream for ``models``, a tick a minute."""
    section = GatewaySection(models={model: UpstreamModel(base_url=DEMO_UPSTREAM) for model in models})
    return create_app(engine, admin_key=None, gateway=Gateway(section, os.environ), tick_interval_s=60)


def serve_app(app: FastAPI, *, host: str, port: int) -> None:
    """Serve one app in this process, quietly (the demo)."""
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)


# -- serving ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Serving:
    """What every worker builds its app from: the checked settings, as values.

    Attributes:
      config: the merged settings (flags, environment, file), checked.
      database: the database URL (the flag's, else the settings').
      admin_key: the operator key from the environment, checked; None for none.
    """

    config: ServerConfig
    database: str
    admin_key: str | None


def engine_settings(config: ServerConfig) -> Settings:
    values: dict[str, int] = {}
    if config.engine.lateness_window_s is not None:
        values["lateness_window_s"] = config.engine.lateness_window_s
    if config.engine.hold_ttl_s is not None:
        values["default_hold_ttl_s"] = config.engine.hold_ttl_s
    return Settings(**values, alert_rules=config.alert_rules())


def worker_app(serving: Serving) -> FastAPI:
    """The app one worker process runs."""
    server = serving.config.server
    engine = open_engine(serving.database, engine_settings(serving.config))
    # Upstream keys are secrets: they stay in the environment and are read where they are used.
    gateway = Gateway(serving.config.gateway, os.environ) if serving.config.gateway.models else None
    hooks = serving.config.webhooks
    deliverer = (Deliverer(engine, hooks.policy(), concurrency=hooks.concurrency, batch=hooks.batch)
                 if hooks.deliver else None)
    return create_app(engine, admin_key=serving.admin_key, max_body_bytes=server.max_body_bytes,
                      threads=server.threads, key_cache_s=server.key_cache_s,
                      tick_interval_s=server.tick_interval_s, gateway=gateway, deliverer=deliverer,
                      deliver_interval_s=hooks.interval_s, replay_horizon_s=hooks.horizon_s)


def check(serving: Serving) -> None:
    """What ``serve`` makes sure of before it says it serves: every upstream key is there, the
    schema is there (SQLite gets it now) and the database answers."""
    if serving.config.gateway.models:
        Gateway(serving.config.gateway, os.environ)
    engine = open_engine(serving.database)
    try:
        engine.ping()
    finally:
        engine.close()


def serve(serving: Serving, *, host: str, port: int, workers: int, access_log: bool) -> None:
    """Run the app under uvicorn until stopped; with ``workers`` > 1 in that many processes."""
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its samples here; /metrics adds them up (prometheus_client's own way).
        metrics_dir = tempfile.mkdtemp(prefix="creditmeter-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    config = uvicorn.Config(functools.partial(worker_app, serving), factory=True, host=host, port=port,
                            workers=workers, access_log=access_log, log_level="info", server_header=False)
    try:
        _run(config)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run(config: uvicorn.Config) -> None:
    """What ``uvicorn.run`` does, for an app handed over as a value rather than an import string."""
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            _supervisor(config, config.bind_socket()).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    if not server.started and config.workers == 1:
        sys.exit(EXIT_SYSTEM)  # it could not start (uvicorn said why): e.g. its address was taken


def _supervisor(config: uvicorn.Config, sock: socket) -> Any:
    """uvicorn's own worker supervisor (it restarts a worker that dies); older uvicorn releases
    take the worker's target explicitly."""
    from uvicorn.supervisors import Multiprocess

    if "target" in inspect.signature(Multiprocess).parameters:
        return Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock])  # type: ignore[call-arg]
    return Multiprocess(config, sockets=[sock])
