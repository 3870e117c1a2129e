"""Bursts of fifty concurrent gateway calls, one per protocol (chat completions, Messages,
Responses, embeddings), against what bounds an account besides its credits:

- a ``rolling 5h`` limit that about ten requests' holds fill, on an account with credits to
  spare: the charged usage never passes the limit, every other request is refused 429
  ``limit_reached`` (with a ``Retry-After`` within the window, or none while requests in flight
  hold what would free), nothing stays held;
- an overage cap (``when_out_of_credits: {overage: CAP}``) on an account whose credits cover
  about one request: requests go on into overage, the overage never passes the cap, every other
  request is refused 402.

Then ``creditmeter reconcile`` finds nothing wrong. On SQLite (one worker) and on PostgreSQL (two
worker processes)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Postgres
from tests.gateway.conftest import (
    REPO,
    GatewayServer,
    Upstream,
    credits,
    gateway_on_postgres,
    now_us,
    sqlite_url,
    start_gateway,
    stop_gateway,
    to_uc,
)
from tests.gateway.test_burst import ENDPOINTS, PRICES, REQUESTS, Endpoint, Outcome, gateway_config

WINDOW_S = 5 * 3_600


@dataclass(frozen=True)
class Refusal:
    index: int
    status: int
    kind: str  # OpenAI's code, or Anthropic's error type
    message: str
    retry_after: str | None


async def attempt(endpoint: Endpoint, client: Any, index: int) -> Outcome | Refusal:
    try:
        outcome = await endpoint.call(client, index)
    except (openai.APIStatusError, anthropic.APIStatusError) as exc:
        error = exc.response.json()["error"]
        return Refusal(index, exc.status_code, error.get("code") or error["type"], error["message"],
                       exc.response.headers.get("retry-after"))
    outcome.index = index
    return outcome


def burst(gw: GatewayServer, endpoint: Endpoint, key: str) -> tuple[list[Outcome], list[Refusal]]:
    """``REQUESTS`` calls at once; the answered and the refused."""

    async def run() -> list[Outcome | Refusal]:
        client: Any = gw.async_anthropic(key) if endpoint.anthropic else gw.async_openai(key)
        async with client:
            return list(await asyncio.gather(*(attempt(endpoint, client, i) for i in range(REQUESTS))))

    # A thread of its own: its event loop must not meet one another test left running here.
    with concurrent.futures.ThreadPoolExecutor(1) as own:
        outcomes = own.submit(lambda: asyncio.run(run())).result()
    return [o for o in outcomes if isinstance(o, Outcome)], [o for o in outcomes if isinstance(o, Refusal)]


def charged(gw: GatewayServer, endpoint: Endpoint, account_id: str, answered: list[Outcome]) -> int:
    """What the answered requests were charged, once each at price × usage, and nothing for the
    refused ones; once nothing is held."""
    gw.wait_settled(account_id, len(answered))
    events = {e["event_id"]: e for e in gw.events(account_id)}
    assert sorted(events) == sorted(o.request_id or "" for o in answered)
    for outcome in answered:
        assert outcome.status == 200
        assert events[outcome.request_id or ""]["cost_credits"] == credits(endpoint.cost(outcome.index))
        assert outcome.charged == events[outcome.request_id or ""]["cost_credits"]
    return sum(endpoint.cost(o.index) for o in answered)


def check_limit_burst(gw: GatewayServer, endpoint: Endpoint) -> None:
    limit_uc = endpoint.granted_uc  # about ten requests' holds
    account = gw.new_account(100 * limit_uc, prefix=f"limit-{endpoint.name}")
    gw.engine.set_limit(account.id, "rolling 5h", credits(limit_uc), now_us(), limit_id="burst")
    answered, refused = burst(gw, endpoint, account.key)
    assert len(answered) >= 9, (endpoint.name, answered, refused[:3])  # nine holds always fit
    assert refused, "the limit fits about ten requests of fifty"
    for refusal in refused:
        assert refusal.status == 429, refusal
        assert refusal.kind in ("limit_reached", "rate_limit_error"), refusal  # OpenAI's, Anthropic's
        assert refusal.message.startswith(f"limit reached: {credits(limit_uc)} credits in any 5 hours: ")
        assert refusal.retry_after is None or 0 < int(refusal.retry_after) <= WINDOW_S, refusal
    used = charged(gw, endpoint, account.id, answered)
    assert used <= limit_uc
    balance = gw.balance(account.id)
    assert balance["held_credits"] == "0" and balance["overage_credits"] == "0"
    assert balance["available_credits"] == credits(100 * limit_uc - used)
    [limit] = [lim for lim in balance["limits"] if lim["id"] == "burst"]
    assert (limit["used_credits"], limit["held_credits"]) == (credits(used), "0")


def check_overage_burst(gw: GatewayServer, endpoint: Endpoint) -> None:
    cap_uc = endpoint.granted_uc  # about ten requests' holds
    granted_uc = cap_uc // 10  # about one request's
    account = gw.new_account(granted_uc, prefix=f"overage-{endpoint.name}")
    gw.engine.set_out_of_credits(account.id, {"overage": credits(cap_uc)}, now_us())
    answered, refused = burst(gw, endpoint, account.key)
    assert len(answered) >= 9, (endpoint.name, answered, refused[:3])
    assert refused, "the credits and the overage cap cover about eleven requests of fifty"
    for refusal in refused:
        assert (refusal.status, refusal.kind) in ((402, "insufficient_credits"),), refusal
        assert f"would pass the account's cap of {credits(cap_uc)} credits" in refusal.message, refusal
    used = charged(gw, endpoint, account.id, answered)
    balance = gw.balance(account.id)
    overage = to_uc(balance["overage_credits"])
    assert balance["held_credits"] == "0"
    assert 0 < overage <= cap_uc
    # Spent to the last credit, and the rest is overage (an event's overage may since have been
    # paid off by what a hold gave back, so the events' sum may be larger).
    assert (balance["available_credits"], overage) == ("0", used - granted_uc)
    assert sum(to_uc(e["overage_credits"]) for e in gw.events(account.id)) >= overage


def check_bursts(gw: GatewayServer, check: Callable[[GatewayServer, Endpoint], None]) -> None:
    """``check`` on each protocol's burst, on the same server, then ``reconcile`` over all of them."""
    for endpoint in ENDPOINTS:
        check(gw, endpoint)
    reconcile = subprocess.run([sys.executable, "-m", "creditmeter.cli", "reconcile", "--db",
                                gw.server.db_url], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr


@pytest.fixture
def sqlite_gateway(upstream: Upstream, tmp_path: Path) -> Iterator[GatewayServer]:
    running = start_gateway(sqlite_url(tmp_path), tmp_path, PRICES, gateway_config(upstream))
    yield running
    stop_gateway(running)


@pytest.fixture
def postgres_gateway(upstream: Upstream, postgres: Postgres | str, tmp_path: Path) -> Iterator[GatewayServer]:
    with gateway_on_postgres(postgres, tmp_path, PRICES, gateway_config(upstream), workers=2) as running:
        yield running


def test_bursts_never_pass_a_limit_on_sqlite(sqlite_gateway: GatewayServer) -> None:
    check_bursts(sqlite_gateway, check_limit_burst)


def test_bursts_never_pass_a_limit_on_postgresql_with_two_workers(postgres_gateway: GatewayServer) -> None:
    check_bursts(postgres_gateway, check_limit_burst)


def test_bursts_never_pass_an_overage_cap_on_sqlite(sqlite_gateway: GatewayServer) -> None:
    check_bursts(sqlite_gateway, check_overage_burst)


def test_bursts_never_pass_an_overage_cap_on_postgresql_with_two_workers(
        postgres_gateway: GatewayServer) -> None:
    check_bursts(postgres_gateway, check_overage_burst)
