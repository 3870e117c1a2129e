"""Kept-alive upstream connections the upstream closed: the gateway's next request on one must not
fail. The upstream is the local one behind a relay (``tests.gateway.upstream_relay``) that closes
or resets a connection idle for ``IDLE_S`` when the next request arrives on it (an upstream's idle
timeout meeting the request on the wire). The gateway sends such a request once more on a new
connection, under the same hold: the client gets its answer, charged once. A request whose answer
had begun is never sent again. With ``keepalive_s`` under the upstream's idle timeout, the gateway
drops idle connections itself and sends nothing on a closed one.
On SQLite, and on PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import Postgres
from tests.gateway.conftest import (
    UPSTREAM_REPLY_WORDS,
    GatewayServer,
    Price,
    Upstream,
    approx_prompt_tokens,
    credits,
    gateway_on_postgres,
    sqlite_url,
    start_gateway,
    start_upstream,
    stop_gateway,
    stop_process,
    upstream_model,
    word_prompt_tokens,
)

IDLE_S = 0.5  # the relay's idle timeout
PAUSE_S = 1.2  # between two requests: longer than the relay's idle timeout, shorter than the gateway's
PRICE = Price(input="2.5", output="10")
BREAK_PRICE = Price(input="0.9", output="4.1")
PRICES = {"drop-close": PRICE, "drop-reset": PRICE, "fake-break": BREAK_PRICE, "gone": PRICE}


@pytest.fixture(scope="module")
def relays(upstream: Upstream,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Upstream, Path]]]:
    """A relay in front of the local upstream for each way of dropping: it and its log."""
    directory = tmp_path_factory.mktemp("relays")
    port = upstream.base_url.rsplit(":", 1)[1]
    running: dict[str, tuple[Upstream, Path]] = {}
    try:
        for drop in ("close", "reset"):
            log = directory / f"{drop}.log"
            relay = start_upstream(log, "tests.gateway.upstream_relay", "--to", port, "--idle", str(IDLE_S),
                                   "--drop", drop)
            running[drop] = (relay, log)
        yield running
    finally:
        for relay, _ in running.values():
            stop_process(relay.process, grace_s=2)


def gateway_config(relays: dict[str, tuple[Upstream, Path]], **extra: Any) -> dict[str, Any]:
    models = {f"drop-{drop}": upstream_model(relay.v1, upstream_model="fake-model")
              for drop, (relay, _) in relays.items()}
    models["fake-break"] = upstream_model(relays["close"][0].v1)
    return {"models": models, **extra}


@pytest.fixture
def sqlite_gateway(relays: dict[str, tuple[Upstream, Path]], tmp_path: Path) -> Iterator[GatewayServer]:
    running = start_gateway(sqlite_url(tmp_path), tmp_path, PRICES, gateway_config(relays))
    yield running
    stop_gateway(running)


@pytest.fixture
def postgres_gateway(relays: dict[str, tuple[Upstream, Path]], postgres: Postgres | str,
                     tmp_path: Path) -> Iterator[GatewayServer]:
    # One worker: the second request must go out on the pool the first one left a connection in.
    with gateway_on_postgres(postgres, tmp_path, PRICES, gateway_config(relays)) as running:
        yield running


def drops(log: Path) -> int:
    return log.read_text().split().count("dropped")


def messages(mark: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"Say hello {mark}"}]


def call(gw: GatewayServer, key: str, model: str, mark: str, stream: bool) -> str:
    """A chat completion read to its end (it must succeed): its request id."""
    with gw.openai(key) as client:
        if not stream:
            raw = client.chat.completions.with_raw_response.create(model=model, messages=messages(mark))
            completion = raw.parse()
            assert completion.usage is not None
            assert completion.usage.completion_tokens == UPSTREAM_REPLY_WORDS
        else:
            raw = client.chat.completions.with_raw_response.create(model=model, messages=messages(mark),
                                                                   stream=True)
            chunks = list(raw.parse())
            assert chunks[-1].usage is not None
            assert chunks[-1].usage.completion_tokens == UPSTREAM_REPLY_WORDS
        return str(raw.headers["x-request-id"])


def check_two_calls(gw: GatewayServer, upstream: Upstream, relay_log: Path, model: str, stream: bool,
                    dropped: int) -> None:
    """Two calls ``PAUSE_S`` apart both answered, ``dropped`` requests dropped by the relay, each
    call sent upstream once and charged once."""
    account = gw.new_account()
    before = drops(relay_log)
    marks = [f"m{uuid.uuid4().hex}" for _ in range(2)]
    ids = [call(gw, account.key, model, marks[0], stream)]
    time.sleep(PAUSE_S)
    ids.append(call(gw, account.key, model, marks[1], stream))
    assert drops(relay_log) - before == dropped
    for mark in marks:
        assert len(upstream.requests_with(mark)) == 1  # a dropped request never got there
    balance = gw.wait_settled(account.id, 2)
    events = gw.events(account.id)
    assert sorted(e["event_id"] for e in events) == sorted(ids)
    assert [e["hold_id"] for e in events] == [e["event_id"] for e in events]
    cost = PRICE.cost_uc(word_prompt_tokens(messages(marks[0])), UPSTREAM_REPLY_WORDS)
    assert [e["cost_credits"] for e in events] == [credits(cost)] * 2
    assert balance["held_credits"] == "0"
    assert balance["available_credits"] == credits(account.granted_uc - 2 * cost)
    assert [p["used_credits"] for p in balance["packages"]] == [credits(2 * cost)]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("drop", ["close", "reset"])
def test_a_request_on_a_connection_the_upstream_closed_is_sent_again_and_charged_once(
        sqlite_gateway: GatewayServer, upstream: Upstream, relays: dict[str, tuple[Upstream, Path]],
        drop: str, stream: bool) -> None:
    check_two_calls(sqlite_gateway, upstream, relays[drop][1], f"drop-{drop}", stream, dropped=1)


@pytest.mark.parametrize("drop", ["close", "reset"])
def test_on_postgresql_too(postgres_gateway: GatewayServer, upstream: Upstream,
                           relays: dict[str, tuple[Upstream, Path]], drop: str) -> None:
    check_two_calls(postgres_gateway, upstream, relays[drop][1], f"drop-{drop}", True, dropped=1)


def test_idle_connections_kept_for_less_than_the_upstream_keeps_them_are_never_found_closed(
        relays: dict[str, tuple[Upstream, Path]], upstream: Upstream, tmp_path: Path) -> None:
    running = start_gateway(sqlite_url(tmp_path), tmp_path, PRICES,
                            gateway_config(relays, keepalive_s=IDLE_S / 2))
    try:
        check_two_calls(running, upstream, relays["reset"][1], "drop-reset", False, dropped=0)
    finally:
        stop_gateway(running)


def test_a_request_is_sent_again_once_only(upstream: Upstream, relays: dict[str, tuple[Upstream, Path]],
                                          tmp_path: Path) -> None:
    """When the new connection fails too (the upstream went away), the client gets a 502 and
    nothing is charged for it."""
    port = upstream.base_url.rsplit(":", 1)[1]
    log = tmp_path / "gone.log"
    gone = start_upstream(log, "tests.gateway.upstream_relay", "--to", port, "--idle", str(IDLE_S),
                          "--drop", "reset", "--sticky")
    config = gateway_config(relays)
    config["models"]["gone"] = upstream_model(gone.v1, upstream_model="fake-model")
    running = start_gateway(sqlite_url(tmp_path), tmp_path, PRICES, config)
    try:
        account = running.new_account()
        first = call(running, account.key, "gone", f"m{uuid.uuid4().hex}", True)
        time.sleep(PAUSE_S)
        mark = f"m{uuid.uuid4().hex}"
        with running.openai(account.key) as client, pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="gone", messages=messages(mark), stream=True)
        assert "nothing was charged" in str(failed.value)
        assert drops(log) == 2  # the kept-alive connection, then the new one: no third try
        assert upstream.requests_with(mark) == []
        balance = running.wait_settled(account.id, 1)
        [event] = running.events(account.id)
        assert event["event_id"] == first
        cost = PRICE.cost_uc(word_prompt_tokens(messages(mark)), UPSTREAM_REPLY_WORDS)
        assert balance["available_credits"] == credits(account.granted_uc - cost)
    finally:
        stop_gateway(running)
        stop_process(gone.process, grace_s=2)


def test_a_stream_that_broke_off_is_not_sent_again(sqlite_gateway: GatewayServer, upstream: Upstream,
                                                   relays: dict[str, tuple[Upstream, Path]]) -> None:
    """On a kept-alive connection, the answer begun: the break is the client's (charged for what
    was relayed), and the upstream saw the request once."""
    account = sqlite_gateway.new_account()
    log = relays["close"][1]
    before = drops(log)
    call(sqlite_gateway, account.key, "drop-close", f"m{uuid.uuid4().hex}", False)  # leaves a connection
    mark = f"m{uuid.uuid4().hex}"
    chunks: list[Any] = []
    with sqlite_gateway.openai(account.key) as client:
        stream = client.chat.completions.create(model="fake-break", messages=messages(mark), stream=True)
        with pytest.raises(openai.APIError):
            for chunk in stream:
                chunks.append(chunk)
    assert drops(log) == before
    assert len(upstream.requests_with(mark)) == 1
    pieces = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert pieces == 3
    sqlite_gateway.wait_settled(account.id, 2)
    [broken] = [e for e in sqlite_gateway.events(account.id) if e["model"] == "fake-break"]
    assert broken["cost_credits"] == credits(BREAK_PRICE.cost_uc(approx_prompt_tokens(messages(mark)),
                                                                 pieces))
