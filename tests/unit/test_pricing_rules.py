"""The rate rules beyond flat prices (SPEC §14): reasoning and 1-hour cache-write rates, rates above a
prompt-size threshold, service tiers, off-peak windows, how they combine, and rounding once.

The arithmetic is in the comments: a rate of R credits per 1M tokens is R µc per token.
"""

from __future__ import annotations

from decimal import Decimal
from math import ceil
from typing import Any

import pytest

from creditmeter.domain import Hold
from creditmeter.engine.holds import Usage
from creditmeter.errors import InputError
from creditmeter.pricing import Catalog, load_yaml, parse_catalog, rate, rates_for
from creditmeter.timeutil import parse_instant
from tests.conftest import EngineFactory

CATALOG = parse_catalog(load_yaml("""
models:
  plain: {input: 3, output: 15}
  own-rates: {input: 3, output: 15, cached_input: 0.3, cache_write: 3.75, cache_write_1h: 6, reasoning: 20}
  long:
    input: 3
    output: 15
    cached_input: 0.3
    above:
      - {prompt_tokens: 200000, input: 6, output: 22.5, cached_input: 0.6}
      - {prompt_tokens: 100000, input: 4}
  tiered:
    input: 2
    output: 8
    above: [{prompt_tokens: 1000, input: 4, output: 16}]
    tiers:
      priority: {input: 3, output: 12, above: [{prompt_tokens: 1000, input: 7}]}
      flex: {input: 1, output: 4}
  night:
    input: 1
    output: 4
    above: [{prompt_tokens: 1000, input: 2, output: 8}]
    tiers:
      priority: {input: 1.5}
    off_peak:
      - {timezone: UTC, hours: "16:30-00:30", weekdays: [mon, tue, wed, thu, fri], input: 0.5, output: 2}
      - {timezone: UTC, hours: "00:00-00:00", weekdays: [sat, sun], input: 0.25}
  office-hours:
    input: 10
    output: 10
    off_peak: [{timezone: Europe/Berlin, hours: ["09:00-17:00"], input: 1}]
  fractions: {input: 0.000001, output: 0.000001, cached_input: 0.000001, cache_write: 0.000001}
"""))


def cost(model: str, *, input: int = 0, output: int = 0, cached: int = 0, write: int = 0, write_1h: int = 0,
         reasoning: int = 0, tier: str | None = None, at: str | None = None) -> int:
    return rate(CATALOG, model, input, output, cached, write, reasoning_tokens=reasoning,
                cache_write_1h_tokens=write_1h, service_tier=tier,
                at_us=None if at is None else parse_instant(at, "at"))


def uc(*parts: tuple[int, str | int]) -> int:
    """The cost in µc of (tokens, credits per 1M tokens) parts: Σ tokens × rate, rounded up once."""
    return ceil(sum(tokens * Decimal(rate) for tokens, rate in parts))


# -- reasoning and 1-hour cache writes ------------------------------------------------------------

def test_reasoning_and_1h_writes_default_to_output_and_cache_write() -> None:
    # plain: reasoning at the output rate 15, 1-hour writes at cache_write = input = 3
    assert cost("plain", reasoning=1000, write_1h=1000) == 1000 * 15 + 1000 * 3


def test_reasoning_and_1h_writes_at_their_own_rates() -> None:
    # 100 in × 3 + 200 out × 15 + 300 reasoning × 20 + 400 cached × 0.3 + 500 write × 3.75 + 600 1h × 6
    assert cost("own-rates", input=100, output=200, reasoning=300, cached=400, write=500, write_1h=600) == (
        300 + 3000 + 6000 + 120 + 1875 + 3600)
    assert uc((100, 3), (200, 15), (300, 20), (400, "0.3"), (500, "3.75"), (600, 6)) == 14_895


# -- above a prompt-size threshold ----------------------------------------------------------------

def test_threshold_boundary_is_exclusive_and_counts_the_whole_prompt() -> None:
    # exactly 100,000 prompt tokens: the model's own rates
    assert cost("long", input=100_000, output=10) == 100_000 * 3 + 10 * 15
    # 100,001: the whole request at the rate above 100k (input 4; output not set there: 15)
    assert cost("long", input=100_001, output=10) == 100_001 * 4 + 10 * 15
    # the prompt is input + cache reads + cache writes (1-hour too): 60,000 + 20,000 + 10,000 + 10,001;
    # the cache-write rates are not set above 100k: they stay the model's own (its input rate, 3)
    assert cost("long", input=60_000, cached=20_000, write=10_000, write_1h=10_001) == uc(
        (60_000, 4), (20_000, "0.3"), (10_000, 3), (10_001, 3))
    # output and reasoning do not count towards the prompt
    assert cost("long", input=100_000, output=500_000, reasoning=500_000) == 100_000 * 3 + 1_000_000 * 15


def test_the_highest_threshold_passed_wins_and_inherits_what_it_does_not_set() -> None:
    # 200,000: still above 100k only
    assert cost("long", input=150_000, cached=50_000, output=1) == uc((150_000, 4), (50_000, "0.3"), (1, 15))
    # 200,001: above 200k: input 6, cached 0.6, output 22.5; the cache-write rate (not set anywhere)
    # stays the model's own (= its input rate 3)
    assert cost("long", input=150_001, cached=50_000, write=1000, output=2) == uc(
        (150_001, 6), (50_000, "0.6"), (1000, 3), (2, "22.5"))
    # thresholds are kept in ascending order whatever the file's order
    assert [t.prompt_tokens for t in CATALOG.models["long"].above] == [100_000, 200_000]


# -- service tiers ---------------------------------------------------------------------------------

def test_service_tiers_and_their_fallback() -> None:
    assert cost("tiered", input=100, output=10) == 100 * 2 + 10 * 8
    assert cost("tiered", input=100, output=10, tier="priority") == 100 * 3 + 10 * 12
    assert cost("tiered", input=100, output=10, tier="flex") == 100 * 1 + 10 * 4
    # a tier the model does not price costs the standard rates
    assert cost("plain", input=100, output=10, tier="priority") == cost("plain", input=100, output=10)
    assert cost("plain", input=100, output=10, tier="flex") == 100 * 3 + 10 * 15


def test_tier_and_threshold_combine_in_a_fixed_order() -> None:
    # priority above 1000: the tier's own input above (7); its output above is not set, so the
    # standard output above the threshold (16) applies over the tier's output (12)
    assert cost("tiered", input=1001, output=10, tier="priority") == 1001 * 7 + 10 * 16
    # flex has no rates above 1000: the standard ones apply (input 4, output 16)
    assert cost("tiered", input=1001, output=10, tier="flex") == 1001 * 4 + 10 * 16


@pytest.mark.parametrize("tier", ["turbo", "", "Priority", "default"])
def test_an_unknown_service_tier_is_an_error_naming_the_field(tier: str) -> None:
    with pytest.raises(InputError) as info:
        cost("plain", input=1, tier=tier)
    assert info.value.field == "service_tier"


# -- off-peak windows ------------------------------------------------------------------------------

@pytest.mark.parametrize(("at", "expected"), [
    ("2026-03-04T16:29:59Z", 1000 + 400),    # Wednesday, just before the window: input 1, output 4
    ("2026-03-04T16:30:00Z", 500 + 200),     # its start is inside: input 0.5, output 2
    ("2026-03-04T23:59:59Z", 500 + 200),     # across midnight ...
    ("2026-03-05T00:29:59Z", 500 + 200),     # ... into Thursday
    ("2026-03-05T00:30:00Z", 1000 + 400),    # its end is outside
    ("2026-03-06T23:59:59Z", 500 + 200),     # Friday night
    ("2026-03-07T00:15:00Z", 250 + 400),     # Saturday 00:15: the weekday is the instant's own, so
                                             # Friday's window has ended; Saturday's sets input 0.25
    ("2026-03-08T23:59:59Z", 250 + 400),     # Sunday, all day
    ("2026-03-09T00:15:00Z", 500 + 200),     # Monday 00:15 is inside Monday's own window
    ("2026-03-09T00:45:00Z", 1000 + 400),    # and Monday 00:45 outside every window
])
def test_off_peak_edges_midnight_and_weekdays(at: str, expected: int) -> None:
    assert cost("night", input=1000, output=100, at=at) == expected


def test_without_a_time_no_window_applies() -> None:
    assert cost("night", input=1000, output=100) == 1000 * 1 + 100 * 4


@pytest.mark.parametrize(("at", "inside"), [
    ("2026-01-15T08:00:00Z", True),    # winter: 09:00 in Berlin (UTC+1)
    ("2026-01-15T07:59:59Z", False),
    ("2026-01-15T15:59:59Z", True),    # 16:59:59
    ("2026-01-15T16:00:00Z", False),   # 17:00
    ("2026-07-15T07:00:00Z", True),    # summer: 09:00 in Berlin (UTC+2)
    ("2026-07-15T07:59:59Z", True),
    ("2026-07-15T15:00:00Z", False),   # 17:00
    ("2026-03-29T07:00:00Z", True),    # the day clocks go forward: 09:00 CEST
    ("2026-10-25T07:30:00Z", False),   # the day they go back: 08:30 CET
    ("2026-10-25T08:00:00Z", True),    # 09:00 CET
])
def test_off_peak_hours_follow_the_time_zone_and_its_daylight_saving(at: str, inside: bool) -> None:
    assert cost("office-hours", input=100, at=at) == 100 * (1 if inside else 10)


def test_off_peak_overrides_threshold_and_tier_for_the_rates_it_sets() -> None:
    night = "2026-03-04T20:00:00Z"
    # above 1000 at night: the window's input (0.5) and output (2) replace the threshold's
    assert cost("night", input=2000, output=100, at=night) == 1000 + 200
    # on Saturday the window sets only input (0.25): output stays the threshold's (8)
    assert cost("night", input=2000, output=100, at="2026-03-07T12:00:00Z") == 500 + 800
    # priority at night: the window's input over the tier's 1.5
    assert cost("night", input=100, output=10, tier="priority", at=night) == 50 + 20
    assert cost("night", input=100, output=10, tier="priority") == 150 + 40


def test_the_first_open_window_applies() -> None:
    catalog = parse_catalog(load_yaml("""
models:
  m:
    input: 10
    output: 10
    off_peak:
      - {timezone: UTC, hours: "10:00-12:00", input: 1}
      - {timezone: UTC, hours: "11:00-13:00", input: 2}
"""))
    at = parse_instant("2026-03-04T11:30:00Z", "at")
    assert rate(catalog, "m", 100, 0, 0, 0, at_us=at) == 100
    assert rate(catalog, "m", 100, 0, 0, 0, at_us=parse_instant("2026-03-04T12:30:00Z", "at")) == 200


# -- rounding --------------------------------------------------------------------------------------

def test_rounded_up_once_per_event() -> None:
    # every rate is 1 µc per 1M tokens: 4 kinds of 1 token each are 4/1,000,000 µc, charged 1 µc
    assert cost("fractions", input=1, output=1, cached=1, write=1) == 1
    assert cost("fractions", input=400_000, output=300_000, cached=300_000) == 1
    assert cost("fractions", input=400_000, output=300_000, cached=300_001) == 2
    # nothing used is 0, not 1
    assert cost("fractions") == 0


def test_rates_for_names_the_rates_a_request_gets() -> None:
    price = CATALOG.models["tiered"]
    rates = rates_for(price, "priority", 1001, None)
    assert (rates.input_uc, rates.output_uc, rates.cached_input_uc) == (7_000_000, 16_000_000, 2_000_000)


# -- the file form ---------------------------------------------------------------------------------

def test_catalog_round_trips_through_its_file_form() -> None:
    assert parse_catalog(CATALOG.to_dict()) == CATALOG
    stored = CATALOG.to_dict()["models"]
    assert stored["plain"] == {"input": "3", "output": "15", "cached_input": "3", "cache_write": "3",
                               "request": "0"}
    assert stored["night"]["off_peak"][0] == {"timezone": "UTC", "hours": ["16:30-00:30"],
                                              "weekdays": ["mon", "tue", "wed", "thu", "fri"],
                                              "input": "0.5", "output": "2"}
    assert stored["tiered"]["tiers"]["priority"] == {"input": "3", "output": "12",
                                                     "above": [{"prompt_tokens": 1000, "input": "7"}]}


def test_catalogs_stored_before_these_rules_still_parse() -> None:
    # the stored form written before: every model with exactly these five prices
    old: dict[str, Any] = {"models": {"gpt-4o": {"input": "250", "output": "1000", "cached_input": "125",
                                                 "cache_write": "250", "request": "0"}},
                           "features": {"web_search": "2"}}
    catalog = parse_catalog(old)
    assert catalog.to_dict() == old
    assert rate(catalog, "gpt-4o", 1000, 100, 0, 0, reasoning_tokens=10, cache_write_1h_tokens=10,
                service_tier="priority", at_us=0) == 1000 * 250 + 110 * 1000 + 10 * 250


BAD_FIELDS = [
    ("{input: 1, output: 1, cache_write_1h: 0.0000001}", "models.m.cache_write_1h"),
    ("{input: 1, output: 1, reasoning: -1}", "models.m.reasoning"),
    ("{input: 1, output: 1, above: {prompt_tokens: 5}}", "models.m.above"),
    ("{input: 1, output: 1, above: [{prompt_tokens: 5, input: abc}]}", "models.m.above[0].input"),
    ("{input: 1, output: 1, above: [{prompt_tokens: 5, input: 1}, {prompt_tokens: -1, input: 2}]}",
     "models.m.above[1].prompt_tokens"),
    ("{input: 1, output: 1, above: [{prompt_tokens: 5.5, input: 1}]}", "models.m.above[0].prompt_tokens"),
    ("{input: 1, output: 1, above: [{input: 1}]}", "models.m.above[0].prompt_tokens"),
    ("{input: 1, output: 1, above: [{prompt_tokens: 5, input: 1}, {prompt_tokens: 5, input: 2}]}",
     "models.m.above[1].prompt_tokens"),
    ("{input: 1, output: 1, above: [{prompt_tokens: 5}]}", "models.m.above[0]"),
    ("{input: 1, output: 1, above: [{prompt_tokens: 5, inptu: 1}]}", "models.m.above[0].inptu"),
    ("{input: 1, output: 1, above: [5]}", "models.m.above[0]"),
    ("{input: 1, output: 1, tiers: {turbo: {input: 1}}}", "models.m.tiers.turbo"),
    ("{input: 1, output: 1, tiers: [priority]}", "models.m.tiers"),
    ("{input: 1, output: 1, tiers: {priority: {}}}", "models.m.tiers.priority"),
    ("{input: 1, output: 1, tiers: {priority: {request: 1}}}", "models.m.tiers.priority.request"),
    ("{input: 1, output: 1, tiers: {flex: {above: [{prompt_tokens: x, input: 1}]}}}",
     "models.m.tiers.flex.above[0].prompt_tokens"),
    ("{input: 1, output: 1, off_peak: {timezone: UTC}}", "models.m.off_peak"),
    ("{input: 1, output: 1, off_peak: [{hours: '01:00-02:00', input: 1}]}", "models.m.off_peak[0].timezone"),
    ("{input: 1, output: 1, off_peak: [{timezone: Mars/Olympus, hours: '01:00-02:00', input: 1}]}",
     "models.m.off_peak[0].timezone"),
    ("{input: 1, output: 1, off_peak: [{timezone: UTC, input: 1}]}", "models.m.off_peak[0].hours"),
    ("{input: 1, output: 1, off_peak: [{timezone: UTC, hours: '1-2', input: 1}]}",
     "models.m.off_peak[0].hours"),
    ("{input: 1, output: 1, off_peak: [{timezone: UTC, hours: ['01:00-02:00', '24:00-01:00'], input: 1}]}",
     "models.m.off_peak[0].hours[1]"),
    ("{input: 1, output: 1, off_peak: [{timezone: UTC, hours: '01:00-02:60', input: 1}]}",
     "models.m.off_peak[0].hours"),
    ("{input: 1, output: 1, off_peak: [{timezone: UTC, hours: '01:00-02:00', weekdays: [mon, funday], "
     "input: 1}]}", "models.m.off_peak[0].weekdays[1]"),
    ("{input: 1, output: 1, off_peak: [{timezone: UTC, hours: '01:00-02:00', weekdays: [8], input: 1}]}",
     "models.m.off_peak[0].weekdays[0]"),
    ("{input: 1, output: 1, off_peak: [{timezone: UTC, hours: '01:00-02:00', weekdays: mon, input: 1}]}",
     "models.m.off_peak[0].weekdays"),
    ("{input: 1, output: 1, off_peak: [{timezone: UTC, hours: '01:00-02:00'}]}", "models.m.off_peak[0]"),
    ("{input: 1, output: 1, off_peak: [{timezone: UTC, hours: '01:00-02:00', input: 1, request: 1}]}",
     "models.m.off_peak[0].request"),
]


@pytest.mark.parametrize(("model", "field"), BAD_FIELDS, ids=[f for _, f in BAD_FIELDS])
def test_bad_rules_name_the_field(model: str, field: str) -> None:
    with pytest.raises(InputError) as info:
        parse_catalog(load_yaml(f"models:\n  m: {model}\n"))
    assert info.value.field == field, info.value


def test_example_catalog_shows_every_rule() -> None:
    from pathlib import Path

    import creditmeter

    text = (Path(creditmeter.__file__).parent / "catalogs" / "example.yaml").read_text(encoding="utf-8")
    catalog: Catalog = parse_catalog(load_yaml(text))
    prices = catalog.models.values()
    assert any(p.above for p in prices) and any(p.tiers for p in prices) and any(p.off_peak for p in prices)
    assert any(p.reasoning_uc is not None for p in prices)
    assert any(p.cache_write_1h_uc is not None for p in prices)


def test_recorded_events_are_priced_by_their_tier_and_time(make_engine: EngineFactory) -> None:
    """Through the engine: an event's service tier and timestamp choose its rates, and a held
    request settles at them."""
    engine = make_engine()
    t0 = parse_instant("2026-03-04T20:00:00Z", "at")  # Wednesday night: the night window is open
    engine.load_prices(CATALOG, 0, t0)
    engine.create_account("u", t0)
    engine.add_grant("u", 10**9, "addon", t0, grant_id="g")
    night = engine.record({"id": "e1", "account_id": "u", "model": "night", "input_tokens": 1000,
                           "output_tokens": 100, "reasoning_tokens": 10,
                           "timestamp": "2026-03-04T20:00:00Z"}, t0)
    day = engine.record({"id": "e2", "account_id": "u", "model": "night", "input_tokens": 1000,
                         "output_tokens": 100, "service_tier": "priority",
                         "timestamp": "2026-03-04T12:00:00Z"}, t0)
    # night: input 0.5, output 2; the model sets no reasoning rate, so reasoning is the output
    # rate in force (2); day on priority: input 1.5, output 4
    assert (night.cost_uc, day.cost_uc) == (500 + 200 + 20, 1500 + 400)
    hold, amount = engine.reserve_estimate("u", "tiered", 1001, 10, t0, service_tier="priority")
    assert isinstance(hold, Hold) and amount == 1001 * 7 + 10 * 16
    usage = Usage("tiered", input_tokens=1001, output_tokens=10, service_tier="priority")
    charge = engine.settle(hold.id, usage, t0)
    assert charge.cost_uc == amount
    assert engine.check_invariants() == []


def test_a_rule_that_raises_output_or_cache_writes_raises_the_rates_that_follow_them() -> None:
    """A model that sets no reasoning or 1-hour rate of its own prices them at the output and
    cache-write rates in force, above a threshold, on a tier and off-peak alike."""
    from creditmeter.pricing import parse_catalog, rate
    catalog = parse_catalog({"models": {"m": {
        "input": 300, "output": 1500, "cache_write": 375,
        "above": [{"prompt_tokens": 200000, "input": 600, "output": 2250, "cache_write": 750}],
        "tiers": {"priority": {"input": 510, "output": 2550}}}}})
    long_prompt = 200_001
    assert rate(catalog, "m", long_prompt, 0, 0, 0, reasoning_tokens=1_000_000) == \
        rate(catalog, "m", long_prompt, 1_000_000, 0, 0)
    assert rate(catalog, "m", 0, 0, 0, 0, cache_write_1h_tokens=long_prompt) == \
        rate(catalog, "m", 0, 0, 0, long_prompt)
    assert rate(catalog, "m", 10, 0, 0, 0, reasoning_tokens=1_000_000, service_tier="priority") == \
        rate(catalog, "m", 10, 1_000_000, 0, 0, service_tier="priority")


def test_a_time_zone_that_names_a_folder_is_refused_naming_the_field() -> None:
    from creditmeter.errors import InputError
    from creditmeter.pricing import parse_catalog
    with pytest.raises(InputError) as caught:
        parse_catalog({"models": {"m": {"input": 1, "output": 1, "off_peak": [
            {"timezone": "Europe", "hours": "00:00-08:00", "input": 0.5}]}}})
    assert "timezone" in caught.value.field
