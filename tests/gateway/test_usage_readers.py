"""How each protocol's usage object becomes the engine's Usage: every token stated once, in its
own kind (cache reads, cache writes and their 1-hour part, reasoning), the service tier read, and
anything unusable refused rather than guessed."""

from __future__ import annotations

from typing import Any

import pytest

from creditmeter.engine import Usage
from creditmeter.gateway.anthropic_messages import messages_usage
from creditmeter.gateway.embeddings import embeddings_usage, inputs_of
from creditmeter.gateway.errors import GatewayError
from creditmeter.gateway.openai_chat import usage_of
from creditmeter.gateway.openai_responses import responses_usage


def test_messages_usage_splits_cache_writes_and_thinking() -> None:
    reported = {"input_tokens": 10, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 50,
                "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
                "output_tokens": 90, "output_tokens_details": {"thinking_tokens": 60},
                "service_tier": "priority"}
    assert messages_usage(reported, "m") == Usage("m", 10, 30, 300, 20, reasoning_tokens=60,
                                                  cache_write_1h_tokens=30, service_tier="priority")


@pytest.mark.parametrize(("extra", "written", "hour"), [
    ({}, 0, 0),
    ({"cache_creation_input_tokens": 50}, 50, 0),  # no split given: all 5-minute writes
    ({"cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 7}}, 5, 7),  # no total
    ({"cache_creation_input_tokens": None, "cache_read_input_tokens": None}, 0, 0),  # nulls, as sent
])
def test_messages_usage_cache_writes(extra: dict[str, Any], written: int, hour: int) -> None:
    usage = messages_usage({"input_tokens": 4, "output_tokens": 2, **extra}, "m")
    assert usage is not None
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (written, hour)
    assert (usage.input_tokens, usage.output_tokens, usage.service_tier) == (4, 2, None)


def test_responses_usage_takes_cached_written_and_reasoning_out_of_their_totals() -> None:
    reported = {"input_tokens": 1000,
                "input_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300},
                "output_tokens": 80, "output_tokens_details": {"reasoning_tokens": 50}, "total_tokens": 1080}
    assert responses_usage(reported, "r", "flex") == Usage("r", 100, 30, 600, 300, reasoning_tokens=50,
                                                           service_tier="flex")
    assert responses_usage(reported, "r", "default").service_tier is None  # type: ignore[union-attr]


def test_chat_usage_reads_reasoning_cache_writes_and_the_tier() -> None:
    reported = {"prompt_tokens": 100, "completion_tokens": 40,
                "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
                "completion_tokens_details": {"reasoning_tokens": 25}}
    assert usage_of(reported, "c", "priority") == Usage("c", 10, 15, 60, 30, reasoning_tokens=25,
                                                        service_tier="priority")
    assert usage_of({"prompt_tokens": 5, "completion_tokens": 1}, "c", "auto") == Usage("c", 5, 1)


@pytest.mark.parametrize("reported", [
    None, "12", {"input_tokens": 3}, {"input_tokens": -1, "output_tokens": 2},
    {"input_tokens": 1.5, "output_tokens": 2}, {"input_tokens": True, "output_tokens": 2},
])
def test_unusable_usage_is_refused(reported: Any) -> None:
    assert messages_usage(reported, "m") is None
    assert responses_usage(reported, "r") is None
    assert embeddings_usage(reported, "e") is None


def test_counts_beyond_their_totals_are_clamped() -> None:
    """A detail count larger than the total it is part of never makes a count negative."""
    usage = responses_usage({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 50},
                             "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 9}}, "r")
    assert usage == Usage("r", 0, 0, 10, 0, reasoning_tokens=4)
    thinking = messages_usage({"input_tokens": 1, "output_tokens": 3,
                               "output_tokens_details": {"thinking_tokens": 8}}, "m")
    assert thinking is not None and (thinking.output_tokens, thinking.reasoning_tokens) == (0, 3)


def test_embedding_inputs() -> None:
    assert inputs_of("a b") == ["a b"]
    assert inputs_of([1, 2, 3]) == [[1, 2, 3]]
    assert inputs_of(["a", [1, 2]]) == ["a", [1, 2]]
    for bad, field in ((None, "input"), ([], "input"), (["a", None], "input[1]"), ([[1, "x"]], "input[0]"),
                       (7, "input")):
        with pytest.raises(GatewayError) as caught:
            inputs_of(bad)
        assert (caught.value.status, caught.value.param) == (400, field)
    assert embeddings_usage({"prompt_tokens": 7, "total_tokens": 7}, "e") == Usage("e", 7, 0)
