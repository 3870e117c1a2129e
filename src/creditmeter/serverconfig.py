"""``creditmeter serve``'s settings: a YAML file (``--config``), environment variables, defaults.

Precedence: a command-line flag, then the environment variable, then the file, then the default.
``serve`` checks the merged settings before starting (a bad value names its field and exits 2)
and hands them to each worker process as values (``creditmeter.server.Serving``)::

    server:
      database: postgresql://creditmeter@db.internal/credits   # or --db / CREDITMETER_DB
      max_body_bytes: 2097152      # CREDITMETER_MAX_BODY_BYTES
      threads: 8                   # CREDITMETER_THREADS: worker threads per process
      key_cache_s: 1               # CREDITMETER_KEY_CACHE_S: how long a checked key is trusted
      tick_interval_s: 60          # CREDITMETER_TICK_S: the background tick (0: none)
    webhooks:                      # delivering alerts to webhook endpoints (see docs/webhooks.md)
      deliver: true                # CREDITMETER_DELIVER: run the delivery loop in each worker
      interval_s: 1                # CREDITMETER_DELIVER_INTERVAL_S: how often an idle loop looks
      timeout_s: 15                # the longest a request to an endpoint may take, all of it
      backoff_base_s: 5            # the first retry within 0-5 s, then 0-10 s, 0-20 s … (full jitter)
      backoff_cap_s: 3600          # … the ceiling stops doubling at an hour
      horizon_s: 259200            # a delivery is retried for 3 days, then failed
      lease_s: 60                  # a worker that dies mid-send leaves its deliveries due after this
      disable_after_failures: 20   # an endpoint is disabled after 20 failed attempts in a row …
      disable_after_s: 432000      # … that went on for at least 5 days
      concurrency: 16              # requests in flight at once, per worker
      batch: 100                   # the most deliveries a worker takes at a time
    engine:
      lateness_window_s: 604800    # CREDITMETER_LATENESS_WINDOW_S
      hold_ttl_s: 600              # CREDITMETER_HOLD_TTL_S
    alerts:                        # alert rules for every account, besides its plan's (docs/alerts.md)
      - {usage_reached_percent: 80}
      - {balance_below: 100}
    gateway:                       # the /v1 gateway: OpenAI's and Anthropic's APIs (see docs/gateway.md)
      timeout_s: 600               # longest wait for an upstream's next byte
      connect_timeout_s: 10
      keepalive_s: 4               # longest an idle upstream connection is kept for another request
      max_request_s: 3600          # longest a request may take in all (its hold lasts this + 60 s)
      pending_dir: /var/lib/creditmeter/pending   # settles the database could not take yet
                                   # (default ~/.local/state/creditmeter/pending)
      models:
        gpt-4o-mini:                        # the model id users ask for (and the price catalog's)
          api: openai                       # its upstream's API: openai (default) or anthropic
          base_url: https://api.openai.com/v1   # any OpenAI-compatible server; "demo": built in
          api_key_env: OPENAI_API_KEY       # optional: the upstream's key, read from this variable
          upstream_model: gpt-4o-mini       # optional, defaults to the id
          max_output_tokens: 4096           # reserved (and sent) when a request sets no max_tokens
          max_tokens_param: max_tokens      # the name the upstream honours (o-series: max_completion_tokens)
          prompt_bytes_per_token: 1         # 1: the reservation never under-counts a prompt
          image_url_tokens: 1600            # reserved for each image given by URL
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from creditmeter.alert_rules import AlertRule, parse_alert_rules
from creditmeter.endpoints import DeliveryPolicy
from creditmeter.errors import InputError
from creditmeter.pricing import load_yaml

ENV = {
    ("server", "database"): "CREDITMETER_DB",
    ("server", "max_body_bytes"): "CREDITMETER_MAX_BODY_BYTES",
    ("server", "threads"): "CREDITMETER_THREADS",
    ("server", "key_cache_s"): "CREDITMETER_KEY_CACHE_S",
    ("server", "tick_interval_s"): "CREDITMETER_TICK_S",
    ("webhooks", "deliver"): "CREDITMETER_DELIVER",
    ("webhooks", "interval_s"): "CREDITMETER_DELIVER_INTERVAL_S",
    ("engine", "lateness_window_s"): "CREDITMETER_LATENESS_WINDOW_S",
    ("engine", "hold_ttl_s"): "CREDITMETER_HOLD_TTL_S",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Server(_Section):
    database: Annotated[str, Field(min_length=1)] | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=1_073_741_824)] = 2 * 1024 * 1024
    threads: Annotated[int, Field(ge=1, le=256)] = 8
    key_cache_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    tick_interval_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0


class EngineSection(_Section):
    lateness_window_s: Annotated[int, Field(ge=1)] | None = None
    hold_ttl_s: Annotated[int, Field(ge=1, le=7 * 86_400)] | None = None


class WebhooksSection(_Section):
    deliver: bool = True
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 15.0
    backoff_base_s: Annotated[float, Field(gt=0, le=86_400)] = 5.0
    backoff_cap_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0
    horizon_s: Annotated[float, Field(ge=0, le=90 * 86_400)] = 3 * 86_400.0
    lease_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    disable_after_failures: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    disable_after_s: Annotated[float, Field(ge=0, le=365 * 86_400)] = 5 * 86_400.0
    concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    batch: Annotated[int, Field(ge=1, le=1000)] = 100

    @model_validator(mode="after")
    def _consistent(self) -> WebhooksSection:
        if self.lease_s <= self.timeout_s:
            raise ValueError("lease_s must be longer than timeout_s (else two workers could send at once)")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be at least backoff_base_s")
        return self

    def policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(timeout_s=self.timeout_s, backoff_base_s=self.backoff_base_s,
                              backoff_cap_s=self.backoff_cap_s, horizon_s=self.horizon_s,
                              lease_s=self.lease_s,
                              disable_after_failures=self.disable_after_failures,
                              disable_after_s=self.disable_after_s)


DEMO_UPSTREAM = "demo"


class UpstreamModel(_Section):
    api: Literal["openai", "anthropic"] = "openai"
    base_url: Annotated[str, Field(min_length=1, max_length=2000,
                                   pattern=r"^(demo|https?://[^\s]+)$")]
    api_key_env: Annotated[str, Field(min_length=1, max_length=200,
                                      pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    upstream_model: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=10_000_000)] = 4096
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    prompt_bytes_per_token: Annotated[int, Field(ge=1, le=16)] = 1
    image_url_tokens: Annotated[int, Field(ge=0, le=1_000_000)] = 1600


class GatewaySection(_Section):
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    connect_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    keepalive_s: Annotated[float, Field(gt=0, le=3600)] = 4.0
    max_request_s: Annotated[int, Field(ge=1, le=7 * 86_400 - 60)] = 3600
    pending_dir: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    models: dict[Annotated[str, Field(min_length=1, max_length=255)], UpstreamModel] = {}


class ServerConfig(_Section):
    server: Server = Server()
    engine: EngineSection = EngineSection()
    gateway: GatewaySection = GatewaySection()
    webhooks: WebhooksSection = WebhooksSection()
    alerts: list[Any] = []

    def alert_rules(self) -> tuple[AlertRule, ...]:
        return parse_alert_rules(self.alerts, "alerts")


def load(path: Path | None, environ: Mapping[str, str]) -> ServerConfig:
    """The file's settings (if any) with the environment's on top, checked."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError("config", f"cannot read {path}: {exc.strerror}") from None
        loaded = load_yaml(text, str(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError("config", f"{path} must hold a mapping (server:, engine:, gateway:, webhooks:, "
                             "alerts:)")
        data = loaded or {}
    for (section, key), name in ENV.items():
        if name in environ and environ[name] != "":
            part = data.setdefault(section, {})
            if not isinstance(part, dict):
                break  # reported by the validation below
            part[key] = environ[name]
    try:
        config = ServerConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        source = ENV.get(tuple(str(p) for p in first["loc"])) if len(first["loc"]) == 2 else None  # type: ignore[arg-type]
        where = f" ({source} or the file)" if source else ""
        raise InputError(field, f"{first['msg']}{where}") from None
    config.alert_rules()  # checked here: a bad rule names its field before anything starts
    return config

