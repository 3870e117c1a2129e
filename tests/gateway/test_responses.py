"""OpenAI's Responses API and embeddings through the gateway, end to end: the official ``openai``
client, unchanged → a real ``creditmeter serve`` process → the local upstream (a real HTTP
server). Every charge is checked against price × the usage the upstream reported (its record of
each request), at each token kind's own rate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest

from tests.api.conftest import bearer
from tests.gateway.conftest import (
    UPSTREAM_KEY,
    UPSTREAM_REPLY_WORDS,
    GatewayServer,
    Price,
    Upstream,
    anthropic_model,
    credits,
    sqlite_url,
    start_gateway,
    stop_gateway,
    text_tokens,
    upstream_model,
    words,
)
from tests.gateway.upstream_common import reply

PRICES = {
    "resp-plain": Price(input="2.5", output="10", cached_input="1.25"),
    "resp-cached": Price(input="2.5", output="10", cached_input="1.25"),
    "resp-reasoning": Price(input="1.1", output="4.4"),
    "resp-priority": Price(input="1.3", output="5.2"),
    "resp-slow": Price(input="0.7", output="3.3"),
    "resp-break": Price(input="0.9", output="4.1"),
    "resp-errorevent": Price(input="1.7", output="6.1"),
    "resp-noend": Price(input="1.3", output="4.7"),
    "resp-tiered": Price(input="1.25", output="10", priority=Price(input="2.5", output="20")),
    "resp-500": Price(input="1", output="2"),
    "resp-400": Price(input="1", output="2"),
    "resp-429": Price(input="1", output="2"),
    "embed": Price(input="0.13", output="0"),
    "embed-500": Price(input="0.13", output="0"),
    "claude-only": Price(input="1", output="2"),
    "demo-chat": Price(input="1", output="2"),
}
MAX_OUTPUT = 48  # resp-plain's configured default cap


@pytest.fixture(scope="module")
def gw(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    directory = tmp_path_factory.mktemp("responses")
    names = {"resp-plain": "fake-model", "resp-cached": "fake-cached", "resp-reasoning": "fake-reasoning",
             "resp-priority": "fake-priority", "resp-slow": "fake-slow", "resp-break": "fake-break",
             "resp-errorevent": "fake-errorevent", "resp-noend": "fake-noend", "resp-500": "fake-500",
             "resp-400": "fake-400", "resp-tiered": "fake-model",
             "resp-429": "fake-429", "embed": "fake-model", "embed-500": "fake-500"}
    models: dict[str, Any] = {alias: upstream_model(upstream.v1, upstream_model=name)
                              for alias, name in names.items()}
    models["resp-plain"]["max_output_tokens"] = MAX_OUTPUT
    models["claude-only"] = anthropic_model(upstream)
    models["demo-chat"] = {"base_url": "demo"}
    running = start_gateway(sqlite_url(directory), directory, PRICES, {"models": models})
    yield running
    stop_gateway(running)


def marker() -> str:
    return f"m{uuid.uuid4().hex}"


def ask(mark: str) -> dict[str, Any]:
    return {"instructions": "Be terse.",
            "input": [{"role": "user", "content": f"Say hello to the ledger {mark}"}]}


def reported(upstream: Upstream, mark: str, path: str = "/v1/responses") -> dict[str, Any]:
    [received] = upstream.requests_with(mark)
    assert received["path"] == path and received["authorization"] == f"Bearer {UPSTREAM_KEY}"
    return received


def price_of(model: str, usage: dict[str, Any]) -> int:
    """µc for a Responses usage object: cached tokens at the cached rate, the rest of the input at
    the input rate, all of the output (reasoning too) at the output rate."""
    cached = usage["input_tokens_details"]["cached_tokens"]
    return PRICES[model].cost_uc(usage["input_tokens"] - cached, usage["output_tokens"], cached)


def charged_once(gw: GatewayServer, account_id: str, granted_uc: int, request_id: str,
                 expected_uc: int) -> dict[str, Any]:
    gw.wait_settled(account_id, 1)
    [event] = gw.events(account_id)
    assert event["event_id"] == request_id and event["cost_credits"] == credits(expected_uc)
    balance = gw.balance(account_id)
    assert balance["available_credits"] == credits(granted_uc - expected_uc)
    assert balance["held_credits"] == "0" and balance["overage_credits"] == "0"
    return event


def assert_nothing_charged(gw: GatewayServer, account_id: str, granted_uc: int) -> None:
    balance = gw.balance(account_id)
    assert balance["available_credits"] == credits(granted_uc) and balance["held_credits"] == "0"
    assert gw.events(account_id) == []


# -- Responses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", ["resp-plain", "resp-cached"])
def test_a_response_is_charged_price_times_the_upstreams_usage(gw: GatewayServer, upstream: Upstream,
                                                               model: str, stream: bool) -> None:
    account = gw.new_account()
    mark = marker()
    with gw.openai(account.key) as client:
        if stream:
            raw = client.responses.with_raw_response.create(model=model, stream=True, **ask(mark))
            assert "x-credits-charged" not in raw.headers
            events = list(raw.parse())
            assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
            assert events[-1].type == "response.completed"
            assert {e.response.model for e in events if hasattr(e, "response")} == {model}
            text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            usage = events[-1].response.usage
            assert usage is not None
            extra = usage.model_extra or {}
            charged, remaining = extra["credits_charged"], extra["credits_remaining"]
        else:
            raw = client.responses.with_raw_response.create(model=model, **ask(mark))
            response = raw.parse()
            assert response.model == model and response.status == "completed"
            text = response.output_text
            charged, remaining = raw.headers["x-credits-charged"], raw.headers["x-credits-remaining"]
    assert words(text) == UPSTREAM_REPLY_WORDS
    received = reported(upstream, mark)
    usage = received["usage"]
    cached = usage["input_tokens_details"]["cached_tokens"]
    assert (cached > 0) == (model == "resp-cached")
    expected = price_of(model, usage)
    event = charged_once(gw, account.id, account.granted_uc, raw.headers["x-request-id"], expected)
    assert charged == credits(expected) and remaining == gw.balance(account.id)["available_credits"]
    assert (event["input_tokens"], event["cached_input_tokens"], event["output_tokens"]) == (
        usage["input_tokens"] - cached, cached, UPSTREAM_REPLY_WORDS)
    # No cap asked: the model's default is reserved and sent, so the upstream cannot write more.
    assert received["body"]["max_output_tokens"] == (MAX_OUTPUT if model == "resp-plain" else 4096)
    assert received["body"]["model"] == ("fake-model" if model == "resp-plain" else "fake-cached")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_reply_cut_by_its_cap_is_charged_and_ends_incomplete(gw: GatewayServer, upstream: Upstream,
                                                              stream: bool) -> None:
    account = gw.new_account()
    mark = marker()
    with gw.openai(account.key) as client:
        raw = client.responses.with_raw_response.create(model="resp-plain", max_output_tokens=7,
                                                        stream=stream, **ask(mark))
        parsed = raw.parse()
        if stream:
            last = list(parsed)[-1]  # type: ignore[call-overload]
            assert last.type == "response.incomplete"
            charged = last.response.usage.model_extra["credits_charged"]
        else:
            assert parsed.status == "incomplete"  # type: ignore[union-attr]
            charged = raw.headers["x-credits-charged"]
    usage = reported(upstream, mark)["usage"]
    assert usage["output_tokens"] == 7
    expected = price_of("resp-plain", usage)
    assert charged == credits(expected)
    charged_once(gw, account.id, account.granted_uc, raw.headers["x-request-id"], expected)


@pytest.mark.parametrize("model", ["resp-reasoning", "resp-priority"])
def test_reasoning_and_the_service_tier_are_read(gw: GatewayServer, upstream: Upstream, model: str) -> None:
    account = gw.new_account()
    mark = marker()
    with gw.openai(account.key) as client:
        events = list(client.responses.create(model=model, stream=True, **ask(mark)))
    usage = reported(upstream, mark)["usage"]
    reasoning = usage["output_tokens_details"]["reasoning_tokens"]
    assert (reasoning > 0) == (model == "resp-reasoning")
    assert events[-1].response.service_tier == ("priority" if model == "resp-priority" else "default")
    gw.wait_settled(account.id, 1)
    [event] = gw.events(account.id)
    if "reasoning_tokens" not in event:
        pytest.skip("usage events do not carry reasoning tokens or the tier yet")
    assert event["output_tokens"] == usage["output_tokens"] - reasoning
    assert event["reasoning_tokens"] == reasoning
    assert event["service_tier"] == ("priority" if model == "resp-priority" else "standard")
    assert event["cost_credits"] == events[-1].response.usage.model_extra["credits_charged"]


def test_a_client_leaving_mid_stream_is_charged_for_what_was_generated(gw: GatewayServer,
                                                                        upstream: Upstream) -> None:
    account = gw.new_account()
    mark = marker()
    got: list[str] = []
    with gw.openai(account.key) as client:
        stream = client.responses.create(model="resp-slow", stream=True, **ask(mark))
        for event in stream:
            if event.type == "response.output_text.delta":
                got.append(event.delta)
            if len(got) == 4:
                break
        stream.close()
    gw.wait_settled(account.id, 1)
    [event] = gw.events(account.id)
    # Each delta at 4 bytes a token: what the client got, or a little more (what was on its way).
    whole = [word if i == 0 else " " + word for i, word in enumerate(reply(None))]
    assert text_tokens(got) == text_tokens(whole[:4]) <= event["output_tokens"] < text_tokens(whole)
    assert event["input_tokens"] > 0 and event["metadata"]["finish"] == "client_disconnected"
    assert event["cost_credits"] == credits(PRICES["resp-slow"].cost_uc(event["input_tokens"],
                                                                        event["output_tokens"]))


@pytest.mark.parametrize(("model", "pieces"), [("resp-break", 3), ("resp-errorevent", 2)])
def test_a_stream_that_fails_upstream_ends_failed_and_charges_what_was_relayed(
        gw: GatewayServer, model: str, pieces: int) -> None:
    account = gw.new_account()
    with gw.openai(account.key) as client:
        raw = client.responses.with_raw_response.create(model=model, stream=True, **ask(marker()))
        events = list(raw.parse())
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == pieces
    last = events[-1]
    assert last.type == "response.failed" and "broke off" in last.response.error.message
    usage = last.response.usage
    output = text_tokens(deltas)  # each delta at 4 bytes a token
    assert usage.output_tokens == output > pieces
    expected = PRICES[model].cost_uc(usage.input_tokens, output)
    event = charged_once(gw, account.id, account.granted_uc, raw.headers["x-request-id"], expected)
    assert usage.model_extra["credits_charged"] == event["cost_credits"]
    assert event["metadata"]["finish"] == "upstream_broke_off"


@pytest.mark.parametrize(("model", "error_class", "status"), [
    ("no-such-model", openai.NotFoundError, 404),
    ("claude-only", openai.BadRequestError, 400),
    ("demo-chat", openai.BadRequestError, 400),
    ("resp-500", openai.InternalServerError, 502),
    ("resp-400", openai.BadRequestError, 400),
    ("resp-429", openai.RateLimitError, 429),
])
def test_response_errors_arrive_as_the_clients_own_exceptions(gw: GatewayServer, model: str,
                                                              error_class: type[openai.APIStatusError],
                                                              status: int) -> None:
    account = gw.new_account()
    with gw.openai(account.key) as client, pytest.raises(error_class) as caught:
        client.responses.create(model=model, **ask(marker()))
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and set(caught.value.body) >= {"message", "type", "code"}
    if model == "claude-only":
        assert "/v1/messages" in caught.value.message
    assert_nothing_charged(gw, account.id, account.granted_uc)


def test_responses_refuse_bad_keys_short_credits_and_bad_input(gw: GatewayServer, upstream: Upstream) -> None:
    mark = marker()
    with gw.openai("cm_" + "x" * 40) as client, pytest.raises(openai.AuthenticationError):
        client.responses.create(model="resp-plain", **ask(mark))
    poor = gw.new_account(100)  # a request may cost 480 µc of output alone
    with gw.openai(poor.key) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.responses.create(model="resp-plain", **ask(mark))
        assert (caught.value.status_code, caught.value.code) == (402, "insufficient_credits")
        with pytest.raises(openai.BadRequestError) as bad:
            client.responses.create(model="resp-plain", input=[], max_output_tokens=0)
        assert bad.value.param == "max_output_tokens"
        with pytest.raises(openai.BadRequestError) as bad:
            client.responses.create(model="resp-plain", input=7)  # type: ignore[arg-type]
        assert bad.value.param == "input"
    assert_nothing_charged(gw, poor.id, poor.granted_uc)
    assert upstream.requests_with(mark) == []


def test_a_stream_that_ends_without_its_final_event_says_so_and_is_recorded_so(gw: GatewayServer) -> None:
    """The upstream ended its stream cleanly without ``response.completed``: the client is told
    that (not that it broke off), and the event records the response as not completed."""
    account = gw.new_account()
    with gw.openai(account.key) as client:
        raw = client.responses.with_raw_response.create(model="resp-noend", stream=True, **ask(marker()))
        events = list(raw.parse())
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == UPSTREAM_REPLY_WORDS
    last = events[-1]
    assert last.type == "response.failed" and last.response.status == "failed"
    assert last.response.error.message == ("the upstream's stream ended without its final event; "
                                           "what was sent was charged")
    usage = last.response.usage
    assert usage.output_tokens == text_tokens(deltas)
    expected = PRICES["resp-noend"].cost_uc(usage.input_tokens, usage.output_tokens)
    event = charged_once(gw, account.id, account.granted_uc, raw.headers["x-request-id"], expected)
    assert usage.model_extra["credits_charged"] == event["cost_credits"]
    assert (event["metadata"]["finish"], event["metadata"]["usage"]) == ("upstream_broke_off", "counted")


@pytest.mark.parametrize("background", [True, "yes"])
def test_background_responses_are_refused(gw: GatewayServer, upstream: Upstream, background: Any) -> None:
    """An upstream answers a background request at once, queued, with no usage: it is refused
    rather than charged for nothing."""
    account = gw.new_account()
    mark = marker()
    with gw.openai(account.key) as client, pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="resp-plain", background=background, **ask(mark))
    assert (caught.value.param, caught.value.code) == ("background", "invalid_value")
    assert caught.value.body["message"].startswith("background: ")  # type: ignore[index]
    assert_nothing_charged(gw, account.id, account.granted_uc)
    assert upstream.requests_with(mark) == []
    with gw.openai(account.key) as client:  # background false is the default: served
        client.responses.create(model="resp-plain", background=False, **ask(mark))
    assert len(upstream.requests_with(mark)) == 1


@pytest.mark.parametrize("escaped", [False, True], ids=["plain", "escaped"])
def test_each_url_key_however_escaped_reserves_the_url_allowance(gw: GatewayServer, upstream: Upstream,
                                                                 escaped: bool) -> None:
    """An image or file given by URL (``image_url``, ``file_url``) holds ``image_url_tokens``
    (1,600) more each, whether the client wrote the key plainly or with ``\\u`` escapes."""
    account = gw.new_account(100)
    mark = marker()
    content = [{"type": "input_text", "text": mark},
               {"type": "input_image", "image_url": "https://example.com/cat.png"},
               {"type": "input_file", "file_url": "https://example.com/report.pdf"}]
    body = {"model": "resp-slow", "max_output_tokens": 32, "input": [{"role": "user", "content": content}]}
    raw = orjson.dumps(body)
    if escaped:
        raw = raw.replace(b'"image_url":', b'"\\u0069mage_url":')
        raw = raw.replace(b'"file_url":', b'"file\\u005furl":')
        assert orjson.loads(raw) == body and b'"image_url"' not in raw and b'"file_url"' not in raw
    answer = httpx2.post(gw.v1 + "/responses", content=raw, timeout=10,
                         headers={**bearer(account.key), "content-type": "application/json"})
    assert answer.status_code == 402, answer.text
    expected = PRICES["resp-slow"].cost_uc(len(raw) + 2 * 1600, 32)
    assert f"may cost up to {credits(expected)} credits" in answer.json()["error"]["message"]
    assert upstream.requests_with(mark) == []


@pytest.mark.parametrize("path", ["/responses", "/chat/completions"])
@pytest.mark.parametrize("tier", ["auto", "priority"])
def test_a_priority_request_holds_at_priority_rates(gw: GatewayServer, upstream: Upstream, path: str,
                                                    tier: str) -> None:
    account = gw.new_account(100)
    mark = marker()
    body: dict[str, Any] = {"model": "resp-tiered", "service_tier": tier}
    if path == "/responses":
        body |= {"input": mark, "max_output_tokens": 32}
    else:
        body |= {"messages": [{"role": "user", "content": mark}], "max_tokens": 32}
    raw = orjson.dumps(body)
    answer = httpx2.post(gw.v1 + path, content=raw, timeout=10,
                         headers={**bearer(account.key), "content-type": "application/json"})
    assert answer.status_code == 402, answer.text
    price = PRICES["resp-tiered"]
    rates = price.priority if tier == "priority" else price
    assert rates is not None
    expected = rates.cost_uc(len(raw), 32)
    assert f"may cost up to {credits(expected)} credits" in answer.json()["error"]["message"]
    assert upstream.requests_with(mark) == []


# -- embeddings --------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["one string", "strings", "tokens", "token lists"])
def test_embeddings_are_charged_for_their_input(gw: GatewayServer, upstream: Upstream, given: str) -> None:
    account = gw.new_account()
    mark = marker()
    inputs: Any = {"one string": f"the ledger settles {mark}", "strings": [f"alpha beta {mark}", "gamma"],
                   "tokens": [101, 2023, 2003, 7, 7], "token lists": [[101, 2023], [7, 7, 7]]}[given]
    with gw.openai(account.key) as client:  # the client asks for base64 vectors and decodes them
        raw = client.embeddings.with_raw_response.create(model="embed", input=inputs, user=mark)
        answer = raw.parse()
    count = len(inputs) if given in ("strings", "token lists") else 1
    assert len(answer.data) == count and all(len(d.embedding) == 8 for d in answer.data)
    assert answer.model == "embed"
    tokens = reported(upstream, mark, "/v1/embeddings")["usage"]["prompt_tokens"]
    expected_tokens = {"one string": 4, "strings": 4, "tokens": 5, "token lists": 5}[given]
    assert answer.usage.prompt_tokens == tokens == expected_tokens
    expected = PRICES["embed"].cost_uc(tokens)
    assert raw.headers["x-credits-charged"] == credits(expected)
    event = charged_once(gw, account.id, account.granted_uc, raw.headers["x-request-id"], expected)
    assert (event["input_tokens"], event["output_tokens"]) == (tokens, 0)


def test_embedding_errors_charge_nothing(gw: GatewayServer, upstream: Upstream) -> None:
    account = gw.new_account()
    mark = marker()
    with gw.openai(account.key) as client:
        with pytest.raises(openai.InternalServerError):
            client.embeddings.create(model="embed-500", input="x", user=mark)
        with pytest.raises(openai.BadRequestError) as bad:
            client.embeddings.create(model="embed", input=[], user=mark)
        assert bad.value.param == "input"
        with pytest.raises(openai.BadRequestError) as bad:
            client.embeddings.create(model="embed", input=["fine", 3.5], user=mark)  # type: ignore[list-item]
        assert bad.value.param == "input[1]"
    assert_nothing_charged(gw, account.id, account.granted_uc)
    assert len(upstream.requests_with(mark)) == 1  # the one the failing upstream answered


def test_models_list_what_the_openai_client_may_call(gw: GatewayServer) -> None:
    account = gw.new_account()
    with gw.openai(account.key) as client:
        listed = [m.id for m in client.models.list()]
        assert client.models.retrieve("embed").id == "embed"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("claude-only")
    assert listed == sorted(set(PRICES) - {"claude-only"})
    answer = httpx2.get(gw.v1 + "/models/embed", headers=bearer("not-a-key"), timeout=10)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
