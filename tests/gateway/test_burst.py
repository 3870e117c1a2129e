"""A burst of concurrent gateway calls on an account whose credits cover about ten of them:
never more used than granted, every answered request charged exactly once, every refused one
not at all, no hold left open, and ``creditmeter reconcile`` finds nothing wrong. On SQLite (one
worker) and on PostgreSQL (two worker processes)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.conftest import Postgres
from tests.gateway.conftest import (
    REPO,
    UPSTREAM_REPLY_WORDS,
    GatewayServer,
    Price,
    Upstream,
    credits,
    sqlite_url,
    start_gateway,
    stop_gateway,
    to_uc,
    upstream_model,
    word_prompt_tokens,
)

MODEL = "burst-chat"
PRICE = Price(input="1", output="1000")  # 1 µc an input token, 1,000 µc an output token
MAX_TOKENS = 30
REQUESTS = 50
BODY_BYTES = 250  # a request body is shorter: its bytes bound its input tokens from above
# A reservation is at most 250 + 30 × 1,000 µc: ten of them fit. A request actually costs about
# 20,010 µc (20 output tokens), so at most fifteen of the fifty can be answered.
GRANTED_UC = 10 * (BODY_BYTES * PRICE.uc("input") + MAX_TOKENS * PRICE.uc("output")) // 1_000_000


@dataclass
class Outcome:
    index: int
    status: int
    request_id: str | None = None
    charged: str | None = None
    remaining: str | None = None


def messages_for(index: int) -> list[dict[str, str]]:
    words = " ".join(["word"] * (index % 5))  # prompts of different lengths
    return [{"role": "user", "content": f"burst request {index} {words}".strip()}]


async def call(client: openai.AsyncOpenAI, index: int) -> Outcome:
    messages = messages_for(index)
    try:
        if index % 2:
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=messages, max_tokens=MAX_TOKENS, stream=True)
            stream = raw.parse()
            chunks = [chunk async for chunk in stream]
            extra = chunks[-1].model_extra or {}
            return Outcome(index, raw.http_response.status_code, raw.headers["x-request-id"],
                           extra.get("credits_charged"), extra.get("credits_remaining"))
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, max_tokens=MAX_TOKENS)
        raw.parse()
        return Outcome(index, raw.http_response.status_code, raw.headers["x-request-id"],
                       raw.headers.get("x-credits-charged"), raw.headers.get("x-credits-remaining"))
    except openai.APIStatusError as exc:
        assert exc.status_code != 402 or exc.code == "insufficient_credits", exc
        return Outcome(index, exc.status_code)


async def burst(gw: GatewayServer, key: str) -> list[Outcome]:
    async with gw.async_openai(key) as client:
        return list(await asyncio.gather(*(call(client, i) for i in range(REQUESTS))))


def expected_cost(index: int) -> int:
    return PRICE.cost_uc(word_prompt_tokens(messages_for(index)), min(MAX_TOKENS, UPSTREAM_REPLY_WORDS))


def check_burst(gw: GatewayServer) -> None:
    account = gw.new_account(GRANTED_UC, prefix="burst")
    # A thread of its own: its event loop must not meet one another test left running in this
    # worker (Playwright's sync API keeps one for the session).
    with concurrent.futures.ThreadPoolExecutor(1) as own:
        outcomes = own.submit(lambda: asyncio.run(burst(gw, account.key))).result()

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
        assert event["cost_credits"] == credits(expected_cost(outcome.index)), outcome
        assert outcome.charged == event["cost_credits"]
        assert outcome.remaining is not None and to_uc(outcome.remaining) >= 0
        assert event["overage_credits"] == "0"
        assert event["hold_id"] == outcome.request_id
    used = sum(expected_cost(o.index) for o in answered)
    assert used <= GRANTED_UC
    assert balance["overage_credits"] == "0"
    assert balance["held_credits"] == "0"
    [package] = balance["packages"]
    assert package["used_credits"] == credits(used)
    assert to_uc(package["used_credits"]) <= to_uc(package["granted_credits"])
    assert balance["available_credits"] == credits(GRANTED_UC - used)
    # The request settled last saw every other hold settled: what it was told is what is left.
    assert GRANTED_UC - used in {to_uc(o.remaining or "-1") for o in answered}

    reconcile = subprocess.run([sys.executable, "-m", "creditmeter.cli", "reconcile", "--db",
                                gw.server.db_url], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr


def gateway_config(upstream: Upstream) -> dict[str, object]:
    return {"models": {MODEL: upstream_model(upstream.v1, upstream_model="fake-model")}}


@pytest.fixture
def sqlite_gateway(upstream: Upstream, tmp_path: Path) -> Iterator[GatewayServer]:
    running = start_gateway(sqlite_url(tmp_path), tmp_path, {MODEL: PRICE}, gateway_config(upstream))
    yield running
    stop_gateway(running)


@pytest.fixture
def postgres_gateway(upstream: Upstream, postgres: Postgres | str, tmp_path: Path) -> Iterator[GatewayServer]:
    if isinstance(postgres, str):
        pytest.skip(postgres)  # in CI the postgres fixture fails instead
    name = postgres.fresh()
    try:
        running = start_gateway(postgres.url(name), tmp_path, {MODEL: PRICE}, gateway_config(upstream),
                                workers=2)
        try:
            yield running
        finally:
            stop_gateway(running)
    finally:
        postgres.give_back(name)


def test_a_burst_never_overspends_on_sqlite(sqlite_gateway: GatewayServer) -> None:
    check_burst(sqlite_gateway)


def test_a_burst_never_overspends_on_postgresql_with_two_workers(postgres_gateway: GatewayServer) -> None:
    check_burst(postgres_gateway)
