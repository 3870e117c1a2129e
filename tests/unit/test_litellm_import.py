"""Importing the real LiteLLM price map (SPEC §3 Import) into a catalog at a credits-per-USD rate."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from creditmeter.cli import main
from creditmeter.engine import Engine
from creditmeter.errors import InputError
from creditmeter.pricing import ImportReport, ModelPrice, Rates, Tier, import_litellm, parse_catalog, rate
from tests.conftest import EngineFactory, at

FIXTURE = Path(__file__).parents[1] / "fixtures" / "litellm_model_prices.json.gz"
ENTRIES = 4_553
FIELDS = {"input": "input_cost_per_token", "output": "output_cost_per_token",
          "cached_input": "cache_read_input_token_cost", "cache_write": "cache_creation_input_token_cost"}


@pytest.fixture(scope="module")
def litellm_text() -> str:
    return gzip.decompress(FIXTURE.read_bytes()).decode("utf-8")


@pytest.fixture(scope="module")
def litellm_data(litellm_text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(litellm_text, parse_float=Decimal)
    return data


@pytest.fixture(scope="module")
def report_1000(litellm_data: dict[str, Any]) -> ImportReport:
    return import_litellm(litellm_data, Decimal(1000))


def test_fixture_is_the_full_map(litellm_data: dict[str, Any]) -> None:
    assert len(litellm_data) == ENTRIES


def test_imports_thousands_and_skips_the_rest_with_a_reason(litellm_data: dict[str, Any],
                                                            report_1000: ImportReport) -> None:
    report = report_1000
    assert report.imported == len(report.catalog.models)
    assert report.imported >= 3_000
    skipped = dict(report.skipped)
    assert len(skipped) == len(report.skipped)  # each at most once
    assert report.imported + len(skipped) == ENTRIES
    assert set(report.catalog.models) | set(skipped) == set(litellm_data)
    assert not set(report.catalog.models) & set(skipped)
    assert all(isinstance(reason, str) and reason.strip() for reason in skipped.values())
    # the documentation entry and image models priced per image
    assert "sample_spec" in skipped
    assert "aiml/dall-e-3" in skipped
    assert "per_image" in skipped["aiml/dall-e-3"] or "per token" in skipped["aiml/dall-e-3"]
    image_models = [name for name, entry in litellm_data.items()
                    if isinstance(entry, dict) and entry.get("mode") == "image_generation"
                    and entry.get("input_cost_per_token") is None]
    assert len(image_models) > 10
    assert all(name in skipped for name in image_models)
    # every entry without a per-token input price (flat or in tiered_pricing ranges) is skipped
    for name in report.catalog.models:
        entry = litellm_data[name]
        assert entry.get("input_cost_per_token") is not None or entry.get("tiered_pricing"), name


def test_imported_models_are_priced_per_token(litellm_data: dict[str, Any],
                                              report_1000: ImportReport) -> None:
    for name in report_1000.catalog.models:
        entry = litellm_data[name]
        prices = [entry.get("input_cost_per_token")] + [t.get("input_cost_per_token")
                                                        for t in entry.get("tiered_pricing") or []]
        assert any(isinstance(p, Decimal | int) for p in prices), name


def _own(price: ModelPrice) -> ModelPrice:
    """A model's own prices, without the rules laid over them."""
    return replace(price, above=(), tiers={}, off_peak=())


@pytest.mark.parametrize(("name", "expected"), [
    # gpt-4o: 2.5e-06 USD/token × 1000 credits/USD × 1e6 tokens = 2500 credits per 1M = 2_500_000_000 µc
    #         1e-05 -> 10_000 credits; 1.25e-06 cache read -> 1250 credits; no cache write -> input price
    ("gpt-4o", ModelPrice(2_500_000_000, 10_000_000_000, 1_250_000_000, 2_500_000_000, 0)),
    # gpt-4o-mini: 1.5e-07 -> 150 credits; 6e-07 -> 600; 7.5e-08 -> 75; cache write -> input
    ("gpt-4o-mini", ModelPrice(150_000_000, 600_000_000, 75_000_000, 150_000_000, 0)),
    # claude-sonnet-4-5: 3e-06 -> 3000; 1.5e-05 -> 15000; 3e-07 -> 300; 3.75e-06 -> 3750;
    #                    1-hour cache writes 6e-06 -> 6000
    ("claude-sonnet-4-5", ModelPrice(3_000_000_000, 15_000_000_000, 300_000_000, 3_750_000_000, 0,
                                     cache_write_1h_uc=6_000_000_000)),
    # claude-haiku-4-5: 1e-06 -> 1000; 5e-06 -> 5000; 1e-07 -> 100; 1.25e-06 -> 1250; 1 hour 2e-06 -> 2000
    ("claude-haiku-4-5", ModelPrice(1_000_000_000, 5_000_000_000, 100_000_000, 1_250_000_000, 0,
                                    cache_write_1h_uc=2_000_000_000)),
    # an embedding model: 1.3e-07 -> 130 credits; output 0.0 -> free
    ("text-embedding-3-large", ModelPrice(130_000_000, 0, 130_000_000, 130_000_000, 0)),
    # o1: 1.5e-05 -> 15000; 6e-05 -> 60000; 7.5e-06 -> 7500
    ("o1", ModelPrice(15_000_000_000, 60_000_000_000, 7_500_000_000, 15_000_000_000, 0)),
    # rounded up: 0.0000029999900000000002 × 1e9 = 2999.9900000000002 credits -> 2_999_990_001 µc
    #             0.000015000020000000002 × 1e9 = 15000.020000000002 -> 15_000_020_001 µc
    #             3.0002e-07 -> 300.02 credits (exact); 0.00000374997 -> 3749.97 (exact)
    ("databricks/databricks-claude-sonnet-4-1",
     ModelPrice(2_999_990_001, 15_000_020_001, 300_020_000, 3_749_970_000, 0)),
])
def test_golden_prices_at_1000_credits_per_usd(report_1000: ImportReport, name: str,
                                               expected: ModelPrice) -> None:
    assert _own(report_1000.catalog.models[name]) == expected


def test_golden_rules_at_1000_credits_per_usd(report_1000: ImportReport) -> None:
    models = report_1000.catalog.models
    # gpt-4o on the priority tier: input 4.25e-06 -> 4250 credits, output 1.7e-05 -> 17000, cache reads
    # 2.125e-06 -> 2125; it has no cache-write price, so LiteLLM writes at the tier's input price
    assert models["gpt-4o"].tiers["priority"] == Tier(Rates(4_250_000_000, 17_000_000_000, 2_125_000_000,
                                                            4_250_000_000, 4_250_000_000, 17_000_000_000))
    # gemini-2.5-pro above 200k prompt tokens: input 2.5e-06, output 1.5e-05, cache reads 2.5e-07
    above = models["gemini/gemini-2.5-pro"].above
    assert [(t.prompt_tokens, t.rates.input_uc, t.rates.output_uc, t.rates.cached_input_uc)
            for t in above] == [(200_000, 2_500_000_000, 15_000_000_000, 250_000_000)]
    # qwen-flash, priced only by ranges: 5e-08 / 4e-07 up to 256k, 2.5e-07 / 2e-06 above
    qwen = models["dashscope/qwen-flash"]
    assert (qwen.input_uc, qwen.output_uc) == (50_000_000, 400_000_000)
    assert [(t.prompt_tokens, t.rates.input_uc, t.rates.output_uc) for t in qwen.above] == [
        (256_000, 250_000_000, 2_000_000_000)]


def test_rounded_prices_are_reported(report_1000: ImportReport) -> None:
    rounded = set(report_1000.rounded)
    assert ("databricks/databricks-claude-sonnet-4-1", "input") in rounded
    assert ("databricks/databricks-claude-sonnet-4-1", "output") in rounded
    assert ("databricks/databricks-claude-sonnet-4-1", "cached_input") not in rounded
    assert not any(name == "gpt-4o" for name, _ in rounded)
    assert len(rounded) == len(report_1000.rounded)


@pytest.mark.parametrize("credits_per_usd", ["1000", "1", "1.234567", "0.001", "333.333333333"])
def test_every_imported_price_is_the_exact_price_rounded_up(litellm_data: dict[str, Any],
                                                            credits_per_usd: str) -> None:
    """Each price is ceil(usd × rate × 1e12) µc per 1M tokens; exactly the inexact ones are listed."""
    factor = Decimal(credits_per_usd)
    report = import_litellm(litellm_data, factor)
    rounded = set(report.rounded)
    for name, price in report.catalog.models.items():
        entry = litellm_data[name]
        special = entry.get("litellm_provider") in ("fireworks_ai", "perplexity") or "tiered_pricing" in entry
        for ours, theirs in FIELDS.items():
            usd = entry.get(theirs)
            if usd is None or (special and ours not in ("input", "output")):
                continue
            exact = Fraction(usd) * Fraction(factor) * 10**12
            assert getattr(price, f"{ours}_uc") == math.ceil(exact), (name, ours)
            assert ((name, ours) in rounded) == (exact != int(exact)), (name, ours)
        if entry.get("cache_read_input_token_cost") is None and not special:
            assert price.cached_input_uc == price.input_uc, name
            assert ((name, "cached_input") in rounded) == ((name, "input") in rounded)
        if entry.get("cache_creation_input_token_cost") is None and not special:
            assert price.cache_write_uc == price.input_uc, name
    # each rounded price is one the catalog holds
    for name, path in rounded:
        assert path in {"input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning",
                        "request"} or path.startswith(("above[", "tiers.", "off_peak.")), (name, path)


def test_other_rates(litellm_data: dict[str, Any]) -> None:
    # 1 credit per USD: gpt-4o input 2.5e-06 × 1e6 = 2.5 credits per 1M = 2_500_000 µc
    one = import_litellm(litellm_data, Decimal(1))
    assert _own(one.catalog.models["gpt-4o"]) == ModelPrice(2_500_000, 10_000_000, 1_250_000, 2_500_000, 0)
    # 0.001 credits per USD: gpt-4o-mini input 1.5e-07 × 1e3 = 0.00015 credits per 1M = 150 µc
    milli = import_litellm(litellm_data, Decimal("0.001"))
    assert milli.catalog.models["gpt-4o-mini"].input_uc == 150
    assert milli.catalog.models["gpt-4o-mini"].cached_input_uc == 75


def test_bad_rate_and_bad_map_are_input_errors(litellm_data: dict[str, Any]) -> None:
    for bad_rate in (Decimal(0), Decimal(-1)):
        with pytest.raises(InputError) as info:
            import_litellm(litellm_data, bad_rate)
        assert info.value.field == "credits_per_usd"
    with pytest.raises(InputError):
        import_litellm([1, 2, 3], Decimal(1))


def test_prices_not_converted_are_listed_per_model(litellm_data: dict[str, Any],
                                                  report_1000: ImportReport) -> None:
    listed = dict(report_1000.unconverted)
    assert len(listed) == len(report_1000.unconverted)
    assert set(listed) <= set(report_1000.catalog.models)
    for name, fields in listed.items():
        assert fields and list(fields) == sorted(set(fields)), name
        # each named as in the map
        assert all(litellm_data[name].get(field) is not None for field in fields), name
    # batch prices and web-search prices are not held; the 1-hour cache write is
    claude = set(listed["claude-sonnet-4-5"])
    assert {"input_cost_per_token_batches", "search_context_cost_per_query"} <= claude
    assert not {"cache_creation_input_token_cost_above_1hr", "input_cost_per_token",
                "cache_creation_input_token_cost"} & claude
    # the priority tier is held, the batch one is not
    assert "input_cost_per_token_batches" in listed["gpt-4o"]
    assert not any(field.endswith("_priority") for field in listed["gpt-4o"])
    # audio tokens (no such count in an event) are listed
    audio = [name for name in report_1000.catalog.models
             if litellm_data[name].get("input_cost_per_audio_token")]
    assert audio and all("input_cost_per_audio_token" in listed[name] for name in audio)
    # a model with nothing but token prices lists nothing (its input_cost_per_token_cache_hit is
    # the cache-read price under another name)
    assert "deepseek/deepseek-chat" in report_1000.catalog.models
    assert "deepseek/deepseek-chat" not in listed


def test_skipped_models_are_refused_never_free(report_1000: ImportReport) -> None:
    for name, _ in report_1000.skipped:
        with pytest.raises(InputError) as info:
            rate(report_1000.catalog, name, 1000, 1000, 0, 0)
        assert info.value.field == "model"


def test_a_model_priced_another_way_is_not_imported_free() -> None:
    data = {
        "per-second": {"input_cost_per_token": 0, "output_cost_per_token": 0, "input_cost_per_second": 0.001,
                       "mode": "chat"},
        "per-query": {"input_cost_per_token": 0, "output_cost_per_token": 0, "input_cost_per_query": 0.002,
                      "mode": "chat"},
        "free": {"input_cost_per_token": 0, "output_cost_per_token": 0, "mode": "chat"},
    }
    report = import_litellm(data, Decimal(1000))
    assert set(report.catalog.models) == {"free"}
    skipped = dict(report.skipped)
    assert "input_cost_per_second" in skipped["per-second"]
    assert "input_cost_per_query" in skipped["per-query"]


def _one(entry: dict[str, Any], name: str = "m") -> ModelPrice:
    report = import_litellm({name: {"mode": "chat", **entry}}, Decimal(1000))
    assert not report.skipped, report.skipped
    return report.catalog.models[name]


D = Decimal


def test_off_peak_hours_in_utc_with_weekdays_elsewhere_become_local_hours() -> None:
    # UTC 16:30-00:30 on Shanghai weekdays Mon-Fri is 00:30-08:30 Shanghai time on those weekdays;
    # with no cache prices of its own, cache reads and writes cost the off-peak input price
    block = {"input_cost_per_token": D("1.5e-7"), "weekday_timezone": "Asia/Shanghai",
             "windows": [{"hours_utc": "16:30-00:30", "weekdays": [1, 2, 3, 4, 5]}]}
    price = _one({"litellm_provider": "deepseek", "input_cost_per_token": D("3e-7"),
                  "output_cost_per_token": D("1.2e-6"), "off_peak_pricing": block})
    (window,) = price.off_peak
    assert window.to_dict() == {"timezone": "Asia/Shanghai", "hours": ["00:30-08:30"],
                                "weekdays": ["mon", "tue", "wed", "thu", "fri"], "input": "150",
                                "cached_input": "150", "cache_write": "150", "cache_write_1h": "150"}
    # a zone with daylight-saving time has no fixed local hours for a UTC range: skipped, with why
    report = import_litellm({"m": {"mode": "chat", "input_cost_per_token": D("3e-7"),
                                   "output_cost_per_token": D("1.2e-6"),
                                   "off_peak_pricing": {"input_cost_per_token": D("1.5e-7"),
                                                        "weekday_timezone": "America/New_York",
                                                        "windows": [{"hours_utc": "16:30-00:30"}]}}}, D(1000))
    assert "America/New_York" in dict(report.skipped)["m"]


def test_thresholds_ranges_and_provider_rules() -> None:
    # xAI bills the higher rate from the threshold itself: more than 127,999 prompt tokens
    xai = _one({"litellm_provider": "xai", "input_cost_per_token": D("2e-6"),
                "output_cost_per_token": D("1e-5"), "input_cost_per_token_above_128k_tokens": D("4e-6")})
    assert [(t.prompt_tokens, t.rates.input_uc) for t in xai.above] == [(127_999, 4_000_000_000)]
    # ranges alone: the first prices the smallest prompts, each later one the whole request above it
    ranged = _one({"litellm_provider": "dashscope", "tiered_pricing": [
        {"input_cost_per_token": D("1e-6"), "output_cost_per_token": D("2e-6"), "range": [0, 32000]},
        {"input_cost_per_token": D("3e-6"), "output_cost_per_token": D("6e-6"), "range": [32000, 128000]},
        {"input_cost_per_token": D("5e-6"), "output_cost_per_token": D("9e-6"), "range": [128000, 1000000]}]})
    assert (ranged.input_uc, ranged.output_uc, ranged.cached_input_uc) == (1_000_000_000, 2_000_000_000,
                                                                           1_000_000_000)
    assert [(t.prompt_tokens, t.rates.input_uc, t.rates.output_uc, t.rates.cached_input_uc)
            for t in ranged.above] == [(32_000, 3_000_000_000, 6_000_000_000, 3_000_000_000),
                                       (128_000, 5_000_000_000, 9_000_000_000, 5_000_000_000)]
    # Perplexity bills cache writes as prompt tokens at the input rate; Fireworks cache reads at half
    sonar = _one({"litellm_provider": "perplexity", "input_cost_per_token": D("1e-6"),
                  "output_cost_per_token": D("1e-6"), "cache_creation_input_token_cost": D("5e-6")})
    assert (sonar.cache_write_uc, sonar.cache_write_1h_uc) == (1_000_000_000, None)
    fireworks = _one({"litellm_provider": "fireworks_ai", "input_cost_per_token": D("1e-6"),
                      "output_cost_per_token": D("1e-6")})
    assert fireworks.cached_input_uc == 500_000_000


def test_a_tier_without_its_own_cache_prices_writes_at_its_input_price() -> None:
    # as LiteLLM does: the tier's input rate stands in for the cache prices the map does not give
    price = _one({"litellm_provider": "openai", "input_cost_per_token": D("2e-6"),
                  "output_cost_per_token": D("8e-6"), "cache_read_input_token_cost": D("5e-7"),
                  "input_cost_per_token_priority": D("3.5e-6"),
                  "output_cost_per_token_priority": D("1.4e-5")})
    assert price.tiers["priority"] == Tier(Rates(3_500_000_000, 14_000_000_000, None, 3_500_000_000,
                                                 3_500_000_000, 14_000_000_000))
    assert rate(parse_catalog({"models": {"m": price.to_dict()}}), "m", 1000, 0, 1000, 1000,
                service_tier="priority") == 1000 * 3500 + 1000 * 500 + 1000 * 3500


def test_unusual_entries_are_skipped_not_fatal() -> None:
    data = {
        "good": {"input_cost_per_token": Decimal("1e-6"), "output_cost_per_token": Decimal("2e-6")},
        "negative": {"input_cost_per_token": Decimal("-1e-6"), "output_cost_per_token": Decimal("2e-6")},
        "text": {"input_cost_per_token": "cheap", "output_cost_per_token": Decimal("2e-6")},
        "per-image": {"output_cost_per_image": Decimal("0.04"), "mode": "image_generation"},
        "no-prices": {"mode": "chat"},
        "not-an-object": 5,
        "sample_spec": {"input_cost_per_token": 0, "output_cost_per_token": 0},
    }
    report = import_litellm(data, Decimal(1000))
    assert set(report.catalog.models) == {"good"}
    assert report.catalog.models["good"] == ModelPrice(1_000_000_000, 2_000_000_000, 1_000_000_000,
                                                       1_000_000_000, 0)
    skipped = dict(report.skipped)
    assert set(skipped) == set(data) - {"good"}
    assert "negative" in skipped["negative"]
    assert "output_cost_per_image" in skipped["per-image"]


def test_imported_catalog_rates_an_event_exactly(make_engine: EngineFactory,
                                                 report_1000: ImportReport) -> None:
    catalog = report_1000.catalog
    # gpt-4o at 1000 credits/USD: 2500 / 10_000 / 1250 µc per token
    # 1000 × 2500 + 500 × 10_000 + 2000 × 1250 = 2_500_000 + 5_000_000 + 2_500_000 = 10 credits ($0.01)
    assert rate(catalog, "gpt-4o", 1000, 500, 2000, 0) == 10_000_000
    # rounded price: 1 input token at 2_999_990_001 µc per 1M = 2999.990001 µc -> 3000
    assert rate(catalog, "databricks/databricks-claude-sonnet-4-1", 1, 0, 0, 0) == 3000
    # 1M input tokens: exactly the (rounded) price
    assert rate(catalog, "databricks/databricks-claude-sonnet-4-1", 1_000_000, 0, 0, 0) == 2_999_990_001
    # the catalog survives its file form (what is stored) unchanged
    assert parse_catalog(catalog.to_dict()).models == catalog.models
    # and through an engine: the imported catalog as a price version, an event charged against it
    engine: Engine = make_engine()
    t0 = at("2026-06-01T09:00:00Z")
    version = engine.load_prices(catalog, at("2026-06-01"), t0, source="litellm")
    engine.create_account("u", t0)
    engine.add_grant("u", 100_000_000, "addon", t0, grant_id="g")
    charge = engine.record({"id": "e", "account_id": "u", "model": "gpt-4o", "input_tokens": 1000,
                            "output_tokens": 500, "cached_input_tokens": 2000}, t0)
    assert (charge.cost_uc, charge.price_version) == (10_000_000, version.version)
    assert engine.balance("u", t0).available_uc == 90_000_000
    assert engine.check_invariants() == []


# -- CLI -----------------------------------------------------------------------------------------

def _run(args: Sequence[str], db: str) -> Result:
    return CliRunner().invoke(main, [*args, "--db", db])


@pytest.fixture
def litellm_file(tmp_path: Path, litellm_text: str) -> Path:
    path = tmp_path / "model_prices.json"
    path.write_text(litellm_text, encoding="utf-8")
    return path


def test_cli_import_prints_the_counts(tmp_path: Path, litellm_file: Path, report_1000: ImportReport) -> None:
    db = f"sqlite:///{tmp_path}/x.db"
    assert _run(["db", "upgrade"], db).exit_code == 0
    result = _run(["prices", "import-litellm", str(litellm_file), "--credits-per-usd", "1000",
                   "--at", "2026-03-01"], db)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"imported {report_1000.imported} models" in out
    assert f"skipped {len(report_1000.skipped)}" in out
    assert f"rounded up {len(report_1000.rounded)}" in out
    assert f"{len(report_1000.unconverted)} models with prices not converted" in out
    batches = sum("input_cost_per_token_batches" in fields for _, fields in report_1000.unconverted)
    assert f"not converted in {batches:5d} models: input_cost_per_token_batches" in out
    listed = _run(["prices", "list", "--json", "--at", "2026-03-01"], db)
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert data["versions"][0]["models"] == report_1000.imported
    assert data["catalog"]["models"]["gpt-4o"]["input"] == "2500"
    assert data["catalog"]["models"]["gpt-4o"]["cached_input"] == "1250"
    assert data["catalog"]["models"]["databricks/databricks-claude-sonnet-4-1"]["input"] == "2999.990001"
    # an event against the imported prices, through the CLI
    assert _run(["accounts", "create", "u", "--at", "2026-03-01"], db).exit_code == 0
    charged = _run(["usage", "record", "u", "--model", "gpt-4o", "--input", "1000", "--output", "500",
                    "--cached-input", "2000", "--id", "e1", "--at", "2026-03-01T00:01:00Z", "--json"], db)
    assert charged.exit_code == 0, charged.output
    assert json.loads(charged.stdout)["cost_credits"] == "10"


def test_cli_import_json_lists(tmp_path: Path, litellm_file: Path, report_1000: ImportReport) -> None:
    db = f"sqlite:///{tmp_path}/x.db"
    assert _run(["db", "upgrade"], db).exit_code == 0
    result = _run(["prices", "import-litellm", str(litellm_file), "--credits-per-usd", "1000",
                   "--effective", "2026-02-01", "--at", "2026-03-01", "--json"], db)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["imported"] == report_1000.imported
    assert data["effective_at"] == "2026-02-01T00:00:00Z"
    skipped = {item["model"]: item["reason"] for item in data["skipped"]}
    assert len(skipped) == len(data["skipped"]) == len(report_1000.skipped)
    assert data["imported"] + len(skipped) == ENTRIES
    assert skipped["sample_spec"]
    assert skipped["aiml/dall-e-3"]
    rounded = {(item["model"], item["price"]) for item in data["rounded"]}
    assert rounded == set(report_1000.rounded)
    assert [(item["model"], tuple(item["fields"])) for item in data["unconverted"]] == list(
        report_1000.unconverted)
    assert ("databricks/databricks-claude-sonnet-4-1", "input") in rounded


@pytest.mark.parametrize("bad_rate", ["0", "-5", "abc"])
def test_cli_import_rejects_a_bad_rate(tmp_path: Path, litellm_file: Path, bad_rate: str) -> None:
    db = f"sqlite:///{tmp_path}/x.db"
    assert _run(["db", "upgrade"], db).exit_code == 0
    result = _run(["prices", "import-litellm", str(litellm_file), f"--credits-per-usd={bad_rate}"], db)
    assert result.exit_code == 2
    assert "credits-per-usd" in result.stderr
    listed = json.loads(_run(["prices", "list", "--json"], db).stdout)
    assert listed["versions"] == []


def test_cli_import_rejects_malformed_json(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/x.db"
    assert _run(["db", "upgrade"], db).exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpt-4o": {"input_cost_per_token": 1e-6,', encoding="utf-8")
    result = _run(["prices", "import-litellm", str(bad), "--credits-per-usd", "1000"], db)
    assert result.exit_code == 2
    assert "bad.json" in result.stderr
    assert json.loads(_run(["prices", "list", "--json"], db).stdout)["versions"] == []
