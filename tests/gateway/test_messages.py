"""Anthropic's Messages API through the gateway, end to end: the official ``anthropic`` client,
unchanged → a real ``creditmeter serve`` process → the local upstream speaking Messages (a real
HTTP server). Every charge is checked against price × the usage the upstream reported (its record
of each request), at each token kind's own rate."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from tests.api.conftest import ADMIN_KEY, bearer
from tests.gateway.conftest import (
    UPSTREAM_KEY,
    UPSTREAM_REPLY_WORDS,
    GatewayServer,
    Price,
    Upstream,
    anthropic_model,
    closed_port_url,
    credits,
    sqlite_url,
    start_gateway,
    stop_gateway,
    text_tokens,
    to_uc,
    upstream_model,
    words,
)
from tests.gateway.upstream_common import CHUNK_WORDS, reply

PRICES = {
    "claude-plain": Price(input="3", output="15", cached_input="0.3", cache_write="3.75"),
    "claude-cached": Price(input="3", output="15", cached_input="0.3", cache_write="3.75"),
    "claude-nosplit": Price(input="2.9", output="14", cached_input="0.29", cache_write="3.7"),
    "claude-thinking": Price(input="1.1", output="5.5"),
    "claude-priority": Price(input="1.3", output="6.5"),
    "claude-slow": Price(input="0.7", output="3.3"),
    "claude-break": Price(input="0.9", output="4.1"),
    "claude-errorevent": Price(input="1.7", output="6.1"),
    "claude-nulldelta": Price(input="3", output="15", cached_input="0.3", cache_write="3.75"),
    "claude-nostart": Price(input="1.9", output="7.7"),
    "claude-refused": Price(input="1", output="2"),
    "gpt-chat": Price(input="1", output="2"),
    **{f"claude-{status}": Price(input="1", output="2") for status in (400, 401, 429, 500, 529)},
}
UPSTREAM_NAMES = {"claude-plain": "fake-model", "claude-cached": "fake-cached",
                  "claude-nosplit": "fake-cache-nosplit", "claude-thinking": "fake-reasoning",
                  "claude-priority": "fake-priority", "claude-slow": "fake-slow",
                  "claude-break": "fake-break", "claude-errorevent": "fake-errorevent",
                  "claude-nulldelta": "fake-nulldelta", "claude-nostart": "fake-nostart",
                  "claude-unpriced": "fake-model",  # configured, not in the catalog
                  **{f"claude-{s}": f"fake-{s}" for s in (400, 401, 429, 500, 529)}}


@pytest.fixture(scope="module")
def gw(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    directory = tmp_path_factory.mktemp("messages")
    models: dict[str, Any] = {alias: anthropic_model(upstream, upstream_model=name)
                              for alias, name in UPSTREAM_NAMES.items()}
    models["claude-refused"] = {**anthropic_model(upstream), "base_url": closed_port_url()}
    models["gpt-chat"] = upstream_model(upstream.v1, upstream_model="fake-model")
    running = start_gateway(sqlite_url(directory), directory, PRICES, {"models": models})
    yield running
    stop_gateway(running)


def marker() -> str:
    return f"m{uuid.uuid4().hex}"


def ask(mark: str, text: str = "Say hello to the ledger") -> dict[str, Any]:
    return {"system": "You are terse and exact.", "max_tokens": 64,
            "messages": [{"role": "user", "content": f"{text} {mark}"}]}


def prompt_tokens(request: dict[str, Any]) -> int:
    """The local upstream's count of a Messages prompt, all of it (read, written or neither)."""
    return 3 + words(request["system"]) + sum(3 + words(m["content"]) for m in request["messages"])


def reported(upstream: Upstream, mark: str) -> dict[str, Any]:
    """The usage the upstream reported for the one request mentioning ``mark``."""
    [received] = upstream.requests_with(mark)
    assert received["path"] == "/v1/messages"
    return dict(received["usage"])


def price_of(model: str, usage: dict[str, Any]) -> int:
    """µc for Anthropic's usage object: each kind at its rate (1-hour writes at the cache-write
    rate, thinking at the output rate: the catalog's defaults for them)."""
    return PRICES[model].cost_uc(usage["input_tokens"], usage["output_tokens"],
                                 usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"])


def only_event(gw: GatewayServer, account_id: str, request_id: str) -> dict[str, Any]:
    [event] = gw.events(account_id)
    assert event["event_id"] == request_id and event["hold_id"] == request_id
    return event


def assert_balance(gw: GatewayServer, account_id: str, granted_uc: int, charged_uc: int) -> dict[str, Any]:
    balance = gw.balance(account_id)
    assert balance["held_credits"] == "0" and balance["overage_credits"] == "0"
    assert balance["available_credits"] == credits(granted_uc - charged_uc)
    return balance


def assert_nothing_charged(gw: GatewayServer, account_id: str, granted_uc: int) -> None:
    assert_balance(gw, account_id, granted_uc, 0)
    assert gw.events(account_id) == []


# -- charging ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", ["claude-plain", "claude-nosplit"])
def test_a_message_is_charged_price_times_the_upstreams_usage(gw: GatewayServer, upstream: Upstream,
                                                              model: str, stream: bool) -> None:
    account = gw.new_account()
    mark = marker()
    request = ask(mark)
    with gw.anthropic(account.key) as client:
        if stream:
            raw = client.messages.with_raw_response.create(model=model, stream=True, **request)
            assert "x-credits-charged" not in raw.headers
            events = list(raw.parse())
            assert [e.type for e in events[:2]] == ["message_start", "content_block_start"]
            assert [e.type for e in events[-2:]] == ["message_delta", "message_stop"]
            assert events[0].message.model == model  # the client's name for it, not the upstream's
            text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
            extra = events[-2].usage.model_extra or {}
            charged, remaining = extra["credits_charged"], extra["credits_remaining"]
            assert all("credits_charged" not in str(e.to_dict()) for e in events[:-2])
        else:
            raw = client.messages.with_raw_response.create(model=model, **request)
            message = raw.parse()
            assert message.model == model and message.stop_reason == "end_turn"
            text = message.content[0].text  # type: ignore[union-attr]
            charged, remaining = raw.headers["x-credits-charged"], raw.headers["x-credits-remaining"]
        request_id = raw.headers["x-request-id"]
    assert words(text) == UPSTREAM_REPLY_WORDS
    usage = reported(upstream, mark)
    total = usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    assert total == prompt_tokens(request)
    if model == "claude-nosplit":
        assert usage["cache_read_input_tokens"] > 0 and usage["cache_creation_input_tokens"] > 0
    expected = price_of(model, usage)
    assert charged == credits(expected)
    assert remaining == assert_balance(gw, account.id, account.granted_uc, expected)["available_credits"]
    event = only_event(gw, account.id, request_id)
    assert (event["model"], event["input_tokens"], event["output_tokens"], event["cached_input_tokens"],
            event["cache_write_tokens"]) == (model, usage["input_tokens"], UPSTREAM_REPLY_WORDS,
                                             usage["cache_read_input_tokens"],
                                             usage["cache_creation_input_tokens"])
    assert event["cost_credits"] == credits(expected)


@pytest.mark.parametrize("model", ["claude-cached", "claude-thinking", "claude-priority"])
def test_one_hour_cache_writes_thinking_and_the_tier_are_stated_apart(gw: GatewayServer, upstream: Upstream,
                                                                      model: str) -> None:
    account = gw.new_account()
    mark = marker()
    with gw.anthropic(account.key) as client:
        raw = client.messages.with_raw_response.create(model=model, **ask(mark))
    usage = reported(upstream, mark)
    event = only_event(gw, account.id, raw.headers["x-request-id"])
    if "reasoning_tokens" not in event:
        pytest.skip("usage events do not carry reasoning, 1-hour cache writes or the tier yet")
    hour = usage.get("cache_creation", {}).get("ephemeral_1h_input_tokens", 0)
    thinking = usage.get("output_tokens_details", {}).get("thinking_tokens", 0)
    assert (hour, thinking, usage["service_tier"]) == {
        "claude-cached": (hour, 0, "standard"), "claude-thinking": (0, 8, "standard"),
        "claude-priority": (0, 0, "priority")}[model]
    assert hour > 0 or model != "claude-cached"
    assert event["cache_write_1h_tokens"] == hour
    assert event["cache_write_tokens"] == usage["cache_creation_input_tokens"] - hour
    assert event["reasoning_tokens"] == thinking
    assert event["output_tokens"] == usage["output_tokens"] - thinking
    assert event["service_tier"] == ("priority" if model == "claude-priority" else "standard")
    assert raw.headers["x-credits-charged"] == event["cost_credits"]


def test_the_stream_passes_thinking_blocks_and_counts_them_as_output(gw: GatewayServer,
                                                                     upstream: Upstream) -> None:
    account = gw.new_account()
    mark = marker()
    with gw.anthropic(account.key) as client, \
            client.messages.stream(model="claude-thinking", **ask(mark)) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text"]
    usage = reported(upstream, mark)
    assert final.usage.output_tokens == usage["output_tokens"] == UPSTREAM_REPLY_WORDS + 8
    gw.wait_settled(account.id, 1)
    [event] = gw.events(account.id)
    if "reasoning_tokens" not in event:
        pytest.skip("usage events do not carry reasoning tokens yet")
    assert (event["output_tokens"], event["reasoning_tokens"]) == (UPSTREAM_REPLY_WORDS, 8)
    assert event["cost_credits"] == credits(price_of("claude-thinking", usage))


def test_the_key_may_come_as_a_bearer_token_and_headers_pass_on(gw: GatewayServer,
                                                                 upstream: Upstream) -> None:
    account = gw.new_account()
    mark = marker()
    beta = "interleaved-thinking-2025-05-14"
    with anthropic.Anthropic(base_url=gw.server.base_url, auth_token=account.key, max_retries=0) as client:
        raw = client.beta.messages.with_raw_response.create(model="claude-plain", betas=[beta],
                                                            **ask(mark))  # type: ignore[arg-type]
    sent = raw.http_response.request.headers
    assert sent["authorization"] == f"Bearer {account.key}" and "x-api-key" not in sent
    [received] = upstream.requests_with(mark)
    assert received["x_api_key"] == UPSTREAM_KEY and received["authorization"] == ""
    assert received["anthropic_beta"] == beta
    assert received["anthropic_version"] == sent["anthropic-version"]
    assert account.key not in str(received)
    # Without an anthropic-version header, the gateway names one (the upstream requires it); the
    # query of Anthropic's beta route (as Claude Code calls it) is passed on.
    mark = marker()
    answer = httpx2.post(gw.server.base_url + "/v1/messages?beta=true",
                         json={"model": "claude-plain", **ask(mark)}, headers={"x-api-key": account.key},
                         timeout=30)
    assert answer.status_code == 200, answer.text
    [received] = upstream.requests_with(mark)
    assert (received["anthropic_version"], received["query"]) == ("2023-06-01", "beta=true")
    assert len(gw.events(account.id)) == 2


# -- count_tokens ------------------------------------------------------------------------------


def test_count_tokens_is_free_but_needs_a_key_and_a_known_model(gw: GatewayServer,
                                                                 upstream: Upstream) -> None:
    account = gw.new_account()
    mark = marker()
    request = ask(mark)
    del request["max_tokens"]
    with gw.anthropic(account.key) as client:
        counted = client.messages.count_tokens(model="claude-cached", **request)
        with pytest.raises(anthropic.NotFoundError):
            client.messages.count_tokens(model="no-such-model", **request)
    assert counted.input_tokens == prompt_tokens(request)
    [received] = upstream.requests_with(mark)
    assert received["path"] == "/v1/messages/count_tokens" and received["body"]["model"] == "fake-cached"
    assert_nothing_charged(gw, account.id, account.granted_uc)
    with gw.anthropic("cm_" + "x" * 40) as client, pytest.raises(anthropic.AuthenticationError):
        client.messages.count_tokens(model="claude-cached", **request)


def test_count_tokens_answers_404_for_a_model_the_catalog_does_not_price(gw: GatewayServer,
                                                                          upstream: Upstream) -> None:
    """As ``/v1/messages`` does: a configured model is served once it is priced."""
    account = gw.new_account()
    mark = marker()
    request = ask(mark)
    with gw.anthropic(account.key) as client:
        with pytest.raises(anthropic.NotFoundError) as counted:
            client.messages.count_tokens(model="claude-unpriced", messages=request["messages"])
        with pytest.raises(anthropic.NotFoundError) as created:
            client.messages.create(model="claude-unpriced", **request)
    for caught in (counted, created):
        assert caught.value.body == {"type": "error", "error": {
            "type": "not_found_error", "message": "The model 'claude-unpriced' has no price in the catalog"}}
    assert upstream.requests_with(mark) == []
    assert_nothing_charged(gw, account.id, account.granted_uc)


# -- refusals and failures ---------------------------------------------------------------------


def test_bad_keys_and_the_operators_key_are_refused(gw: GatewayServer) -> None:
    with gw.anthropic("cm_" + "x" * 40) as client, pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model="claude-plain", **ask(marker()))
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with gw.anthropic(ADMIN_KEY) as client, pytest.raises(anthropic.PermissionDeniedError) as denied:
        client.messages.create(model="claude-plain", **ask(marker()))
    assert denied.value.body == {"type": "error", "error": {
        "type": "permission_error", "message": "the gateway charges an account: call it with an account key"}}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_insufficient_credits_answer_402(gw: GatewayServer, upstream: Upstream, stream: bool) -> None:
    account = gw.new_account(4321)  # 1,000 output tokens alone may cost 15,000 µc
    mark = marker()
    with gw.anthropic(account.key) as client, pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-plain", stream=stream, **{**ask(mark), "max_tokens": 1000})
    assert caught.value.status_code == 402
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "insufficient_credits" and "0.004321" in error["message"]
    assert_nothing_charged(gw, account.id, account.granted_uc)
    assert upstream.requests_with(mark) == []


@pytest.mark.parametrize(("model", "stream", "error_class", "status"), [
    ("no-such-model", False, anthropic.NotFoundError, 404),
    ("gpt-chat", False, anthropic.BadRequestError, 400),
    ("claude-500", False, anthropic.InternalServerError, 502),
    ("claude-500", True, anthropic.InternalServerError, 502),
    ("claude-401", False, anthropic.InternalServerError, 502),  # the gateway's own upstream key is wrong
    ("claude-refused", True, anthropic.InternalServerError, 502),
    ("claude-400", False, anthropic.BadRequestError, 400),
    ("claude-429", False, anthropic.RateLimitError, 429),
    ("claude-529", True, anthropic.OverloadedError, 529),
])
def test_errors_arrive_as_the_clients_own_exceptions(
        gw: GatewayServer, upstream: Upstream, model: str, stream: bool,
        error_class: type[anthropic.APIStatusError], status: int) -> None:
    account = gw.new_account()
    mark = marker()
    with gw.anthropic(account.key) as client, pytest.raises(error_class) as caught:
        client.messages.create(model=model, stream=stream, **ask(mark))
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert_nothing_charged(gw, account.id, account.granted_uc)
    if model == "gpt-chat":
        assert "OpenAI API" in body["error"]["message"]  # which protocol serves it
    if model == "claude-400":
        assert "context too long" in body["error"]["message"]


def test_bad_input_answers_400_in_anthropics_shape(gw: GatewayServer, upstream: Upstream) -> None:
    account = gw.new_account()
    mark = marker()
    headers = {"x-api-key": account.key, "anthropic-version": "2023-06-01"}
    for body, field in (({"messages": [{"role": "user", "content": mark}]}, "max_tokens"),
                        ({"max_tokens": 0, "messages": [{"role": "user"}]}, "max_tokens"),
                        ({"max_tokens": 5, "messages": []}, "messages"),
                        ({"max_tokens": 5, "messages": [mark]}, "messages[0]")):
        answer = httpx2.post(gw.server.base_url + "/v1/messages", json={"model": "claude-plain", **body},
                             headers=headers, timeout=10)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"].startswith(field + ":")
    missing = httpx2.post(gw.server.base_url + "/v1/messages", json={"model": "claude-plain"}, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert_nothing_charged(gw, account.id, account.granted_uc)
    assert upstream.requests_with(mark) == []


def test_a_messages_model_through_chat_completions_is_refused(gw: GatewayServer) -> None:
    account = gw.new_account()
    with gw.openai(account.key) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude-plain", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "wrong_api" and "/v1/messages" in caught.value.message
    assert_nothing_charged(gw, account.id, account.granted_uc)


# -- streams that end early --------------------------------------------------------------------


def test_a_client_leaving_mid_stream_is_charged_for_what_was_generated(gw: GatewayServer,
                                                                        upstream: Upstream) -> None:
    account = gw.new_account()
    mark = marker()
    got: list[str] = []
    with gw.anthropic(account.key) as client:
        stream = client.messages.create(model="claude-slow", stream=True, **ask(mark, "Count slowly"))
        for event in stream:
            if event.type == "content_block_delta":
                got.append(event.delta.text)  # type: ignore[union-attr]
            if len(got) == 4:
                break
        stream.close()
    gw.wait_settled(account.id, 1)
    [event] = gw.events(account.id)
    # Each delta at 4 bytes a token: what the client got, or a little more (what was on its way).
    whole = [word if i == 0 else " " + word for i, word in enumerate(reply(None))]
    assert text_tokens(got) == text_tokens(whole[:4]) <= event["output_tokens"] < text_tokens(whole)
    assert event["input_tokens"] == reported(upstream, mark)["input_tokens"]  # message_start's count
    assert event["metadata"]["finish"] == "client_disconnected"
    expected = PRICES["claude-slow"].cost_uc(event["input_tokens"], event["output_tokens"])
    assert event["cost_credits"] == credits(expected)
    assert_balance(gw, account.id, account.granted_uc, expected)


@pytest.mark.parametrize(("model", "pieces"), [("claude-break", 3), ("claude-errorevent", 2)])
def test_a_stream_that_fails_upstream_charges_what_was_relayed(gw: GatewayServer, upstream: Upstream,
                                                                model: str, pieces: int) -> None:
    account = gw.new_account()
    mark = marker()
    events: list[Any] = []
    with gw.anthropic(account.key) as client, pytest.raises(anthropic.APIStatusError) as caught:
        for event in client.messages.create(model=model, stream=True, **ask(mark)):
            events.append(event)
    assert "broke off" in str(caught.value)
    # An upstream's overloaded_error stays one (the client may retry); a broken stream is api_error.
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == ("overloaded_error" if model == "claude-errorevent" else "api_error")
    assert ("Overloaded" in error["message"]) == (model == "claude-errorevent")
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert len(deltas) == pieces
    output = text_tokens(deltas)  # each delta at 4 bytes a token
    assert output > pieces
    expected = PRICES[model].cost_uc(reported(upstream, mark)["input_tokens"], output)
    final = events[-1]
    assert final.type == "message_delta" and final.usage.output_tokens == output
    assert (final.usage.model_extra or {})["credits_charged"] == credits(expected)
    gw.wait_settled(account.id, 1)
    [event] = gw.events(account.id)
    assert event["metadata"]["finish"] == "upstream_broke_off"
    assert event["cost_credits"] == credits(expected)


# -- models ------------------------------------------------------------------------------------


def test_models_list_the_messages_models_for_anthropics_client(gw: GatewayServer) -> None:
    account = gw.new_account()
    with gw.anthropic(account.key) as client:
        listed = list(client.models.list())
        first = client.models.list(limit=2)
        one = client.models.retrieve("claude-cached")
        with pytest.raises(anthropic.NotFoundError):
            client.models.retrieve("gpt-chat")
    assert [m.id for m in listed] == sorted(set(PRICES) - {"gpt-chat"})
    assert {m.type for m in listed} == {"model"} and one.display_name == "claude-cached"
    assert [m.id for m in first.data] == [m.id for m in listed[:2]] and first.has_more
    with gw.openai(account.key) as client:
        assert [m.id for m in client.models.list()] == ["gpt-chat"]
    answer = httpx2.get(gw.v1 + "/models", headers={**bearer(account.key), "anthropic-version": "2023-06-01"},
                        timeout=10)
    assert answer.json()["first_id"] == listed[0].id and answer.json()["last_id"] == listed[-1].id
    assert to_uc(gw.balance(account.id)["available_credits"]) == account.granted_uc


# -- usage the upstream states oddly -----------------------------------------------------------


def test_nulls_and_odd_counts_in_message_delta_leave_message_starts_counts(gw: GatewayServer,
                                                                         upstream: Upstream) -> None:
    """A message_delta's usage may have nulls (the input and cache fields are optional there) or a
    count that is not a whole number beside its output count: the output count is taken, the
    rest stays as message_start counted it."""
    account = gw.new_account()
    mark = marker()
    with gw.anthropic(account.key) as client:
        events = list(client.messages.create(model="claude-nulldelta", stream=True, **ask(mark)))
    usage = reported(upstream, mark)
    assert usage["cache_read_input_tokens"] > 0 and usage["cache_creation_input_tokens"] > 0
    assert usage["output_tokens"] == UPSTREAM_REPLY_WORDS
    expected = price_of("claude-nulldelta", usage)
    final = events[-2]
    assert final.type == "message_delta" and final.usage.input_tokens is None
    assert final.usage.output_tokens == UPSTREAM_REPLY_WORDS
    assert (final.usage.model_extra or {})["credits_charged"] == credits(expected)
    gw.wait_settled(account.id, 1)
    [event] = gw.events(account.id)
    assert (event["input_tokens"], event["cached_input_tokens"], event["output_tokens"]) == (
        usage["input_tokens"], usage["cache_read_input_tokens"], UPSTREAM_REPLY_WORDS)
    assert event["metadata"] == {**event["metadata"], "usage": "upstream", "finish": "complete"}
    assert event["cost_credits"] == credits(expected)


def test_a_stream_without_message_start_is_charged_its_deltas_output_count(gw: GatewayServer,
                                                                          upstream: Upstream) -> None:
    """No message_start: the output is message_delta's count (not one token a delta), the prompt
    approximated from the request's text at 4 bytes a token."""
    account = gw.new_account()
    mark = marker()
    request = ask(mark)
    with gw.anthropic(account.key) as client:
        events = list(client.messages.create(model="claude-nostart", stream=True, **request))
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert len(deltas) == UPSTREAM_REPLY_WORDS // CHUNK_WORDS
    assert reported(upstream, mark)["output_tokens"] == UPSTREAM_REPLY_WORDS
    # The system prompt, the messages and the tools (none) as compact JSON, 4 bytes a token.
    text = json.dumps([request["system"], request["messages"], None], separators=(",", ":"))
    prompt = math.ceil(len(text.encode()) / 4)
    expected = PRICES["claude-nostart"].cost_uc(prompt, UPSTREAM_REPLY_WORDS)
    assert events[-2].type == "message_delta" and events[-2].usage.output_tokens == UPSTREAM_REPLY_WORDS
    gw.wait_settled(account.id, 1)
    [event] = gw.events(account.id)
    assert (event["input_tokens"], event["output_tokens"]) == (prompt, UPSTREAM_REPLY_WORDS)
    assert event["metadata"]["usage"] == "counted" and event["metadata"]["finish"] == "complete"
    assert event["cost_credits"] == credits(expected)


@pytest.mark.parametrize("escaped", [False, True], ids=["plain", "escaped"])
def test_each_url_key_however_escaped_reserves_the_url_allowance(gw: GatewayServer, upstream: Upstream,
                                                                 escaped: bool) -> None:
    """An image given by URL holds ``image_url_tokens`` (1,600) more, once (its ``"type": "url"``
    is no key), whether the client wrote the key ``url`` plainly or as ``"\\u0075rl"``."""
    account = gw.new_account(100)
    mark = marker()
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    body = {"model": "claude-slow", "max_tokens": 64,
            "messages": [{"role": "user", "content": [image, {"type": "text", "text": mark}]}]}
    raw = orjson.dumps(body)
    if escaped:
        raw = raw.replace(b'"url"', b'"\\u0075rl"')  # the key, and the type's value
        assert orjson.loads(raw) == body and b'"url"' not in raw
    answer = httpx2.post(gw.server.base_url + "/v1/messages", content=raw, timeout=10,
                         headers={"x-api-key": account.key, "content-type": "application/json"})
    assert answer.status_code == 402, answer.text
    expected = PRICES["claude-slow"].cost_uc(len(raw) + 1600, 64)
    assert f"may cost up to {credits(expected)} credits" in answer.json()["error"]["message"]
    assert upstream.requests_with(mark) == []
