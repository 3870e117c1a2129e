"""The gateway under an account's limits and its policy when credits run out, end to end: the
official ``openai`` and ``anthropic`` clients → a real ``creditmeter serve`` process → the local
upstream (a real HTTP server, which records the model each request was sent to).

- A request that would pass a limit: 429 ``limit_reached`` in the protocol's own error shape (so
  each client raises its ``RateLimitError``), naming the limit, with ``Retry-After`` until enough
  frees up; nothing forwarded, nothing charged.
- ``fallback``: a spent account's requests go to the fallback model (its upstream, its upstream
  name), charged at its price, said so in ``x-credits-fallback`` and in the answer's ``model``,
  up to the daily cap, then 402.
- ``overage``: requests go on past the credits until the overage would pass the cap, then 402.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from creditmeter.plans import parse_plans
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.timeutil import format_instant, parse_instant
from tests.gateway.conftest import (
    Account,
    GatewayServer,
    Price,
    Upstream,
    anthropic_model,
    catalog_yaml,
    credits,
    now_us,
    sqlite_url,
    start_gateway,
    stop_gateway,
    to_uc,
    upstream_model,
)

US_PER_S = 1_000_000
HOUR_US = 3_600 * US_PER_S
DAY_S = 86_400
MAX_TOKENS = 20  # the local upstream's whole reply: 20 words, 20 tokens
PRICES = {
    "premium": Price(input="1000", output="20000"),  # 0.001 credit an input token, 0.02 an output one
    "pricey": Price(input="1000", output="100000"),  # 0.1 credit an output token: 2 credits a reply
    "basic": Price(input="100", output="700"),
    "free-basic": Price(input="0", output="0"),
    "resp-premium": Price(input="1000", output="20000"),
    "resp-basic": Price(input="300", output="900"),
    "embed": Price(input="10000", output="0"),  # 0.01 credit a token
    "claude-premium": Price(input="1000", output="20000"),
    "claude-basic": Price(input="200", output="800"),
}
# The upstream's name for each model: the local upstream answers any of them normally, and its
# record of a request says which one it was sent to.
OPENAI_MODELS = {"premium": "premium-upstream", "pricey": "pricey-upstream", "basic": "basic-upstream",
                 "free-basic": "free-upstream", "unpriced-basic": "unpriced-upstream",
                 "resp-premium": "premium-upstream", "resp-basic": "resp-basic-upstream",
                 "embed": "embed-upstream"}
ANTHROPIC_MODELS = {"claude-premium": "claude-premium-upstream", "claude-basic": "claude-basic-upstream"}


@pytest.fixture(scope="module")
def gw(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    directory = tmp_path_factory.mktemp("out-of-credits")
    models: dict[str, Any] = {alias: upstream_model(upstream.v1, upstream_model=name)
                              for alias, name in OPENAI_MODELS.items()}
    models.update({alias: anthropic_model(upstream, upstream_model=name)
                   for alias, name in ANTHROPIC_MODELS.items()})
    running = start_gateway(sqlite_url(directory), directory, PRICES, {"models": models})
    # The same prices a day earlier too, for usage recorded hours ago.
    running.engine.load_prices(parse_catalog(load_yaml(catalog_yaml(PRICES))), now_us() - DAY_S * US_PER_S,
                               now_us())
    yield running
    stop_gateway(running)


def marker() -> str:
    return f"m{uuid.uuid4().hex}"


def prompt(mark: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Say hello to the ledger {mark}"}]


def away_from_midnight(margin_s: float = 30) -> None:
    """Wait until the UTC day has more than ``margin_s`` to run: a fallback's cap counts per UTC day."""
    left = DAY_S - time.time() % DAY_S
    if left < margin_s:
        time.sleep(left + 1)


def upstream_cost(price: Price, record: dict[str, Any]) -> int:
    """µc for the usage the upstream reported for one request (OpenAI's or Anthropic's names)."""
    usage = record["usage"]
    if "prompt_tokens" in usage and "completion_tokens" in usage:
        return price.cost_uc(usage["prompt_tokens"], usage["completion_tokens"])
    return price.cost_uc(usage["input_tokens"], usage.get("output_tokens", 0))


def message_of(exc: openai.APIStatusError | anthropic.APIStatusError) -> str:
    """The error's message as the gateway wrote it (the clients' ``message`` adds a prefix)."""
    body: Any = exc.response.json()
    return str(body["error"]["message"])


def spent_account(gw: GatewayServer, policy: object) -> Account:
    """An account with no credits and ``policy`` when they run out."""
    account = gw.new_account(0)
    gw.engine.set_out_of_credits(account.id, policy, now_us())
    return account


def assert_fell_back(gw: GatewayServer, upstream: Upstream, account: Account, mark: str, asked: str,
                     fallback: str, request_ids: list[str]) -> None:
    """Every request mentioning ``mark`` went to ``fallback``'s upstream, and each was charged once
    at its price × the usage that upstream reported; what the credits did not cover is overage."""
    received = upstream.requests_with(mark)
    assert len(received) == len(request_ids)
    upstream_name = {**OPENAI_MODELS, **ANTHROPIC_MODELS}[fallback]
    assert {r["body"]["model"] for r in received} == {upstream_name}
    balance = gw.wait_settled(account.id, len(request_ids))
    events = {e["event_id"]: e for e in gw.events(account.id)}
    assert sorted(events) == sorted(request_ids)
    costs = sorted(upstream_cost(PRICES[fallback], r) for r in received)
    assert sorted(to_uc(e["cost_credits"]) for e in events.values()) == costs
    for event in events.values():
        assert event["model"] == fallback
        assert event["metadata"]["fallback_from"] == asked
        assert event["metadata"]["upstream_model"] == upstream_name
    assert balance["overage_credits"] == credits(sum(costs))


# -- fallback ----------------------------------------------------------------------------------


def test_a_spent_accounts_chat_falls_back_up_to_the_daily_cap(gw: GatewayServer, upstream: Upstream) -> None:
    away_from_midnight()
    account = spent_account(gw, {"fallback": "basic", "daily_cap": 3})
    mark = marker()
    request_ids = []
    with gw.openai(account.key) as client:
        raw = client.chat.completions.with_raw_response.create(model="premium", messages=prompt(mark),
                                                               max_tokens=MAX_TOKENS)
        assert raw.headers["x-credits-fallback"] == "basic"
        assert raw.parse().model == "basic"
        assert raw.headers["x-credits-charged"] != "0"
        request_ids.append(raw.headers["x-request-id"])
        for _ in range(2):
            stream = client.chat.completions.create(model="premium", messages=prompt(mark),
                                                    max_tokens=MAX_TOKENS, stream=True)
            assert stream.response.headers["x-credits-fallback"] == "basic"
            chunks = list(stream)
            assert {chunk.model for chunk in chunks} == {"basic"}
            assert (chunks[-1].model_extra or {})["credits_charged"] != "0"
            request_ids.append(stream.response.headers["x-request-id"])
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="premium", messages=prompt(mark), max_tokens=MAX_TOKENS)
    assert caught.value.status_code == 402 and caught.value.code == "insufficient_credits"
    assert "the fallback to basic is used up for today (3 requests a day)" in message_of(caught.value)
    assert "x-credits-fallback" not in caught.value.response.headers
    assert_fell_back(gw, upstream, account, mark, "premium", "basic", request_ids)


def test_a_plans_fallback_and_limit_reach_its_subscribers(gw: GatewayServer, upstream: Upstream) -> None:
    """The plan says it (SPEC §12's catalog form): its subscriber's credits (less than a request to
    the fallback model may cost) run out and its requests fall back, and its limit counts them."""
    away_from_midnight()
    now = now_us()
    gw.engine.load_plans(parse_plans({"plans": [{
        "id": "gateway-plus", "kind": "subscription", "name": "Gateway Plus", "credits": "0.01",
        "period": "month", "limits": [{"window": "rolling 5h", "credits": 1}],
        "when_out_of_credits": {"fallback": "basic", "daily_cap": 2}}]}), now)
    account = gw.new_account(0)
    gw.engine.subscribe(account.id, "gateway-plus", now)
    mark = marker()
    with gw.openai(account.key) as client:
        raws = [client.chat.completions.with_raw_response.create(model="premium", messages=prompt(mark),
                                                                 max_tokens=MAX_TOKENS) for _ in range(2)]
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="premium", messages=prompt(mark), max_tokens=MAX_TOKENS)
    assert [(r.parse().model, r.headers["x-credits-fallback"]) for r in raws] == [("basic", "basic")] * 2
    assert caught.value.status_code == 402
    assert "the fallback to basic is used up for today (2 requests a day)" in message_of(caught.value)
    received = upstream.requests_with(mark)
    assert [r["body"]["model"] for r in received] == ["basic-upstream"] * 2
    used = sum(upstream_cost(PRICES["basic"], r) for r in received)
    balance = gw.wait_settled(account.id, 2)
    [limit] = balance["limits"]
    assert (limit["source"], limit["used_credits"], limit["held_credits"]) == ("plan", credits(used), "0")
    assert balance["when_out_of_credits"] == {"mode": "fallback", "fallback_model": "basic", "daily_cap": 2,
                                              "description": "when your credits run out, requests use "
                                                             "basic, up to 2 a day"}


def test_a_fallback_priced_zero_is_charged_nothing(gw: GatewayServer, upstream: Upstream) -> None:
    account = spent_account(gw, {"fallback": "free-basic"})
    mark = marker()
    with gw.openai(account.key) as client:
        raws = [client.chat.completions.with_raw_response.create(model="premium", messages=prompt(mark),
                                                                 max_tokens=MAX_TOKENS) for _ in range(4)]
    for raw in raws:
        assert raw.parse().model == "free-basic"
        assert raw.headers["x-credits-fallback"] == "free-basic"
        assert raw.headers["x-credits-charged"] == "0"
    assert_fell_back(gw, upstream, account, mark, "premium", "free-basic",
                     [raw.headers["x-request-id"] for raw in raws])


def test_a_spent_accounts_messages_fall_back(gw: GatewayServer, upstream: Upstream) -> None:
    away_from_midnight()
    account = spent_account(gw, {"fallback": "claude-basic", "daily_cap": 2})
    mark = marker()
    with gw.anthropic(account.key) as client:
        raw = client.messages.with_raw_response.create(model="claude-premium", max_tokens=MAX_TOKENS,
                                                       messages=prompt(mark))  # type: ignore[arg-type]
        assert raw.parse().model == "claude-basic"
        assert raw.headers["x-credits-fallback"] == "claude-basic"
        streamed = client.messages.with_raw_response.create(
            model="claude-premium", max_tokens=MAX_TOKENS, messages=prompt(mark),  # type: ignore[arg-type]
            stream=True)
        assert streamed.headers["x-credits-fallback"] == "claude-basic"
        events = list(streamed.parse())
        assert events[0].message.model == "claude-basic"  # type: ignore[union-attr]
        with pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.create(model="claude-premium", max_tokens=MAX_TOKENS,
                                   messages=prompt(mark))  # type: ignore[arg-type]
    assert caught.value.status_code == 402
    assert caught.value.body["error"]["type"] == "insufficient_credits"  # type: ignore[index]
    assert "used up for today (2 requests a day)" in message_of(caught.value)
    assert_fell_back(gw, upstream, account, mark, "claude-premium", "claude-basic",
                     [raw.headers["x-request-id"], streamed.headers["x-request-id"]])


def test_a_spent_accounts_responses_fall_back(gw: GatewayServer, upstream: Upstream) -> None:
    account = spent_account(gw, {"fallback": "resp-basic"})
    mark = marker()
    with gw.openai(account.key) as client:
        raw = client.responses.with_raw_response.create(model="resp-premium", input=f"Hello {mark}",
                                                        max_output_tokens=MAX_TOKENS)
        assert raw.parse().model == "resp-basic"
        assert raw.headers["x-credits-fallback"] == "resp-basic"
        streamed = client.responses.with_raw_response.create(model="resp-premium", input=f"Hello {mark}",
                                                             max_output_tokens=MAX_TOKENS, stream=True)
        assert streamed.headers["x-credits-fallback"] == "resp-basic"
        events = list(streamed.parse())  # type: ignore[call-overload]
        assert {e.response.model for e in events if hasattr(e, "response")} == {"resp-basic"}
    assert_fell_back(gw, upstream, account, mark, "resp-premium", "resp-basic",
                     [raw.headers["x-request-id"], streamed.headers["x-request-id"]])


@pytest.mark.parametrize(("fallback", "why"), [
    ("claude-basic", "the account's fallback model 'claude-basic' is served through the Anthropic "
                     "Messages API (/v1/messages), not /v1/chat/completions"),
    ("unpriced-basic", "the account's fallback model 'unpriced-basic' has no price in the catalog"),
    ("nowhere-model", "the account's fallback model 'nowhere-model' is not served here"),
])
def test_a_fallback_that_cannot_serve_the_request_is_a_402_saying_why(
        gw: GatewayServer, upstream: Upstream, fallback: str, why: str) -> None:
    account = spent_account(gw, {"fallback": fallback})
    mark = marker()
    with gw.openai(account.key) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="premium", messages=prompt(mark), max_tokens=MAX_TOKENS)
    assert caught.value.status_code == 402 and caught.value.code == "insufficient_credits"
    assert message_of(caught.value).startswith("insufficient credits: this request may cost up to ")
    assert message_of(caught.value).endswith(f"; {why}")
    assert upstream.requests_with(mark) == []
    assert gw.events(account.id) == []
    assert gw.balance(account.id)["held_credits"] == "0"


# -- overage -----------------------------------------------------------------------------------


def test_overage_goes_on_until_it_would_pass_its_cap(gw: GatewayServer, upstream: Upstream) -> None:
    account = gw.new_account(1 * US_PER_S)  # 1 credit: less than one request may cost
    gw.engine.set_out_of_credits(account.id, {"overage": "10"}, now_us())
    mark = marker()
    answered: list[str] = []
    overage_before = 0
    with gw.openai(account.key) as client:
        for _ in range(20):
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="pricey", messages=prompt(mark), max_tokens=MAX_TOKENS)
            except openai.APIStatusError as exc:
                refused = exc
                break
            assert "x-credits-fallback" not in raw.headers
            answered.append(raw.headers["x-request-id"])
            overage_before = to_uc(gw.balance(account.id)["overage_credits"])
        else:
            raise AssertionError("never refused: the overage has no cap")
    assert refused.status_code == 402 and refused.code == "insufficient_credits"
    message = message_of(refused)
    assert "would pass the account's cap of 10 credits" in message
    assert f"(overage now {credits(overage_before)})" in message
    assert "to pay first" not in message  # under an overage policy the overage need not be paid first
    estimate = to_uc(message.split("may cost up to ")[1].split(" credits")[0])
    assert overage_before + estimate > 10 * US_PER_S  # refused only once the cap would be passed
    assert len(answered) >= 3  # 1 credit covers none of them: the rest ran into overage
    received = upstream.requests_with(mark)
    assert len(received) == len(answered)
    used = sum(upstream_cost(PRICES["pricey"], r) for r in received)
    balance = gw.wait_settled(account.id, len(answered))
    assert balance["overage_credits"] == credits(used - 1 * US_PER_S) == credits(overage_before)
    assert 0 < used - 1 * US_PER_S <= 10 * US_PER_S  # never past the cap: each hold bounded its cost
    assert balance["when_out_of_credits"]["mode"] == "overage"


# -- limits: 429 -------------------------------------------------------------------------------


def call_openai(gw: GatewayServer, key: str, route: str, mark: str) -> None:
    with gw.openai(key) as client:
        if route == "chat":
            client.chat.completions.create(model="premium", messages=prompt(mark), max_tokens=MAX_TOKENS)
        elif route == "responses":
            client.responses.create(model="resp-premium", input=f"Hello {mark}", max_output_tokens=MAX_TOKENS)
        else:
            client.embeddings.create(model="embed", input=f"Hello there, this is some text to embed {mark}")


def call(gw: GatewayServer, key: str, route: str, mark: str) -> Exception:
    """One request through ``route`` that a limit refuses: the exception its client raised."""
    if route == "messages":
        with gw.anthropic(key) as client, pytest.raises(anthropic.RateLimitError) as caught:
            client.messages.create(model="claude-premium", max_tokens=MAX_TOKENS,
                                   messages=prompt(mark))  # type: ignore[arg-type]
        assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        return caught.value
    with pytest.raises(openai.RateLimitError) as refused:
        call_openai(gw, key, route, mark)
    assert refused.value.code == "limit_reached"
    assert refused.value.type == "rate_limit_error"
    return refused.value


def account_since(gw: GatewayServer, seconds: int, credits_uc: int) -> Account:
    """An account made ``seconds`` ago with ``credits_uc`` from then on (so earlier usage is paid)."""
    at = now_us() - seconds * US_PER_S
    account_id = f"user-{uuid.uuid4().hex[:10]}"
    gw.engine.create_account(account_id, at)
    gw.engine.add_grant(account_id, credits_uc, "package", at)
    key, secret = gw.engine.create_key(account_id, at)
    return Account(account_id, secret, key.id, credits_uc)


def used_earlier(gw: GatewayServer, account: Account, seconds: int, output_tokens: int) -> int:
    """Record usage on the account ``seconds`` ago (on a whole second), costing ``output_tokens``
    × 0.02 credits; answers its time."""
    at = (now_us() // US_PER_S - seconds) * US_PER_S
    gw.engine.record({"id": f"earlier-{uuid.uuid4().hex}", "account_id": account.id, "model": "premium",
                      "output_tokens": output_tokens, "timestamp": format_instant(at)}, now_us())
    return at


@pytest.mark.parametrize("route", ["chat", "responses", "embeddings", "messages"])
def test_a_request_past_a_rolling_limit_is_a_429_with_retry_after(gw: GatewayServer, upstream: Upstream,
                                                                  route: str) -> None:
    account = account_since(gw, 50, 100 * US_PER_S)
    gw.engine.set_limit(account.id, "rolling 5h", "1", now_us())
    used_at = used_earlier(gw, account, 30, 45)  # 0.9 credits, 30 s ago
    frees_at = used_at + 5 * HOUR_US
    mark = marker()
    before = now_us()
    refused: Any = call(gw, account.key, route, mark)
    after = now_us()
    assert refused.status_code == 429
    retry_after = int(refused.response.headers["retry-after"])
    assert math.ceil((frees_at - after) / US_PER_S) <= retry_after \
        <= math.ceil((frees_at - before) / US_PER_S)
    assert 5 * 3_600 - 60 < retry_after <= 5 * 3_600 - 29
    assert refused.response.headers["x-should-retry"] == "false"  # no client should sleep 5 hours
    assert "1 credits in any 5 hours: 0.9 used; this request may cost up to " in message_of(refused)
    assert message_of(refused).endswith(f"enough frees up at {format_instant(frees_at)}")
    assert refused.response.headers["x-request-id"].startswith("gw-")
    assert upstream.requests_with(mark) == []
    assert len(gw.events(account.id)) == 1
    balance = gw.balance(account.id)
    assert balance["held_credits"] == "0"
    assert balance["available_credits"] == credits(100 * US_PER_S - 900_000)


@pytest.mark.parametrize("route", ["chat", "messages"])
def test_a_client_that_retries_waits_retry_after_and_gets_through(gw: GatewayServer, upstream: Upstream,
                                                                  route: str) -> None:
    """Usage that leaves the window in 5 s: the 429 says to retry then, and a client allowed one
    retry waits that long and is answered."""
    account = account_since(gw, 6 * 3_600, 100 * US_PER_S)
    gw.engine.set_limit(account.id, "rolling 5h", "1", now_us())
    used_earlier(gw, account, 5 * 3_600 - 5, 45)  # 0.9 credits, out of the window in 5 s
    mark = marker()
    started = time.monotonic()
    if route == "messages":
        with anthropic.Anthropic(base_url=gw.server.base_url, api_key=account.key, max_retries=1,
                                 timeout=30) as claude:
            raw: Any = claude.messages.with_raw_response.create(model="claude-premium", max_tokens=MAX_TOKENS,
                                                                messages=prompt(mark))  # type: ignore[arg-type]
    else:
        with openai.OpenAI(base_url=gw.v1, api_key=account.key, max_retries=1, timeout=30) as client:
            raw = client.chat.completions.with_raw_response.create(model="premium", messages=prompt(mark),
                                                                   max_tokens=MAX_TOKENS)
    assert raw.retries_taken == 1
    assert time.monotonic() - started >= 3  # it waited for the window to move on
    assert len(upstream.requests_with(mark)) == 1
    gw.wait_settled(account.id, 2)
    assert len(gw.events(account.id)) == 2  # the earlier usage, and the request let through


def test_a_short_wait_lets_the_client_retry(gw: GatewayServer) -> None:
    account = account_since(gw, 6 * 3_600, 100 * US_PER_S)
    gw.engine.set_limit(account.id, "rolling 5h", "1", now_us())
    used_earlier(gw, account, 5 * 3_600 - 30, 45)  # 0.9 credits, out of the window in 30 s
    refused: Any = call(gw, account.key, "chat", marker())
    assert 0 < int(refused.response.headers["retry-after"]) <= 30
    assert "x-should-retry" not in refused.response.headers


@pytest.mark.parametrize("route", ["chat", "messages"])
def test_a_limit_waiting_cannot_free_gives_no_retry_after(gw: GatewayServer, route: str) -> None:
    account = account_since(gw, 50, 100 * US_PER_S)
    gw.engine.set_limit(account.id, "total", "1", now_us())
    used_earlier(gw, account, 30, 45)
    refused: Any = call(gw, account.key, route, marker())
    assert "retry-after" not in refused.response.headers
    assert "1 credits in total: 0.9 used" in message_of(refused)
    assert message_of(refused).endswith("waiting alone will not free enough for it")


def test_a_keys_limit_counts_that_keys_requests_only(gw: GatewayServer, upstream: Upstream) -> None:
    account = account_since(gw, 50, 100 * US_PER_S)
    # A request holds 0.534 credits and costs about 0.4: the key's first fits, its second does not.
    gw.engine.set_limit(account.id, "rolling 5h", "0.8", now_us(), scope="key", key_id=account.key_id)
    _, other_key = gw.engine.create_key(account.id, now_us())
    used_earlier(gw, account, 30, 45)  # recorded without a key: it counts on the account, not the key
    mark = marker()
    with gw.openai(account.key) as client:
        first = client.chat.completions.with_raw_response.create(model="premium", messages=prompt(mark),
                                                                 max_tokens=MAX_TOKENS)
    event = next(e for e in gw.events(account.id) if e["event_id"] == first.headers["x-request-id"])
    frees_at = parse_instant(event["timestamp"], "timestamp") + 5 * HOUR_US  # 5 hours after its charge
    before = now_us()
    refused: Any = call(gw, account.key, "chat", mark)
    after = now_us()
    assert f"0.8 credits in any 5 hours through key {account.key_id}: {event['cost_credits']} used; " \
        in message_of(refused)
    assert message_of(refused).endswith(f"enough frees up at {format_instant(frees_at)}")
    retry_after = int(refused.response.headers["retry-after"])
    assert math.ceil((frees_at - after) / US_PER_S) <= retry_after \
        <= math.ceil((frees_at - before) / US_PER_S)
    for _ in range(3):  # the account's other key is not bound by it
        call_openai(gw, other_key, "chat", mark)
    assert len(upstream.requests_with(mark)) == 4
    gw.wait_settled(account.id, 5)
    assert len(gw.events(account.id)) == 5
