"""Where the gateway's requests go: the configured models (``ModelRoute``, each with the API its
upstream speaks), one connection pool per upstream, and the ``Gateway`` that holds them for the
life of the process."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp

from creditmeter.errors import InputError
from creditmeter.gateway.errors import JSON
from creditmeter.gateway.pending import PendingSettles
from creditmeter.serverconfig import DEMO_UPSTREAM, GatewaySection, UpstreamModel

log = logging.getLogger("creditmeter.gateway")
UpstreamFailure = (aiohttp.ClientError, TimeoutError)
# How a kept-alive connection the upstream had closed fails a request sent on it (the upstream's
# idle timeout and the request crossed): closed or reset before any answer. Not a connector error:
# those are new connections, never used before.
_CLOSED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientConnectionResetError)
# How soon after a request goes out on a kept-alive connection its failure must come for the request
# to be sent again. The upstream closing an idle connection as the request arrives fails it within
# about one round trip; a later failure (a worker restarted while generating, a reset after the
# answer began) may come after the upstream took the request, and sending it again could call the
# model twice: that one is a 502, nothing charged.
RESEND_WITHIN_S = 0.5
OPENAI, ANTHROPIC = "openai", "anthropic"
ANTHROPIC_VERSION = "2023-06-01"  # sent when the client names none


@dataclass(frozen=True)
class ModelRoute:
    """One model users may ask for, and where its requests go."""

    alias: str
    upstream_model: str
    max_output_tokens: int
    max_tokens_param: str
    prompt_bytes_per_token: int
    image_url_tokens: int
    api: str  # the API the upstream speaks: ``OPENAI`` or ``ANTHROPIC``
    base: str  # its base URL, without a trailing slash; "demo" for the built-in one
    headers: Mapping[str, str]  # with its key
    pool: _Pool | None

    @property
    def is_demo(self) -> bool:
        return self.pool is None


class _Pool:
    """The connections to one upstream (every model on the same base URL shares them), opened on
    first use, in the worker's event loop. An idle one is kept ``keepalive_s`` (set under the
    upstream's own idle timeout, it is closed here before the upstream closes it)."""

    def __init__(self, section: GatewaySection) -> None:
        self.timeout = aiohttp.ClientTimeout(total=section.max_request_s,
                                             sock_connect=section.connect_timeout_s,
                                             sock_read=section.timeout_s)
        self.keepalive_s = section.keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None  # a new connection for each request
        self.closing = False  # set by aclose: no request sent again, no new session made to send it

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            reuse = aiohttp.TraceConfig()
            reuse.on_connection_reuseconn.append(_reused)
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self.keepalive_s, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, trust_env=False,
                skip_auto_headers=("User-Agent",), trace_configs=[reuse])
        return self._session

    def fresh_session(self) -> aiohttp.ClientSession:
        if self._fresh is None or self._fresh.closed:
            self._fresh = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True, ttl_dns_cache=300),
                timeout=self.timeout, trust_env=False, skip_auto_headers=("User-Agent",))
        return self._fresh

    async def post(self, url: str, data: bytes, headers: Mapping[str, str],
                   request_id: str) -> aiohttp.ClientResponse:
        """The upstream's answer to ``data`` (its status and headers read; its body still to
        read). When a kept-alive connection turns out closed by the upstream within
        ``RESEND_WITHIN_S`` of sending the request, with no answer read (the upstream closed it
        idle as the request arrived), and the pool is not closing, the request is sent once more, on a new
        connection, in what remains of ``max_request_s``; any other failure is raised."""
        used = SimpleNamespace(reused=False)
        started = time.monotonic()
        try:
            return await self.session().post(url, data=data, headers=headers, trace_request_ctx=used)
        except _CLOSED as exc:
            failed_after = time.monotonic() - started
            remaining = self.timeout.total - failed_after if self.timeout.total is not None else None
            if (not used.reused or isinstance(exc, aiohttp.ClientConnectorError) or _answer_begun(exc)
                    or failed_after > RESEND_WITHIN_S or self.closing
                    or (remaining is not None and remaining <= 0)):
                raise
            log.warning("request %s: a kept-alive connection to the upstream failed %.3f s after the "
                        "request went out, with no answer read (%s: %s); sent again on a new connection "
                        "(if frequent, lower gateway.keepalive_s under the upstream's idle timeout)",
                        request_id, failed_after, type(exc).__name__, exc)
        timeout = aiohttp.ClientTimeout(total=remaining, sock_connect=self.timeout.sock_connect,
                                        sock_read=self.timeout.sock_read)
        return await self.fresh_session().post(url, data=data, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        self.closing = True
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()


async def _reused(_session: aiohttp.ClientSession, context: SimpleNamespace,
                  _params: aiohttp.TraceConnectionReuseconnParams) -> None:
    """A request goes out on a kept-alive connection: its ``trace_request_ctx`` (if any) says so."""
    if context.trace_request_ctx is not None:
        context.trace_request_ctx.reused = True


def _answer_begun(exc: Exception) -> bool:
    """Whether the upstream had begun its answer when its connection ended (a status line read)."""
    return isinstance(exc, aiohttp.ServerDisconnectedError) and not isinstance(exc.message, str)


class Gateway:
    """The configured models, each with one connection pool to its upstream (shared by every
    model on the same base URL), made once per process."""

    def __init__(self, section: GatewaySection, environ: Mapping[str, str]) -> None:
        self.section = section
        self.pending: PendingSettles  # set by gateway_routes, which knows the engine
        # A hold outlives the longest request, so a running request's credits stay reserved.
        self.hold_ttl_s = section.max_request_s + 60
        self._pools: dict[str, _Pool] = {}
        self.routes: dict[str, ModelRoute] = {}
        for alias, model in section.models.items():
            self.routes[alias] = self._route(alias, model, environ)

    def _route(self, alias: str, model: UpstreamModel, environ: Mapping[str, str]) -> ModelRoute:
        headers = {"content-type": JSON, "accept-encoding": "identity"}
        if model.api_key_env:
            key = environ.get(model.api_key_env)
            if not key:
                raise InputError(f"gateway.models.{alias}.api_key_env",
                                 f"the environment variable {model.api_key_env} is not set")
            if model.api == ANTHROPIC:
                headers["x-api-key"] = key
            else:
                headers["authorization"] = f"Bearer {key}"
        pool = None
        base = DEMO_UPSTREAM
        if model.base_url != DEMO_UPSTREAM:
            base = model.base_url.rstrip("/")
            pool = self._pools.setdefault(base, _Pool(self.section))
        elif model.api != OPENAI:
            raise InputError(f"gateway.models.{alias}.api",
                             "the built-in demo upstream answers OpenAI chat completions only")
        return ModelRoute(alias, model.upstream_model or alias, model.max_output_tokens,
                          model.max_tokens_param, model.prompt_bytes_per_token, model.image_url_tokens,
                          model.api, base, headers, pool)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
