"""Where the gateway's requests go: the configured models (``ModelRoute``, each with the API its
upstream speaks), one connection pool per upstream, and the ``Gateway`` that holds them for the
life of the process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from creditmeter.errors import InputError
from creditmeter.gateway.errors import JSON
from creditmeter.gateway.pending import PendingSettles
from creditmeter.serverconfig import DEMO_UPSTREAM, GatewaySection, UpstreamModel

UpstreamFailure = (aiohttp.ClientError, TimeoutError)
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
    first use, in the worker's event loop."""

    def __init__(self, section: GatewaySection) -> None:
        self.timeout = aiohttp.ClientTimeout(total=section.max_request_s,
                                             sock_connect=section.connect_timeout_s,
                                             sock_read=section.timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=300),
                timeout=self.timeout, trust_env=False, skip_auto_headers=("User-Agent",))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


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
