"""The OpenAI-compatible gateway end to end: the official ``openai`` client → a real
``creditmeter serve`` process → the local upstream server (a real HTTP server) or the built-in
demo upstream. Every charge is checked against price × usage computed here from the catalog and
the upstream's known counts."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from creditmeter.pricing import load_yaml, parse_catalog
from tests.api.conftest import ADMIN_KEY, bearer
from tests.gateway.conftest import (
    UPSTREAM_KEY,
    UPSTREAM_REPLY_WORDS,
    GatewayServer,
    Price,
    Upstream,
    approx_prompt_tokens,
    catalog_yaml,
    closed_port_url,
    credits,
    now_us,
    sqlite_url,
    start_gateway,
    stop_gateway,
    to_uc,
    upstream_model,
    word_prompt_tokens,
)

PRICES = {
    "fake-model": Price(input="2.5", output="10"),
    "fake-cached": Price(input="2.5", output="10", cached_input="1.25"),
    "team-chat": Price(input="3", output="15", request="0.001"),  # an alias of fake-model
    "fake-slow": Price(input="0.7", output="3.3"),
    "fake-break": Price(input="0.9", output="4.1"),
    "fake-nousage": Price(input="1.3", output="5.7"),
    "fake-errorbody": Price(input="1.7", output="6.1"),
    "fake-crlf": Price(input="0.3", output="1.9"),
    "fake-inline-usage": Price(input="2.1", output="7.3"),
    "fake-500": Price(input="1", output="2"),
    "fake-400": Price(input="1", output="2"),
    "fake-429": Price(input="1", output="2"),
    "fake-hang": Price(input="1", output="2"),
    "refused-upstream": Price(input="1", output="2"),
    "wrong-path": Price(input="1", output="2"),  # the upstream answers 404 there
    "demo-chat": Price(input="1.1", output="4.4"),
    "not-served": Price(input="1", output="1"),  # priced, but no upstream configured
}
FAKE_MAX_OUTPUT = 64


@pytest.fixture(scope="module")
def gw(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    directory = tmp_path_factory.mktemp("gateway")
    models: dict[str, Any] = {
        "fake-model": upstream_model(upstream.v1, max_output_tokens=FAKE_MAX_OUTPUT),
        "fake-cached": upstream_model(upstream.v1),
        "team-chat": upstream_model(upstream.v1, upstream_model="fake-model"),
        "unpriced-chat": upstream_model(upstream.v1, upstream_model="fake-model"),  # not in the catalog
        "refused-upstream": upstream_model(closed_port_url(), upstream_model="fake-model"),
        "wrong-path": upstream_model(upstream.base_url + "/nowhere", upstream_model="fake-model"),
        "demo-chat": {"base_url": "demo", "max_output_tokens": 40},
    }
    for name in ("fake-slow", "fake-break", "fake-nousage", "fake-500", "fake-400", "fake-429",
                 "fake-hang", "fake-errorbody", "fake-crlf", "fake-inline-usage"):
        models[name] = upstream_model(upstream.v1)
    running = start_gateway(sqlite_url(directory), directory, PRICES,
                            {"timeout_s": 1, "models": models})
    yield running
    stop_gateway(running)


def prompt(marker: str, text: str = "Say hello to the ledger") -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are terse and exact."},
            {"role": "user", "content": f"{text} {marker}"}]


def marker() -> str:
    return f"m{uuid.uuid4().hex}"


def stream_all(gw: GatewayServer, key: str, model: str, messages: list[dict[str, str]], *,
               breaks: bool = False) -> tuple[str, list[Any]]:
    """A streamed call read to its end: its request id and every chunk (with ``breaks``, the
    chunks before the ``openai.APIError`` the stream must end with)."""
    chunks: list[Any] = []
    with gw.openai(key) as client:
        stream = client.chat.completions.create(model=model, messages=messages, stream=True)
        request_id = stream.response.headers["x-request-id"]
        if breaks:
            with pytest.raises(openai.APIError):
                for chunk in stream:
                    chunks.append(chunk)
        else:
            chunks = list(stream)
    return request_id, chunks


def route(gw: GatewayServer, model: str) -> dict[str, Any]:
    return dict(gw.config["gateway"]["models"][model])


def assert_nothing_charged(gw: GatewayServer, account_id: str, granted_uc: int) -> None:
    balance = gw.balance(account_id)
    assert balance["held_credits"] == "0"
    assert balance["available_credits"] == credits(granted_uc)
    assert balance["overage_credits"] == "0"
    assert [p["used_credits"] for p in balance["packages"]] == ["0"]
    assert gw.events(account_id) == []


def assert_charged(gw: GatewayServer, account_id: str, granted_uc: int, request_id: str,
                   expected_uc: int, model: str, tokens: tuple[int, int, int]) -> dict[str, Any]:
    """One usage event, ``request_id``, for exactly ``expected_uc``; the balance agrees; no hold."""
    balance = gw.balance(account_id)
    assert balance["held_credits"] == "0"
    assert balance["overage_credits"] == "0"
    assert balance["available_credits"] == credits(granted_uc - expected_uc)
    assert [p["used_credits"] for p in balance["packages"]] == [credits(expected_uc)]
    events = gw.events(account_id)
    assert len(events) == 1, events
    event = events[0]
    assert event["event_id"] == request_id
    assert event["hold_id"] == request_id
    assert event["model"] == model
    assert (event["input_tokens"], event["output_tokens"], event["cached_input_tokens"]) == tokens
    assert event["cost_credits"] == credits(expected_uc)
    return balance


# -- charging ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", ["fake-model", "fake-cached", "team-chat"])
def test_a_call_is_charged_price_times_the_upstreams_usage(gw: GatewayServer, upstream: Upstream,
                                                           model: str, stream: bool) -> None:
    account = gw.new_account(7 * 1_000_000)
    mark = marker()
    messages = prompt(mark)
    config = route(gw, model)
    upstream_name = config.get("upstream_model", model)
    max_tokens = 7 if stream else None  # a stream sets its own; a whole answer gets the model's limit
    sent_max = max_tokens or config.get("max_output_tokens", 4096)
    reply = min(UPSTREAM_REPLY_WORDS, sent_max)
    prompt_tokens = word_prompt_tokens(messages)
    cached = prompt_tokens // 2 if upstream_name == "fake-cached" else 0
    expected = PRICES[model].cost_uc(prompt_tokens - cached, reply, cached)
    assert expected > 0

    with gw.openai(account.key) as client:
        if not stream:
            raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
            completion = raw.parse()
            assert completion.model == model
            assert completion.usage is not None
            assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt_tokens,
                                                                                          reply)
            assert len((completion.choices[0].message.content or "").split()) == reply
            charged, remaining = raw.headers["x-credits-charged"], raw.headers["x-credits-remaining"]
        else:
            options = {"include_usage": False} if model == "fake-cached" else None
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=messages, stream=True, max_tokens=max_tokens,
                **({"stream_options": options} if options else {}))
            assert "x-credits-charged" not in raw.headers
            chunks = list(raw.parse())
            assert {c.model for c in chunks} == {model}
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert len(text.split()) == reply
            final = chunks[-1]
            assert final.choices == [] and final.usage is not None
            assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (prompt_tokens, reply)
            extra = final.model_extra or {}
            charged, remaining = extra["credits_charged"], extra["credits_remaining"]
            assert all("credits_charged" not in (c.model_extra or {}) for c in chunks[:-1])
        request_id = raw.headers["x-request-id"]

    assert charged == credits(expected)
    balance = assert_charged(gw, account.id, account.granted_uc, request_id, expected, model,
                             (prompt_tokens - cached, reply, cached))
    assert remaining == balance["available_credits"]

    [received] = upstream.requests_with(mark)
    body = received["body"]
    assert body["model"] == upstream_name
    assert body["max_tokens"] == sent_max
    assert received["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert account.key not in json.dumps(received)
    if stream:
        assert body["stream"] is True
        assert body["stream_options"]["include_usage"] is True
    else:
        assert "stream_options" not in body


def test_each_request_is_its_own_event(gw: GatewayServer) -> None:
    account = gw.new_account()
    messages = prompt(marker(), "one two three")
    ids = []
    with gw.openai(account.key) as client:
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=messages,
                                                                   max_tokens=5)
            ids.append(raw.headers["x-request-id"])
    each = PRICES["fake-model"].cost_uc(word_prompt_tokens(messages), 5)
    assert len(set(ids)) == 3
    events = gw.events(account.id)
    assert sorted(e["event_id"] for e in events) == sorted(ids)
    assert {e["cost_credits"] for e in events} == {credits(each)}
    balance = gw.balance(account.id)
    assert balance["available_credits"] == credits(account.granted_uc - 3 * each)
    assert balance["held_credits"] == "0"


def test_max_completion_tokens_is_passed_on_and_sent_as_max_tokens_too(gw: GatewayServer,
                                                                          upstream: Upstream) -> None:
    """An upstream that honours only ``max_tokens`` (the default ``max_tokens_param``) still gets
    the cap that was reserved."""
    account = gw.new_account()
    mark = marker()
    messages = prompt(mark)
    with gw.openai(account.key) as client:
        raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=messages,
                                                               max_completion_tokens=9)
    expected = PRICES["fake-model"].cost_uc(word_prompt_tokens(messages), 9)
    assert raw.headers["x-credits-charged"] == credits(expected)
    assert_charged(gw, account.id, account.granted_uc, raw.headers["x-request-id"], expected, "fake-model",
                   (word_prompt_tokens(messages), 9, 0))
    [received] = upstream.requests_with(mark)
    assert received["body"]["max_completion_tokens"] == 9
    assert received["body"]["max_tokens"] == 9


def test_the_larger_of_two_caps_is_reserved_and_sent(gw: GatewayServer, upstream: Upstream) -> None:
    """``max_completion_tokens: 1`` with ``max_tokens: 30``: an upstream honouring either may write
    30 tokens, so 30 are reserved (an account with credits for fewer is refused) and sent."""
    account = gw.new_account()
    mark = marker()
    messages = prompt(mark)
    body = {"model": "fake-model", "messages": messages, "max_completion_tokens": 1, "max_tokens": 30}
    answer = gw.raw_post(account.key, json.dumps(body).encode())
    assert answer.status_code == 200, answer.text
    [received] = upstream.requests_with(mark)
    assert received["body"]["max_tokens"] == 30 and received["body"]["max_completion_tokens"] == 1
    # Reserving 30 output tokens needs more than an account with credits for 1 token has.
    poor = gw.new_account(credits_uc=PRICES["fake-model"].cost_uc(len(json.dumps(body)), 1) + 1)
    refused = gw.raw_post(poor.key, json.dumps(body).encode())
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "insufficient_credits"


def test_json_nulls_mean_the_defaults(gw: GatewayServer, upstream: Upstream) -> None:
    """OpenAI's API takes ``null`` for an optional parameter (``stream``, ``n``, ``max_tokens``,
    ``stream_options`` are all nullable there) and reads it as absent."""
    account = gw.new_account()
    mark = marker()
    messages = prompt(mark)
    answer = gw.raw_post(account.key, json.dumps({
        "model": "fake-model", "messages": messages, "stream": None, "n": None, "max_tokens": None,
        "stream_options": None}).encode())
    assert answer.status_code == 200, answer.text
    expected = PRICES["fake-model"].cost_uc(word_prompt_tokens(messages), UPSTREAM_REPLY_WORDS)
    assert answer.headers["x-credits-charged"] == credits(expected)
    assert upstream.requests_with(mark)[0]["body"]["max_tokens"] == FAKE_MAX_OUTPUT


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_insufficient_credits_answer_402_and_charge_nothing(gw: GatewayServer, upstream: Upstream,
                                                            stream: bool) -> None:
    granted = 4321  # 0.004321 credits; the request may cost 1000 × 10 µc of output alone
    account = gw.new_account(granted)
    mark = marker()
    with gw.openai(account.key) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="fake-model", messages=prompt(mark), max_tokens=1000,
                                       stream=stream)
    error = caught.value
    assert error.status_code == 402
    assert error.code == "insufficient_credits"
    assert "0.004321" in error.message  # what the account has
    assert_nothing_charged(gw, account.id, granted)
    assert upstream.requests_with(mark) == []


def test_402_names_what_is_available_after_earlier_use(gw: GatewayServer) -> None:
    account = gw.new_account(20_000)
    messages = prompt(marker(), "short")
    with gw.openai(account.key) as client:
        raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=messages,
                                                               max_tokens=3)
        left = raw.headers["x-credits-remaining"]
        assert to_uc(left) == 20_000 - PRICES["fake-model"].cost_uc(word_prompt_tokens(messages), 3)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="fake-model", messages=messages, max_tokens=5000)
    assert caught.value.status_code == 402
    assert f"{left} are available" in caught.value.message
    assert len(gw.events(account.id)) == 1
    assert gw.balance(account.id)["held_credits"] == "0"


def test_an_account_in_overage_is_refused_until_it_is_paid(gw: GatewayServer, upstream: Upstream) -> None:
    account = gw.new_account(1_000)
    # 1,000 output tokens of fake-model cost 10,000 µc: 9,000 more than the account has.
    gw.engine.record({"id": f"direct-{account.id}", "account_id": account.id, "model": "fake-model",
                      "output_tokens": 1_000}, now_us())
    assert gw.balance(account.id)["overage_credits"] == credits(9_000)
    mark = marker()
    with gw.openai(account.key) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="fake-model", messages=prompt(mark), max_tokens=1)
    assert caught.value.status_code == 402 and caught.value.code == "insufficient_credits"
    assert credits(9_000) in caught.value.message
    assert len(gw.events(account.id)) == 1
    assert upstream.requests_with(mark) == []


@pytest.mark.parametrize("model", ["no-such-model", "unpriced-chat", "not-served"])
def test_an_unknown_model_answers_404(gw: GatewayServer, upstream: Upstream, model: str) -> None:
    account = gw.new_account()
    mark = marker()
    with gw.openai(account.key) as client, pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=model, messages=prompt(mark))
    assert caught.value.code == "model_not_found"
    assert model in caught.value.message
    assert_nothing_charged(gw, account.id, account.granted_uc)
    assert upstream.requests_with(mark) == []


def test_bad_and_revoked_keys_answer_401(gw: GatewayServer, upstream: Upstream) -> None:
    account = gw.new_account()
    mark = marker()
    with gw.openai("cm_" + "x" * 40) as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="fake-model", messages=prompt(mark))
    with gw.openai("sk-not-a-creditmeter-key") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="fake-model", messages=prompt(mark))
    with gw.openai(account.key) as client:
        client.chat.completions.create(model="fake-model", messages=prompt(mark), max_tokens=2)
        with gw.operator() as op:
            op.post(f"/api/keys/{account.key_id}/revoke").raise_for_status()
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="fake-model", messages=prompt(mark), max_tokens=2)
        assert caught.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert len(gw.events(account.id)) == 1  # only the call made before the key was revoked
    assert len(upstream.requests_with(mark)) == 1


def test_the_operator_key_cannot_call_models(gw: GatewayServer) -> None:
    with gw.openai(ADMIN_KEY) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model="fake-model", messages=prompt(marker()))
        assert caught.value.status_code == 403
        with pytest.raises(openai.PermissionDeniedError) as listed:
            client.models.list()
        assert (listed.value.status_code, listed.value.code) == (403, "account_key_required")


# -- upstream failures -------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "stream", "status", "error_class"), [
    ("fake-500", False, 502, openai.InternalServerError),
    ("fake-500", True, 502, openai.InternalServerError),
    ("fake-hang", False, 502, openai.InternalServerError),
    ("fake-hang", True, 502, openai.InternalServerError),
    ("refused-upstream", False, 502, openai.InternalServerError),
    ("refused-upstream", True, 502, openai.InternalServerError),
    ("wrong-path", False, 502, openai.InternalServerError),
    ("fake-400", False, 400, openai.BadRequestError),
    ("fake-400", True, 400, openai.BadRequestError),
    ("fake-429", False, 429, openai.RateLimitError),
])
def test_an_upstream_failure_releases_the_hold_and_charges_nothing(
        gw: GatewayServer, upstream: Upstream, model: str, stream: bool, status: int,
        error_class: type[openai.APIStatusError]) -> None:
    account = gw.new_account()
    mark = marker()
    started = time.monotonic()
    with gw.openai(account.key) as client, pytest.raises(error_class) as caught:
        client.chat.completions.create(model=model, messages=prompt(mark), stream=stream)
    elapsed = time.monotonic() - started
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and set(caught.value.body) >= {"message", "type", "code"}
    assert_nothing_charged(gw, account.id, account.granted_uc)
    forwarded = upstream.requests_with(mark)
    if model in ("refused-upstream", "wrong-path"):
        assert forwarded == []  # nothing listens there, or nothing answers chat there
    else:
        assert len(forwarded) == 1  # the request did go out, under a hold that was then released
    if model == "fake-hang":
        assert 0.9 < elapsed < 10  # the gateway's timeout_s (1 s), not the upstream's 30 s
    if model == "fake-400":
        assert "context too long" in caught.value.message  # the upstream's reason is passed on


# -- streams that end early --------------------------------------------------------------------


def test_a_client_leaving_mid_stream_is_charged_for_what_was_generated(gw: GatewayServer,
                                                                        upstream: Upstream) -> None:
    account = gw.new_account()
    messages = prompt(marker(), "Count slowly for me")
    read = 4
    got = 0
    with gw.openai(account.key) as client:
        stream = client.chat.completions.create(model="fake-slow", messages=messages, stream=True)
        request_id = stream.response.headers["x-request-id"]
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got += 1
            if got == read:
                break
        stream.close()
    gw.wait_settled(account.id, 1)
    [event] = gw.events(account.id)
    assert event["event_id"] == request_id
    assert read <= event["output_tokens"] < UPSTREAM_REPLY_WORDS
    assert event["input_tokens"] == approx_prompt_tokens(messages)
    assert event["cached_input_tokens"] == 0
    expected = PRICES["fake-slow"].cost_uc(event["input_tokens"], event["output_tokens"])
    assert_charged(gw, account.id, account.granted_uc, request_id, expected, "fake-slow",
                   (approx_prompt_tokens(messages), event["output_tokens"], 0))
    assert event["metadata"]["finish"] == "client_disconnected"


def test_an_upstream_breaking_off_charges_only_what_was_relayed(gw: GatewayServer) -> None:
    account = gw.new_account()
    messages = prompt(marker(), "Tell me a long story")
    request_id, chunks = stream_all(gw, account.key, "fake-break", messages, breaks=True)
    pieces = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert pieces == 3  # the local upstream drops the connection after 3 chunks
    expected = PRICES["fake-break"].cost_uc(approx_prompt_tokens(messages), pieces)
    final = chunks[-1]
    assert final.usage is not None and final.usage.completion_tokens == pieces
    assert (final.model_extra or {})["credits_charged"] == credits(expected)
    assert_charged(gw, account.id, account.granted_uc, request_id, expected, "fake-break",
                   (approx_prompt_tokens(messages), pieces, 0))


def test_a_stream_without_upstream_usage_is_charged_by_count(gw: GatewayServer) -> None:
    account = gw.new_account()
    messages = prompt(marker(), "No usage from this one")
    request_id, chunks = stream_all(gw, account.key, "fake-nousage", messages)
    expected = PRICES["fake-nousage"].cost_uc(approx_prompt_tokens(messages), UPSTREAM_REPLY_WORDS)
    assert (chunks[-1].model_extra or {})["credits_charged"] == credits(expected)
    assert_charged(gw, account.id, account.granted_uc, request_id, expected, "fake-nousage",
                   (approx_prompt_tokens(messages), UPSTREAM_REPLY_WORDS, 0))


def test_a_whole_answer_without_upstream_usage_is_charged_by_count(gw: GatewayServer) -> None:
    account = gw.new_account()
    messages = prompt(marker(), "No usage here either")
    with gw.openai(account.key) as client:
        raw = client.chat.completions.with_raw_response.create(model="fake-nousage", messages=messages)
        text = raw.parse().choices[0].message.content or ""
    [event] = gw.events(account.id)
    assert event["input_tokens"] == approx_prompt_tokens(messages)
    assert event["output_tokens"] >= math.ceil(len(text.encode()) / 4)  # 4 bytes a token, at least
    expected = PRICES["fake-nousage"].cost_uc(event["input_tokens"], event["output_tokens"])
    assert raw.headers["x-credits-charged"] == credits(expected)
    assert_charged(gw, account.id, account.granted_uc, raw.headers["x-request-id"], expected,
                   "fake-nousage", (event["input_tokens"], event["output_tokens"], 0))


def test_a_catalog_loaded_mid_stream_does_not_change_the_charge(upstream: Upstream, tmp_path: Path) -> None:
    """The model loses its price while a stream is running: the request is still charged at the
    prices it was reserved at (SPEC §6: a hold is settled as a whole), and no hold stays open."""
    prices = {"fake-slow": PRICES["fake-slow"], "fake-model": PRICES["fake-model"]}
    own = start_gateway(sqlite_url(tmp_path), tmp_path, prices,
                        {"models": {"fake-slow": upstream_model(upstream.v1)}})
    try:
        account = own.new_account()
        with own.openai(account.key) as client:
            stream = client.chat.completions.create(model="fake-slow", messages=prompt(marker()),
                                                    stream=True)
            next(iter(stream))
            assert own.balance(account.id)["held_credits"] != "0"  # the request's hold
            without = parse_catalog(load_yaml(catalog_yaml({"fake-model": PRICES["fake-model"]})))
            at = now_us()
            own.engine.load_prices(without, at, at)
            chunks = list(stream)
        usage = chunks[-1].usage
        assert usage is not None
        balance = own.balance(account.id)
        assert balance["held_credits"] == "0", balance
        expected = PRICES["fake-slow"].cost_uc(usage.prompt_tokens, usage.completion_tokens)
        assert expected > 0
        assert (chunks[-1].model_extra or {})["credits_charged"] == credits(expected)
        assert balance["available_credits"] == credits(account.granted_uc - expected)
    finally:
        stop_gateway(own)


# -- models and the demo upstream ----------------------------------------------------------------


def test_models_lists_the_configured_and_priced_models(gw: GatewayServer) -> None:
    account = gw.new_account()
    with gw.openai(account.key) as client:
        listed = {m.id: m for m in client.models.list()}
    configured = set(gw.config["gateway"]["models"])
    assert set(listed) == configured & set(PRICES)
    assert {"fake-model", "team-chat", "demo-chat", "refused-upstream"} <= set(listed)
    assert "unpriced-chat" not in listed and "not-served" not in listed
    assert listed["demo-chat"].owned_by == "creditmeter-demo"
    assert {m.owned_by for name, m in listed.items() if name != "demo-chat"} == {"creditmeter"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_demo_upstream_is_charged_from_its_reported_usage(gw: GatewayServer, stream: bool) -> None:
    account = gw.new_account()
    messages = prompt(marker(), "What does the demo upstream say about credits")
    prompt_tokens = word_prompt_tokens(messages)
    with gw.openai(account.key) as client:
        if stream:
            raw = client.chat.completions.with_raw_response.create(model="demo-chat", messages=messages,
                                                                   stream=True)
            chunks = list(raw.parse())
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            usage = chunks[-1].usage
            charged = (chunks[-1].model_extra or {})["credits_charged"]
            assert {c.model for c in chunks} == {"demo-chat"}
        else:
            raw = client.chat.completions.with_raw_response.create(model="demo-chat", messages=messages)
            completion = raw.parse()
            text = completion.choices[0].message.content or ""
            usage = completion.usage
            charged = raw.headers["x-credits-charged"]
            assert completion.model == "demo-chat"
    assert text.startswith("[demo upstream")
    reply = len(text.split())
    assert 0 < reply <= 40
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens, reply)
    expected = PRICES["demo-chat"].cost_uc(prompt_tokens, reply)
    assert charged == credits(expected)
    assert_charged(gw, account.id, account.granted_uc, raw.headers["x-request-id"], expected, "demo-chat",
                   (prompt_tokens, reply, 0))


# -- bad input ---------------------------------------------------------------------------------


def _body(mark: str, **fields: Any) -> bytes:
    return json.dumps({"model": "fake-model", "messages": prompt(mark), **fields}).encode()


@pytest.mark.parametrize(("make", "param"), [
    (lambda m: json.dumps({"model": "fake-model", "note": m}).encode(), "messages"),
    (lambda m: _body(m, messages=[]), "messages"),
    (lambda m: _body(m, max_tokens=-1), "max_tokens"),
    (lambda m: _body(m, max_tokens=2.5), "max_tokens"),
    (lambda m: _body(m, stream="yes"), "stream"),
    (lambda m: _body(m, n=0), "n"),
    (lambda m: _body(m)[:-7], "body"),
    (lambda m: b"[" + _body(m) + b"]", "body"),
    (lambda m: _body(m, messages=[{"role": "user", "content": "hi"}, f"just text {m}"]), "messages[1]"),
    (lambda m: _body(m, messages=[{"content": m}]), "messages[0]"),
], ids=["no-messages", "empty-messages", "negative-max-tokens", "fractional-max-tokens",
        "stream-not-bool", "zero-n", "not-json", "not-an-object", "message-not-an-object",
        "message-without-role"])
def test_bad_input_answers_400_naming_the_param(gw: GatewayServer, upstream: Upstream, make: Any,
                                                param: str) -> None:
    account = gw.new_account()
    mark = marker()
    answer = gw.raw_post(account.key, make(mark))
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and param in error["message"]
    assert error["type"] == "invalid_request_error"
    assert_nothing_charged(gw, account.id, account.granted_uc)
    assert upstream.requests_with(mark) == []


@pytest.mark.parametrize("escaped", [False, True], ids=["plain", "escaped"])
def test_each_image_url_however_escaped_reserves_the_url_allowance(gw: GatewayServer, upstream: Upstream,
                                                                   escaped: bool) -> None:
    """An image given by URL holds ``image_url_tokens`` (1,600) more, once (its ``"type":
    "image_url"`` is no key), whether the client wrote the key plainly or with ``\\u`` escapes."""
    account = gw.new_account(100)
    mark = marker()
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"model": "fake-slow", "max_tokens": 32,
            "messages": [{"role": "user", "content": [{"type": "text", "text": mark}, image]}]}
    raw = json.dumps(body).encode()
    if escaped:
        raw = raw.replace(b'"image_url"', b'"image\\u005furl"')  # the key, and the type's value
        assert json.loads(raw) == body and b'"image_url"' not in raw
    answer = gw.raw_post(account.key, raw)
    assert answer.status_code == 402, answer.text
    expected = PRICES["fake-slow"].cost_uc(len(raw) + 1600, 32)
    assert f"may cost up to {credits(expected)} credits" in answer.json()["error"]["message"]
    assert upstream.requests_with(mark) == []


def test_bad_input_through_the_openai_client(gw: GatewayServer) -> None:
    account = gw.new_account()
    with gw.openai(account.key) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fake-model", messages=prompt(marker()), max_tokens=-1)
    assert caught.value.param == "max_tokens"
    assert_nothing_charged(gw, account.id, account.granted_uc)


def test_a_missing_key_answers_401_in_openais_shape(gw: GatewayServer) -> None:
    answer = httpx2.post(gw.v1 + "/chat/completions", content=_body(marker()), timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    answer = httpx2.get(gw.v1 + "/models", headers=bearer("not-a-key"), timeout=10)
    assert answer.status_code == 401



# -- upstreams that answer oddly -------------------------------------------------------------------


def test_a_200_that_carries_an_error_is_an_upstream_failure(gw: GatewayServer) -> None:
    account = gw.new_account()
    with gw.openai(account.key) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="fake-errorbody", messages=prompt(marker()))
    assert caught.value.status_code == 502
    assert_nothing_charged(gw, account.id, account.granted_uc)
    assert gw.events(account.id) == []


def test_an_error_event_mid_stream_charges_what_was_relayed(gw: GatewayServer) -> None:
    account = gw.new_account()
    messages = prompt(marker())
    request_id, chunks = stream_all(gw, account.key, "fake-errorbody", messages, breaks=True)
    pieces = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert pieces == 2  # the local upstream sends its error after 2 chunks
    expected = PRICES["fake-errorbody"].cost_uc(approx_prompt_tokens(messages), pieces)
    assert_charged(gw, account.id, account.granted_uc, request_id, expected, "fake-errorbody",
                   (approx_prompt_tokens(messages), pieces, 0))
    [event] = gw.events(account.id)
    assert event["metadata"]["finish"] == "upstream_broke_off"


def test_crlf_and_mixed_line_endings_in_odd_pieces_are_relayed_whole(gw: GatewayServer) -> None:
    account = gw.new_account()
    messages = prompt(marker())
    request_id, chunks = stream_all(gw, account.key, "fake-crlf", messages)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == UPSTREAM_REPLY_WORDS
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and usages[0].prompt_tokens == word_prompt_tokens(messages)
    expected = PRICES["fake-crlf"].cost_uc(word_prompt_tokens(messages), UPSTREAM_REPLY_WORDS)
    assert_charged(gw, account.id, account.granted_uc, request_id, expected, "fake-crlf",
                   (word_prompt_tokens(messages), UPSTREAM_REPLY_WORDS, 0))
    [event] = gw.events(account.id)
    assert event["metadata"]["usage"] == "upstream"


def test_usage_beside_the_output_reaches_the_client_once(gw: GatewayServer) -> None:
    account = gw.new_account()
    messages = prompt(marker())
    request_id, chunks = stream_all(gw, account.key, "fake-inline-usage", messages)
    usages = [c for c in chunks if c.usage is not None]
    assert len(usages) == 1 and usages[0] is chunks[-1], usages
    expected = PRICES["fake-inline-usage"].cost_uc(word_prompt_tokens(messages), UPSTREAM_REPLY_WORDS)
    assert (chunks[-1].model_extra or {})["credits_charged"] == credits(expected)
    assert_charged(gw, account.id, account.granted_uc, request_id, expected, "fake-inline-usage",
                   (word_prompt_tokens(messages), UPSTREAM_REPLY_WORDS, 0))
    [event] = gw.events(account.id)
    assert event["metadata"]["usage"] == "upstream"
