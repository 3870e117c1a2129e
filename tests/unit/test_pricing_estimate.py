"""The most a request may cost (holds, SPEC §6 and §14): never below what rating could charge for
usage within the request's bounds, whatever its split, tier window or time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditmeter.domain import Hold
from creditmeter.errors import InputError
from creditmeter.pricing import estimate, load_yaml, parse_catalog, rate
from tests.conftest import EngineFactory, at

CATALOG = parse_catalog(load_yaml("""
models:
  plain: {input: 3, output: 15}
  writes: {input: 3, output: 15, cached_input: 0.3, cache_write: 3.75, cache_write_1h: 6, reasoning: 2}
  thinking: {input: 1, output: 4, reasoning: 9, request: 0.5}
  long:
    input: 3
    output: 15
    above: [{prompt_tokens: 1000, input: 6, output: 22.5}, {prompt_tokens: 5000, input: 4}]
    tiers:
      priority: {input: 5, above: [{prompt_tokens: 2000, output: 40}]}
    off_peak:
      - {timezone: Asia/Shanghai, hours: "22:00-06:00", input: 1, output: 30}
"""))
MODELS = sorted(CATALOG.models)


def test_plain_model_is_input_and_output_at_their_prices() -> None:
    # 1000 × 3 + 200 × 15
    assert estimate(CATALOG, "plain", 1000, 200) == 6000
    assert estimate(CATALOG, "plain", 0, 0) == 0


def test_each_side_at_its_dearest_rate() -> None:
    # input side: max(input 3, cached 0.3, write 3.75, 1-hour write 6) = 6; output side: max(15, 2)
    assert estimate(CATALOG, "writes", 1000, 100) == 1000 * 6 + 100 * 15
    # reasoning dearer than output; the request fee once
    assert estimate(CATALOG, "thinking", 1000, 100) == 1000 * 1 + 100 * 9 + 500_000


def test_thresholds_within_the_bound_windows_and_tiers_count() -> None:
    # a bound of 1000 cannot pass the 1000 threshold: own rates, or the off-peak output 30
    assert estimate(CATALOG, "long", 1000, 10) == 1000 * 3 + 10 * 30
    # 1001 may: input 6, output 22.5 above 1000 (dearer in all than off-peak's input 1, output 30)
    assert estimate(CATALOG, "long", 1001, 10) == 1001 * 6 + 225
    # priority above 2000: output 40
    assert estimate(CATALOG, "long", 2001, 10, service_tier="priority") == 2001 * 6 + 10 * 40
    with pytest.raises(InputError) as info:
        estimate(CATALOG, "long", 1, 1, service_tier="express")
    assert info.value.field == "service_tier"
    with pytest.raises(InputError) as info:
        estimate(CATALOG, "nope", 1, 1)
    assert info.value.field == "model"


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(MODELS), bound_in=st.integers(0, 8000), bound_out=st.integers(0, 3000),
       split=st.lists(st.integers(0, 10**6), min_size=4, max_size=4), out_share=st.integers(0, 100),
       tier=st.sampled_from([None, "priority", "flex"]),
       at_us=st.integers(at("2026-01-01"), at("2026-12-31")))
def test_estimate_is_never_below_the_charge_within_its_bounds(
        model: str, bound_in: int, bound_out: int, split: list[int], out_share: int, tier: str | None,
        at_us: int) -> None:
    total = sum(split) or 1
    sent = [bound_in * part // total for part in split]  # input, cached, write, 1-hour write ≤ bound
    output = bound_out * out_share // 100
    charged = rate(CATALOG, model, sent[0], output, sent[1], sent[2], reasoning_tokens=bound_out - output,
                   cache_write_1h_tokens=sent[3], service_tier=tier, at_us=at_us)
    assert charged <= estimate(CATALOG, model, bound_in, bound_out, service_tier=tier)


def test_holds_reserve_the_estimate_for_the_tier(make_engine: EngineFactory) -> None:
    engine = make_engine()
    t0 = at("2026-06-01T09:00:00Z")
    engine.load_prices(CATALOG, at("2026-06-01"), t0)
    engine.create_account("u", t0)
    engine.add_grant("u", 1_000_000_000, "addon", t0, grant_id="g")
    assert engine.estimate("long", 2001, 10, t0, service_tier="priority") == 2001 * 6 + 10 * 40
    hold, amount = engine.reserve_estimate("u", "long", 2001, 10, t0, service_tier="priority")
    assert amount == 2001 * 6 + 10 * 40
    assert isinstance(hold, Hold) and hold.amount_uc == amount
    assert engine.balance("u", t0).held_uc == amount
    with pytest.raises(InputError) as info:
        engine.reserve_estimate("u", "long", 1, 1, t0, service_tier="express")
    assert info.value.field == "service_tier"
    assert engine.balance("u", t0).held_uc == amount
    assert engine.check_invariants() == []
