"""Parity with LiteLLM's own cost function (SPEC §14).

Every chat model of the price map bundled with the installed ``litellm`` is imported at 100 credits
per USD (1 µc = 1e-8 USD) and rated with :func:`creditmeter.pricing.rate`; LiteLLM prices the same
usage with ``litellm.cost_per_token`` for the model's provider, at a pinned instant. The usage
states every token kind (input, cache reads, 5-minute and 1-hour cache writes, output, reasoning);
prompts sit just below, at and above each threshold and ``tiered_pricing`` bound; each service tier
the model prices is asked for; models with off-peak windows are priced at each window edge on
weekdays and weekends. Our charge (rounded up once) must equal LiteLLM's figure to within 1 µc, the
only slack being LiteLLM's float noise. A model the import skipped must be refused, never free.

Where LiteLLM's cost function leaves out a price its own map publishes, the expected figure adds
it back, with the reason written next to the case (see ``_expected``).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from creditmeter.errors import InputError
from creditmeter.pricing import ImportReport, import_litellm, rate

CREDITS_PER_USD = Decimal(100)
UC_PER_USD = 10**8  # at 100 credits per USD
THRESHOLD = re.compile(r"_above_(\d+)(k?)_tokens")
WEEK = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
PEAK = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)  # a Wednesday morning, outside every window in the map


@dataclass(frozen=True)
class LiteLLM:
    module: ModuleType
    prices: dict[str, Any]  # the bundled map, read with exact decimals
    report: ImportReport


# LiteLLM's own types warn when pydantic first builds a schema for them (lazily, in whichever test
# first prices with it): a third party's warning, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")

@pytest.fixture(scope="module")
def litellm() -> Iterator[LiteLLM]:
    """LiteLLM, imported once, using the map it ships with (never fetching one)."""
    previous = os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm as module

    text = (importlib.resources.files("litellm") / "model_prices_and_context_window_backup.json").read_text(
        encoding="utf-8")
    prices = json.loads(text, parse_float=Decimal)
    yield LiteLLM(module, prices, import_litellm(prices, CREDITS_PER_USD))
    if previous is None:
        os.environ.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
    else:
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = previous


@dataclass(frozen=True)
class Case:
    model: str
    tier: str | None
    tokens: tuple[int, int, int, int, int, int]  # input, cached, write 5m, write 1h, output, reasoning
    when: datetime


def _usage(prompt: int) -> tuple[int, int, int, int, int, int]:
    cached, write, write_1h = prompt // 7, prompt // 11, prompt // 13
    return prompt - cached - write - write_1h, cached, write, write_1h, 509, 611


def _prompts(entry: Mapping[str, Any]) -> list[int]:
    """A small prompt, and each threshold and range bound with the prompts either side of it."""
    out = {3001}
    for key, value in entry.items():
        match = THRESHOLD.search(key)
        if match is not None and value is not None:
            size = int(match.group(1)) * (1000 if match.group(2) else 1)
            out |= {size - 1, size, size + 1}
    for tier in entry.get("tiered_pricing") or []:
        for bound in tier.get("range") or []:
            out |= {max(int(bound), 1), int(bound) + 1}
    return sorted(out)


def _tiers(entry: Mapping[str, Any]) -> list[str | None]:
    return [None] + [t for t in ("priority", "flex")
                     if any(k.endswith(f"_{t}") and v is not None for k, v in entry.items())]


def _instants(entry: Mapping[str, Any]) -> list[datetime]:
    """Outside every window; or, for a model with off-peak windows, each window edge (and the
    minute before it) on a Wednesday, Friday, Saturday and Sunday, plus 16:00 UTC (midnight in
    Asia/Shanghai, where weekdays turn)."""
    block = entry.get("off_peak_pricing")
    if not block:
        return [PEAK]
    edges = {16 * 60}
    for hours in [block.get("hours_utc")] + [rule.get("hours_utc") for rule in block.get("windows") or []]:
        for text in [hours] if isinstance(hours, str) else hours or []:
            for clock in text.split("-"):
                hour, minute = clock.split(":")
                edges.add(int(hour) * 60 + int(minute))
    return [WEEK + timedelta(days=day, minutes=edge + before)
            for day in (2, 4, 5, 6) for edge in sorted(edges) for before in (-1, 0)]


def _cases(name: str, entry: Mapping[str, Any]) -> Iterator[Case]:
    for tier in _tiers(entry):
        for prompt in _prompts(entry):
            for when in _instants(entry):
                yield Case(name, tier, _usage(prompt), when)


def _litellm_usd(lib: LiteLLM, case: Case, provider: str) -> float:
    from litellm._internal_context import pinned_billing_time
    from litellm.litellm_core_utils.llm_cost_calc.utils import generic_cost_per_token
    from litellm.types.utils import (
        CacheCreationTokenDetails,
        CompletionTokensDetailsWrapper,
        PromptTokensDetailsWrapper,
        Usage,
    )

    text, cached, write, write_1h, output, reasoning = case.tokens
    prompt = text + cached + write + write_1h
    usage = Usage(
        prompt_tokens=prompt, completion_tokens=output + reasoning, total_tokens=prompt + output + reasoning,
        prompt_tokens_details=PromptTokensDetailsWrapper(
            cached_tokens=cached, cache_creation_tokens=write + write_1h,
            cache_creation_token_details=CacheCreationTokenDetails(ephemeral_5m_input_tokens=write,
                                                                   ephemeral_1h_input_tokens=write_1h)),
        completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=reasoning))
    with pinned_billing_time(case.when):
        if provider == "fireworks_ai" and case.tier is not None:
            # LiteLLM's fireworks_ai cost function drops the service tier (it bills a priority
            # request at the standard rates, though the map prices the tier): ask the generic
            # function it wraps, with the tier, for the price the map states.
            info = lib.module.get_model_info(model=case.model, custom_llm_provider=provider)
            prompt_usd, completion_usd = generic_cost_per_token(
                model=case.model, usage=usage, custom_llm_provider=provider, service_tier=case.tier,
                model_info=info)
        else:
            prompt_usd, completion_usd = lib.module.cost_per_token(
                model=case.model, custom_llm_provider=provider, usage_object=usage, service_tier=case.tier)
    return float(prompt_usd + completion_usd)


def _expected(lib: LiteLLM, case: Case, priced_as: str, provider: str) -> tuple[float, float]:
    """LiteLLM's figure in µc, and the slack allowed above our rounding-up of it."""
    figure = _litellm_usd(lib, case, provider) * UC_PER_USD
    price = lib.report.catalog.models[priced_as]
    # LiteLLM's get_model_info drops input_cost_per_request, so cost_per_token never charges the
    # per-request fee the map sets (Perplexity's online models); we charge it.
    figure += price.request_uc
    slack = 1e-9 * figure + 1e-6  # LiteLLM's float arithmetic
    if any(model == priced_as for model, _ in lib.report.rounded):
        # a price with more than 6 places in credits per 1M tokens was rounded up on import (SPEC §3):
        # at most 1e-6 credits (1 µc) per 1M tokens of each kind
        slack += sum(case.tokens) / 1_000_000
    return figure, slack


def test_every_chat_model_costs_what_litellm_says(litellm: LiteLLM) -> None:
    chat = {name: entry for name, entry in litellm.prices.items()
            if isinstance(entry, dict) and entry.get("mode") == "chat"}
    # LiteLLM loaded this map (and adds aliases of its own, such as ``…-latest`` names)
    assert all(litellm.module.model_cost.get(name, {}).get("input_cost_per_token") == (
        None if entry.get("input_cost_per_token") is None else float(entry["input_cost_per_token"]))
        for name, entry in chat.items())
    skipped = dict(litellm.report.skipped)
    mismatches: list[str] = []
    covered: dict[str, set[str]] = {key: set() for key in ("models", "thresholds", "tiers", "off-peak",
                                                            "ranges", "1-hour writes", "reasoning")}
    calls = 0
    for name, entry in chat.items():
        if name in skipped:
            continue
        provider = entry["litellm_provider"]
        # LiteLLM prices a few names with another entry of its map (``deepseek-chat`` for the
        # deepseek provider is ``deepseek/deepseek-chat``): compare with what it priced.
        priced_as = litellm.module.get_model_info(model=name, custom_llm_provider=provider)["key"]
        for case in _cases(name, entry):
            calls += 1
            figure, slack = _expected(litellm, case, priced_as, provider)
            text, cached, write, write_1h, output, reasoning = case.tokens
            ours = rate(litellm.report.catalog, priced_as, text, output, cached, write,
                        reasoning_tokens=reasoning, cache_write_1h_tokens=write_1h, service_tier=case.tier,
                        at_us=(case.when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))
            if not -slack <= ours - figure < 1 + slack:
                mismatches.append(f"{name} [{case.tier}] {case.tokens} at {case.when:%a %H:%M}: "
                                  f"ours {ours} µc, LiteLLM {figure:.3f} µc")
        _cover(covered, name, entry)
    counts = {key: len(names) for key, names in covered.items()}
    print(f"\nLiteLLM parity: {calls} cases over {counts}")
    assert not mismatches, f"{len(mismatches)} cases differ:\n" + "\n".join(mismatches[:40])
    # what this covers, in the map of the pinned litellm version
    assert counts["models"] >= 3_300 and counts["thresholds"] >= 250 and counts["tiers"] >= 450
    assert counts["off-peak"] >= 10 and counts["ranges"] >= 50 and counts["1-hour writes"] >= 230
    assert counts["reasoning"] >= 70


def _cover(covered: dict[str, set[str]], name: str, entry: Mapping[str, Any]) -> None:
    covered["models"].add(name)
    keys = [key for key, value in entry.items() if value is not None]
    for label, present in (("thresholds", any(THRESHOLD.search(k) for k in keys)),
                           ("tiers", len(_tiers(entry)) > 1), ("off-peak", "off_peak_pricing" in keys),
                           ("ranges", "tiered_pricing" in keys),
                           ("1-hour writes", "cache_creation_input_token_cost_above_1hr" in keys),
                           ("reasoning", any("reasoning_token" in k for k in keys))):
        if present:
            covered[label].add(name)


def test_every_chat_model_skipped_is_refused(litellm: LiteLLM) -> None:
    skipped = [name for name, _ in litellm.report.skipped
               if isinstance(litellm.prices.get(name), dict) and litellm.prices[name].get("mode") == "chat"]
    assert skipped  # entries without per-token prices, or priced only per image
    for name in skipped:
        with pytest.raises(InputError) as info:
            rate(litellm.report.catalog, name, 1000, 1000, 0, 0)
        assert info.value.field == "model"


def test_litellm_drops_the_service_tier_for_fireworks(litellm: LiteLLM) -> None:
    """Why fireworks_ai tiers are compared with LiteLLM's generic function (see ``_litellm_usd``):
    its ``cost_per_token`` bills a priority request at the standard rates."""
    name = "fireworks_ai/kimi-k3"
    entry = litellm.prices[name]
    assert entry.get("input_cost_per_token_priority", 0) > entry["input_cost_per_token"]
    case = Case(name, "priority", _usage(3001), PEAK)
    from litellm.types.utils import Usage

    usage = Usage(prompt_tokens=3001, completion_tokens=509, total_tokens=3510)
    price = litellm.module.cost_per_token
    standard = price(model=name, custom_llm_provider="fireworks_ai", usage_object=usage)
    priority = price(model=name, custom_llm_provider="fireworks_ai", usage_object=usage,
                     service_tier="priority")
    assert priority == standard
    assert _litellm_usd(litellm, case, "fireworks_ai") > _litellm_usd(
        litellm, Case(name, None, case.tokens, PEAK), "fireworks_ai")
