"""Fixtures for the OpenAI-compatible gateway: the local upstream (``tests.gateway.upstream``, a
real HTTP server), a real ``creditmeter serve --config FILE`` process in front of it, and the
arithmetic the tests check charges against (done here, independently of the product's code).

Each test makes an account of its own (``GatewayServer.new_account``), so no test depends on
what another left behind; the upstream's record of requests is searched by a marker word each
test puts in its prompt.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from creditmeter.engine import Engine
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.store.sql import SqlStore
from tests.api.conftest import Server, bearer, free_port, start_server, stop_server
from tests.conftest import Postgres

REPO = Path(__file__).parents[2]
UPSTREAM_KEY_ENV = "CM_TEST_UPSTREAM_KEY"
UPSTREAM_KEY = "upstream-secret-" + "u" * 24
UPSTREAM_REPLY_WORDS = 20  # the local upstream's reply length (tests/gateway/upstream.py)
UC_PER_CREDIT = 1_000_000


# -- the local upstream ------------------------------------------------------------------------


@dataclass
class Upstream:
    """The local model API server (``tests.gateway.upstream``), running as a process of its own."""

    base_url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def received(self) -> list[dict[str, Any]]:
        answer = httpx2.get(self.base_url + "/_requests", timeout=10)
        answer.raise_for_status()
        return list(answer.json())

    def requests_with(self, marker: str) -> list[dict[str, Any]]:
        """The requests (path, body, headers and the usage reported) whose body mentions ``marker``."""
        return [r for r in self.received() if marker in json.dumps(r["body"])]


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_upstream(log: Path, module: str = "tests.gateway.upstream", *args: str) -> Upstream:
    """The local upstream (or ``module``, another server taking ``--port``, and ``args``) in a
    process of its own."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args],
                                   cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    upstream = Upstream(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local upstream exited {process.returncode}: {log.read_text()}")
        try:
            if httpx2.get(upstream.base_url + "/_requests", timeout=1).status_code == 200:
                return upstream
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    stop_process(process)
    raise RuntimeError(f"the local upstream did not answer within 30 s: {log.read_text()}")


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    running = start_upstream(tmp_path_factory.mktemp("upstream") / "upstream.log")
    yield running
    # A request still waiting upstream (``fake-hang`` sleeps 30 s) would hold up a graceful stop.
    stop_process(running.process, grace_s=2)


def closed_port_url() -> str:
    """A base URL on which nothing listens (a port just freed)."""
    return f"http://127.0.0.1:{free_port()}/v1"


# -- what the upstreams count, and what that costs ----------------------------------------------


def words(text: str) -> int:
    return len(text.split())


def word_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """How the local upstream and the built-in demo upstream count a prompt: a token a word of
    each message's text, 3 a message, 3 for the reply."""
    return 3 + sum(3 + words(m["content"]) for m in messages)


def approx_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """The gateway's own estimate of a prompt when no upstream count came: the text at 4 bytes a
    token (rounded up), 3 a message, 3 for the reply."""
    return 3 + sum(3 + math.ceil(len(m["content"].encode()) / 4) for m in messages)


def text_tokens(pieces: list[str]) -> int:
    """The gateway's count of streamed text when no upstream count came (Messages, Responses): each
    piece (a delta) at 4 bytes a token, rounded up, at least one."""
    return sum(max(1, math.ceil(len(piece.encode()) / 4)) for piece in pieces)


@dataclass(frozen=True)
class Price:
    """Credits per 1M tokens (and per request), as the catalog file writes them."""

    input: str
    output: str
    cached_input: str | None = None
    request: str | None = None
    cache_write: str | None = None
    priority: Price | None = None  # the priority service tier's rates (``tiers.priority``)

    def uc(self, name: str) -> int:
        value = getattr(self, name)
        if value is None:
            value = self.input if name in ("cached_input", "cache_write") else "0"
        scaled = Decimal(value) * UC_PER_CREDIT
        assert scaled == scaled.to_integral_value()
        return int(scaled)

    def cost_uc(self, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0,
                cache_write_tokens: int = 0, *, reasoning_tokens: int = 0,
                cache_write_1h_tokens: int = 0) -> int:
        """µc: the token parts summed, rounded up once, plus the request fee. Reasoning tokens are
        priced as output, 1-hour cache writes as cache writes (the catalog's defaults for them)."""
        scaled = ((input_tokens * self.uc("input")) + (output_tokens + reasoning_tokens) * self.uc("output")
                  + cached_tokens * self.uc("cached_input")
                  + (cache_write_tokens + cache_write_1h_tokens) * self.uc("cache_write"))
        return -(-scaled // UC_PER_CREDIT) + self.uc("request")


def credits(uc: int) -> str:
    """µc as the API writes credits: a decimal string, no trailing zeros."""
    whole, frac = divmod(uc, UC_PER_CREDIT)
    return str(whole) if frac == 0 else f"{whole}.{frac:06d}".rstrip("0")


def to_uc(text: str) -> int:
    scaled = Decimal(text) * UC_PER_CREDIT
    assert scaled == scaled.to_integral_value(), text
    return int(scaled)


def catalog_yaml(prices: Mapping[str, Price]) -> str:
    lines = ["models:"]
    for model, price in prices.items():
        lines.append(f"  {model}:")
        for name in ("input", "output", "cached_input", "cache_write", "request"):
            value = getattr(price, name)
            if value is not None:
                lines.append(f"    {name}: {value}")
        if price.priority is not None:
            lines.append(f"    tiers: {{priority: {{input: {price.priority.input}, "
                         f"output: {price.priority.output}}}}}")
    return "\n".join(lines) + "\n"


def now_us() -> int:
    return time.time_ns() // 1000


# -- a gateway server --------------------------------------------------------------------------


@dataclass
class Account:
    id: str
    key: str
    key_id: str
    granted_uc: int


@dataclass
class GatewayServer:
    """A running ``creditmeter serve --config FILE`` with a gateway section, and an engine on the
    same database for setting up accounts."""

    server: Server
    engine: Engine
    prices: dict[str, Price]
    config: dict[str, Any]

    @property
    def v1(self) -> str:
        return self.server.base_url + "/v1"

    def new_account(self, credits_uc: int = 10 * UC_PER_CREDIT, prefix: str = "user") -> Account:
        at = now_us() - 1_000_000
        account_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.engine.create_account(account_id, at)
        if credits_uc:
            self.engine.add_grant(account_id, credits_uc, "package", at)
        key, secret = self.engine.create_key(account_id, at)
        return Account(account_id, secret, key.id, credits_uc)

    def openai(self, key: str, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key=key, max_retries=0, timeout=30, **kwargs)

    def async_openai(self, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.v1, api_key=key, max_retries=0, timeout=60)

    def anthropic(self, key: str, **kwargs: Any) -> anthropic.Anthropic:
        """The Anthropic client, unchanged, with the gateway as its base URL (no ``/v1``)."""
        return anthropic.Anthropic(base_url=self.server.base_url, api_key=key, max_retries=0, timeout=30,
                                   **kwargs)

    def async_anthropic(self, key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.server.base_url, api_key=key, max_retries=0, timeout=60)

    def operator(self) -> httpx2.Client:
        return self.server.client()

    def balance(self, account_id: str) -> dict[str, Any]:
        with self.operator() as op:
            answer = op.get(f"/api/accounts/{account_id}/balance")
            answer.raise_for_status()
            return dict(answer.json())

    def events(self, account_id: str) -> list[dict[str, Any]]:
        """Every usage event of the account, newest first."""
        out: list[dict[str, Any]] = []
        cursor = None
        with self.operator() as op:
            while True:
                params: dict[str, Any] = {"limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                answer = op.get(f"/api/accounts/{account_id}/usage", params=params)
                answer.raise_for_status()
                page = answer.json()
                out.extend(page["events"])
                cursor = page["next_cursor"]
                if not cursor:
                    return out

    def wait_settled(self, account_id: str, events: int, timeout_s: float = 10) -> dict[str, Any]:
        """The balance once no hold is open and ``events`` usage events are recorded (a stream the
        client left is settled just after it left)."""
        deadline = time.monotonic() + timeout_s
        while True:
            balance = self.balance(account_id)
            if balance["held_credits"] == "0" and len(self.events(account_id)) >= events:
                return balance
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled in {timeout_s} s: {balance}")
            time.sleep(0.05)

    def raw_post(self, key: str, content: bytes) -> httpx2.Response:
        headers = {**bearer(key), "content-type": "application/json"}
        return httpx2.post(self.v1 + "/chat/completions", content=content, headers=headers, timeout=30)


def upstream_model(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": base_url, "api_key_env": UPSTREAM_KEY_ENV, **extra}


def anthropic_model(upstream: Upstream, **extra: Any) -> dict[str, Any]:
    """A model whose upstream (the local one) speaks Anthropic's Messages API."""
    return {"api": "anthropic", "base_url": upstream.base_url, "api_key_env": UPSTREAM_KEY_ENV, **extra}


def start_gateway(db_url: str, directory: Path, prices: dict[str, Price], gateway: dict[str, Any], *,
                  workers: int = 1, server: dict[str, Any] | None = None) -> GatewayServer:
    """Load ``prices`` (effective a minute ago) into the database at ``db_url`` and start
    ``creditmeter serve`` on it with a config file holding ``gateway`` (and ``server``)."""
    store = SqlStore(db_url)
    store.upgrade()
    engine = Engine(store)
    at = now_us() - 60_000_000
    engine.load_prices(parse_catalog(load_yaml(catalog_yaml(prices))), at, at)
    config: dict[str, Any] = {"gateway": gateway}
    if server:
        config["server"] = server
    path = directory / "creditmeter.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    try:
        running = start_server(db_url, directory / "serve.log", workers=workers,
                               env={UPSTREAM_KEY_ENV: UPSTREAM_KEY}, extra_args=["--config", str(path)])
    except BaseException:
        store.close()
        raise
    return GatewayServer(running, engine, prices, config)


def stop_gateway(gateway: GatewayServer) -> None:
    try:
        stop_server(gateway.server)
    finally:
        gateway.engine.store.close()


@contextmanager
def gateway_on_postgres(postgres: Postgres | str, directory: Path, prices: dict[str, Price],
                        gateway: dict[str, Any], *, workers: int = 1) -> Iterator[GatewayServer]:
    """A gateway (``start_gateway``) on a fresh PostgreSQL database, stopped and the database
    given back afterwards."""
    if isinstance(postgres, str):
        pytest.skip(postgres)  # in CI the postgres fixture fails instead
    name = postgres.fresh()
    try:
        running = start_gateway(postgres.url(name), directory, prices, gateway, workers=workers)
        try:
            yield running
        finally:
            stop_gateway(running)
    finally:
        postgres.give_back(name)


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'gateway.db'}"
