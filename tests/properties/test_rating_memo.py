"""Rating remembers the rates in force per model (by tier, prompt sizes passed and open window):
whatever order requests come in, each costs what the rates worked out afresh for it say."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from creditmeter.pricing import load_yaml, parse_catalog, rate, rates_for
from creditmeter.pricing.model import TOKENS_PER_PRICE_UNIT, Catalog
from creditmeter.pricing.windows import is_open
from creditmeter.timeutil import parse_instant

CATALOG_TEXT = """
models:
  tiered:
    input: 2
    output: 8
    above: [{prompt_tokens: 1000, input: 4, output: 16}, {prompt_tokens: 5000, cached_input: 1}]
    tiers:
      priority: {input: 3, output: 12, above: [{prompt_tokens: 2000, input: 7}]}
      flex: {input: 1, output: 4}
  night:
    input: 1
    output: 4
    reasoning: 6
    above: [{prompt_tokens: 1000, input: 2, output: 8}]
    tiers:
      priority: {input: 1.5, cache_write: 9}
    off_peak:
      - {timezone: Asia/Kolkata, hours: "16:30-00:30", weekdays: [mon, tue, wed, thu, fri], input: 0.5}
      - {timezone: UTC, hours: "00:00-00:00", weekdays: [sat, sun], input: 0.25, output: 2}
"""
WEEK_US = 7 * 86_400 * 1_000_000
START = parse_instant("2026-03-02T00:00:00Z", "at")

request = st.tuples(
    st.sampled_from(["tiered", "night"]), st.sampled_from([None, "priority", "flex"]),
    st.sampled_from([0, 1, 999, 1000, 1001, 1999, 2000, 2001, 4999, 5000, 5001, 70_000]),
    st.integers(0, 3_000), st.integers(0, 3_000), st.integers(0, 500), st.integers(0, 500),
    st.integers(0, WEEK_US),
)


def afresh(catalog: Catalog, model: str, tier: str | None, prompt: int, out: int, reasoning: int,
           cached: int, write: int, at_us: int) -> int:
    """The cost with nothing remembered: the first open window found, the rates worked out."""
    price = catalog.models[model]
    window = next((w for w in price.off_peak if is_open(w.timezone, w.hours, w.weekdays, at_us)), None)
    r = rates_for(price, tier if tier in price.tiers else None, prompt + cached + write, window)
    scaled = (prompt * r.input_uc + out * r.output_uc + reasoning * r.reasoning_uc
              + cached * r.cached_input_uc + write * r.cache_write_uc)
    return -(-scaled // TOKENS_PER_PRICE_UNIT) + price.request_uc


@settings(max_examples=60, deadline=None)
@given(st.lists(request, min_size=1, max_size=40))
def test_remembered_rates_cost_what_fresh_ones_do(requests: list[tuple]) -> None:  # type: ignore[type-arg]
    catalog = parse_catalog(load_yaml(CATALOG_TEXT))  # nothing remembered yet
    for model, tier, prompt, out, reasoning, cached, write, offset in requests:
        at_us = START + offset
        got = rate(catalog, model, prompt, out, cached, write, reasoning_tokens=reasoning,
                   service_tier=tier, at_us=at_us)
        assert got == afresh(catalog, model, tier, prompt, out, reasoning, cached, write, at_us)
