"""Bursts of concurrent gateway calls, one per protocol (chat completions, Messages, Responses,
embeddings), each on an account whose credits cover about ten of them: never more used than
granted, every answered request charged exactly once, every refused one not at all, no hold left
open, and ``creditmeter reconcile`` finds nothing wrong. On SQLite (one worker) and on PostgreSQL
(two worker processes)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Postgres
from tests.gateway.conftest import (
    REPO,
    UPSTREAM_REPLY_WORDS,
    GatewayServer,
    Price,
    Upstream,
    anthropic_model,
    credits,
    gateway_on_postgres,
    sqlite_url,
    start_gateway,
    stop_gateway,
    to_uc,
    upstream_model,
    word_prompt_tokens,
)

PRICE = Price(input="1", output="1000")  # 1 µc an input token, 1,000 µc an output token
EMBED_PRICE = Price(input="1000", output="0")  # 1,000 µc a token: an embedding writes none
MAX_TOKENS = 30
REQUESTS = 50
BODY_BYTES = 250  # a request body is shorter: its bytes bound its input tokens from above
# A reservation is at most 250 + 30 × 1,000 µc: ten of them fit. A request actually costs about
# 20,010 µc (20 output tokens), so at most fifteen of the fifty can be answered.
GRANTED_UC = 10 * (BODY_BYTES * PRICE.uc("input") + MAX_TOKENS * PRICE.uc("output")) // 1_000_000
EMBED_TOKENS = 200  # an embedding's input: 200 to 204 tokens, reserved and charged exactly
EMBED_GRANTED_UC = 10 * EMBED_TOKENS * EMBED_PRICE.uc("input") // 1_000_000


@dataclass
class Outcome:
    index: int
    status: int
    request_id: str | None = None
    charged: str | None = None
    remaining: str | None = None


def text_for(index: int) -> str:
    words = " ".join(["word"] * (index % 5))  # prompts of different lengths
    return f"burst request {index} {words}".strip()


def messages_for(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": text_for(index)}]


def tokens_for(index: int) -> list[int]:
    return [7] * (EMBED_TOKENS + index % 5)


def refused(exc: openai.APIStatusError | anthropic.APIStatusError, index: int) -> Outcome:
    body = exc.body if isinstance(exc.body, dict) else {}
    kind = body.get("code") or body.get("error", {}).get("type")  # OpenAI's shape, or Anthropic's
    assert exc.status_code != 402 or kind == "insufficient_credits", exc
    return Outcome(index, exc.status_code)


def answered(raw: Any, usage: Any = None) -> Outcome:
    """A whole answer's credits from its headers, a stream's from its final ``usage``."""
    extra = (usage.model_extra or {}) if usage is not None else {
        "credits_charged": raw.headers.get("x-credits-charged"),
        "credits_remaining": raw.headers.get("x-credits-remaining")}
    return Outcome(-1, raw.http_response.status_code, raw.headers["x-request-id"],
                   extra.get("credits_charged"), extra.get("credits_remaining"))


async def chat(client: openai.AsyncOpenAI, index: int) -> Outcome:
    create = client.chat.completions.with_raw_response.create
    if index % 2:
        raw = await create(model="burst-chat", messages=messages_for(index), max_tokens=MAX_TOKENS,
                           stream=True)
        chunks = [chunk async for chunk in raw.parse()]
        return answered(raw, chunks[-1])
    raw = await create(model="burst-chat", messages=messages_for(index), max_tokens=MAX_TOKENS)
    raw.parse()
    return answered(raw)


async def messages(client: anthropic.AsyncAnthropic, index: int) -> Outcome:
    create = client.messages.with_raw_response.create
    if index % 2:
        raw = await create(model="burst-messages", messages=messages_for(index),  # type: ignore[arg-type]
                           max_tokens=MAX_TOKENS, stream=True)
        events = [event async for event in await raw.parse()]  # type: ignore[union-attr]
        return answered(raw, events[-2].usage)  # message_delta, before message_stop
    raw = await create(model="burst-messages", messages=messages_for(index),  # type: ignore[arg-type]
                       max_tokens=MAX_TOKENS)
    await raw.parse()
    return answered(raw)


async def responses(client: openai.AsyncOpenAI, index: int) -> Outcome:
    create = client.responses.with_raw_response.create
    if index % 2:
        raw = await create(model="burst-responses", input=text_for(index), max_output_tokens=MAX_TOKENS,
                           stream=True)
        events = [event async for event in raw.parse()]  # type: ignore[union-attr]
        return answered(raw, events[-1].response.usage)  # response.completed
    raw = await create(model="burst-responses", input=text_for(index), max_output_tokens=MAX_TOKENS)
    raw.parse()
    return answered(raw)


async def embeddings(client: openai.AsyncOpenAI, index: int) -> Outcome:
    raw = await client.embeddings.with_raw_response.create(model="burst-embed", input=tokens_for(index))
    raw.parse()
    return answered(raw)


@dataclass(frozen=True)
class Endpoint:
    """One protocol's burst: its call, the account's credits, and what a request costs."""

    name: str
    call: Callable[[Any, int], Awaitable[Outcome]]
    granted_uc: int
    cost: Callable[[int], int]
    anthropic: bool = False

    async def burst(self, gw: GatewayServer, key: str) -> list[Outcome]:
        client: Any = gw.async_anthropic(key) if self.anthropic else gw.async_openai(key)
        async with client:
            return list(await asyncio.gather(*(self.one(client, i) for i in range(REQUESTS))))

    async def one(self, client: Any, index: int) -> Outcome:
        try:
            outcome = await self.call(client, index)
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:
            return refused(exc, index)
        outcome.index = index
        return outcome


REPLY = min(MAX_TOKENS, UPSTREAM_REPLY_WORDS)
ENDPOINTS = [
    Endpoint("chat", chat, GRANTED_UC, lambda i: PRICE.cost_uc(word_prompt_tokens(messages_for(i)), REPLY)),
    # The local upstream's count of a Messages prompt and a Responses input: the same words, framed alike.
    Endpoint("messages", messages, GRANTED_UC,
             lambda i: PRICE.cost_uc(word_prompt_tokens(messages_for(i)), REPLY), anthropic=True),
    Endpoint("responses", responses, GRANTED_UC,
             lambda i: PRICE.cost_uc(word_prompt_tokens(messages_for(i)), REPLY)),
    Endpoint("embeddings", embeddings, EMBED_GRANTED_UC, lambda i: EMBED_PRICE.cost_uc(len(tokens_for(i)))),
]


def check_burst(gw: GatewayServer, endpoint: Endpoint) -> None:
    account = gw.new_account(endpoint.granted_uc, prefix=f"burst-{endpoint.name}")
    # A thread of its own: its event loop must not meet one another test left running in this
    # worker (Playwright's sync API keeps one for the session).
    with concurrent.futures.ThreadPoolExecutor(1) as own:
        outcomes = own.submit(lambda: asyncio.run(endpoint.burst(gw, account.key))).result()

    statuses = sorted({o.status for o in outcomes})
    assert set(statuses) <= {200, 402}, statuses
    answered = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 402]
    assert len(answered) >= 9, len(answered)  # nine reservations always fit
    assert refused, "the credits cover about ten requests of fifty"

    balance = gw.wait_settled(account.id, len(answered))
    events = {e["event_id"]: e for e in gw.events(account.id)}
    assert len(events) == len(answered)  # each refused request was charged nothing
    for outcome in answered:
        event = events[outcome.request_id or ""]
        assert event["cost_credits"] == credits(endpoint.cost(outcome.index)), outcome
        assert outcome.charged == event["cost_credits"]
        assert outcome.remaining is not None and to_uc(outcome.remaining) >= 0
        assert event["overage_credits"] == "0"
        assert event["hold_id"] == outcome.request_id
    used = sum(endpoint.cost(o.index) for o in answered)
    assert used <= endpoint.granted_uc
    assert balance["overage_credits"] == "0"
    assert balance["held_credits"] == "0"
    [package] = balance["packages"]
    assert package["used_credits"] == credits(used)
    assert to_uc(package["used_credits"]) <= to_uc(package["granted_credits"])
    assert balance["available_credits"] == credits(endpoint.granted_uc - used)
    # The request settled last saw every other hold settled: what it was told is what is left.
    assert endpoint.granted_uc - used in {to_uc(o.remaining or "-1") for o in answered}


def check_bursts(gw: GatewayServer) -> None:
    """Each protocol's burst on the same server, then ``reconcile`` over all of them."""
    for endpoint in ENDPOINTS:
        check_burst(gw, endpoint)
    reconcile = subprocess.run([sys.executable, "-m", "creditmeter.cli", "reconcile", "--db",
                                gw.server.db_url], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr


PRICES = {"burst-chat": PRICE, "burst-messages": PRICE, "burst-responses": PRICE, "burst-embed": EMBED_PRICE}


def gateway_config(upstream: Upstream) -> dict[str, object]:
    return {"models": {"burst-chat": upstream_model(upstream.v1, upstream_model="fake-model"),
                       "burst-messages": anthropic_model(upstream, upstream_model="fake-model"),
                       "burst-responses": upstream_model(upstream.v1, upstream_model="fake-model"),
                       "burst-embed": upstream_model(upstream.v1, upstream_model="fake-model")}}


@pytest.fixture
def sqlite_gateway(upstream: Upstream, tmp_path: Path) -> Iterator[GatewayServer]:
    running = start_gateway(sqlite_url(tmp_path), tmp_path, PRICES, gateway_config(upstream))
    yield running
    stop_gateway(running)


@pytest.fixture
def postgres_gateway(upstream: Upstream, postgres: Postgres | str, tmp_path: Path) -> Iterator[GatewayServer]:
    with gateway_on_postgres(postgres, tmp_path, PRICES, gateway_config(upstream), workers=2) as running:
        yield running


def test_a_burst_never_overspends_on_sqlite(sqlite_gateway: GatewayServer) -> None:
    check_bursts(sqlite_gateway)


def test_a_burst_never_overspends_on_postgresql_with_two_workers(postgres_gateway: GatewayServer) -> None:
    check_bursts(postgres_gateway)
