"""Golden tests of rating (SPEC §3): the cost formula, rounding, defaults, exact decimals, versions.

The cases live in ``tests/golden/pricing_cases.yaml`` with the arithmetic in comments; each is
checked through the pure :func:`creditmeter.pricing.rate` and through the engine.
"""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from creditmeter.domain import Charge, Rejected
from creditmeter.engine import Engine
from creditmeter.errors import InputError
from creditmeter.events import TOKEN_FIELDS, parse_event
from creditmeter.pricing import Catalog, ModelPrice, PriceBook, PriceVersion, load_yaml, parse_catalog, rate
from tests.conftest import EngineFactory, at

GOLDEN = Path(__file__).parents[1] / "golden" / "pricing_cases.yaml"
DATA: dict[str, Any] = load_yaml(GOLDEN.read_text(encoding="utf-8"), str(GOLDEN))
CASES: list[dict[str, Any]] = DATA["cases"]


def _rate_event(catalog: Catalog, event: dict[str, Any]) -> int:
    return rate(catalog, event.get("model"), event.get("input_tokens", 0), event.get("output_tokens", 0),
                event.get("cached_input_tokens", 0), event.get("cache_write_tokens", 0),
                tuple(sorted((event.get("quantities") or {}).items())))


@pytest.fixture(scope="module")
def golden_catalog() -> Catalog:
    return parse_catalog(DATA["catalog"])


def test_golden_file_is_well_formed() -> None:
    assert len(CASES) >= 30
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert type(case["cost_uc"]) is int, case["name"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_cost(golden_catalog: Catalog, case: dict[str, Any]) -> None:
    assert _rate_event(golden_catalog, case["event"]) == case["cost_uc"]


def test_golden_costs_through_the_engine(make_engine: EngineFactory, golden_catalog: Catalog) -> None:
    """The engine charges exactly the golden cost and records the version it used; an event that
    records no usage (no token, no unit, no request fee) is refused, naming the event."""
    engine = make_engine()
    t0 = at("2026-05-01T10:00:00Z")
    version = engine.load_prices(golden_catalog, at("2026-05-01"), t0)
    # One account per case: an account's overage is bounded (10^12 credits), and the largest
    # golden costs would pass that bound together.
    for i in range(len(CASES)):
        engine.create_account(f"golden-{i}", t0)
    events = [{"id": f"g{i}", "account_id": f"golden-{i}", **case["event"]} for i, case in enumerate(CASES)]
    results = engine.record_batch(events, t0)
    recorded = []
    for i, (case, result) in enumerate(zip(CASES, results, strict=True)):
        if case["cost_uc"] == 0 and not any(case["event"].get(k) for k in TOKEN_FIELDS) \
                and not any((case["event"].get("quantities") or {}).values()):
            assert isinstance(result, Rejected) and result.field == "event", (case["name"], result)
            continue
        recorded.append(i)
        assert isinstance(result, Charge) and result.status == "charged", (case["name"], result)
        assert result.cost_uc == case["cost_uc"], case["name"]
        assert result.price_version == version.version
        assert result.overage_uc == case["cost_uc"]  # no grants: all of it is overage
    assert recorded and len(recorded) < len(CASES)
    for i, case in enumerate(CASES):
        stored = {s.event.id: s.charge.cost_uc for s in engine.usage(f"golden-{i}")}
        assert stored == ({f"g{i}": case["cost_uc"]} if i in recorded else {})
        assert engine.balance(f"golden-{i}", t0).overage_uc == case["cost_uc"]
    assert engine.check_invariants() == []


def test_catalog_prices_are_integer_uc_per_million(golden_catalog: Catalog) -> None:
    models = golden_catalog.models
    assert models["m-basic"] == ModelPrice(250_000_000, 1_000_000_000, 125_000_000, 375_000_000, 0)
    # cached_input and cache_write default to the input price
    assert models["m-defaults"] == ModelPrice(3_000_000, 15_000_000, 3_000_000, 3_000_000, 0)
    assert models["m-fee"] == ModelPrice(500_000, 2_000_000, 500_000, 500_000, 250_000)
    assert models["m-free"] == ModelPrice(0, 0, 0, 0, 0)
    assert models["m-tiny"] == ModelPrice(1, 3, 1, 1, 0)
    assert models["m-decimal"] == ModelPrice(100_000, 200_000, 300_000, 700_000, 0)
    assert models["m-huge-price"].input_uc == 999_999_999_999_999_999
    assert golden_catalog.features == {"web_search": 2_000_000, "kb_retrieval": 500_000, "free_tool": 0}


def test_explicit_zero_cache_prices_are_not_replaced_by_the_default() -> None:
    catalog = parse_catalog(load_yaml("models:\n  m:\n    input: 10\n    output: 20\n"
                                      "    cached_input: 0\n    cache_write: 0\n"))
    assert catalog.models["m"] == ModelPrice(10_000_000, 20_000_000, 0, 0, 0)
    assert rate(catalog, "m", 0, 0, 1_000_000, 1_000_000) == 0


def test_yaml_floats_are_read_as_exact_decimals() -> None:
    text = ("models:\n  m:\n    input: 0.1\n    output: 0.2\n    cached_input: 0.3\n"
            "    cache_write: 1_000.000001\n    request: 0.000001\n"
            "features:\n  f: 123456789.123456\n  g: 0.30000000000000004\n")
    data = load_yaml(text)
    assert isinstance(data["models"]["m"]["input"], Decimal)
    assert data["models"]["m"]["input"] + data["models"]["m"]["output"] == Decimal("0.3")
    assert data["models"]["m"]["output"] + data["models"]["m"]["input"] == data["models"]["m"]["cached_input"]
    with pytest.raises(InputError) as info:
        parse_catalog(data)
    # 0.30000000000000004 has 17 places: rejected, not silently read as 0.3
    assert info.value.field == "features.g"
    del data["features"]["g"]
    catalog = parse_catalog(data)
    assert catalog.models["m"] == ModelPrice(100_000, 200_000, 300_000, 1_000_000_001, 1)
    assert catalog.features["f"] == 123_456_789_123_456
    # 0.1 + 0.2 at the cost level: 1M tokens of each is 0.3 credits, exactly the cached price of 1M
    assert rate(catalog, "m", 1_000_000, 1_000_000, 0, 0) == 300_000 + 1
    assert rate(catalog, "m", 0, 0, 1_000_000, 0) == 300_000 + 1


def test_json_float_prices_read_through_their_repr() -> None:
    # A catalog given as parsed JSON with Python floats: 0.1 is read as "0.1", not 0.1000000000000000055...
    catalog = parse_catalog({"models": {"m": {"input": 0.1, "output": 0.2}}, "features": {"f": 0.5}})
    assert catalog.models["m"].input_uc == 100_000
    assert catalog.models["m"].output_uc == 200_000
    assert catalog.features["f"] == 500_000


@pytest.mark.parametrize(("text", "field"), [
    ("models:\n  m:\n    input: 0.0000001\n    output: 1\n", "models.m.input"),
    ("models:\n  m:\n    input: 1\n    output: 2.1234567\n", "models.m.output"),
    ("models:\n  m:\n    input: 1\n    output: 2\n    cached_input: 0.0000005\n", "models.m.cached_input"),
    ("models:\n  m:\n    input: 1\n    output: 2\n    cache_write: 3.0000001\n", "models.m.cache_write"),
    ("models:\n  m:\n    input: 1\n    output: 2\n    request: 0.1234567\n", "models.m.request"),
    ("features:\n  web_search: 0.0000001\n", "features.web_search"),
    ("models:\n  m:\n    input: '0.0000001'\n    output: 1\n", "models.m.input"),
])
def test_a_price_with_seven_decimals_is_rejected(text: str, field: str) -> None:
    with pytest.raises(InputError) as info:
        parse_catalog(load_yaml(text))
    assert info.value.field == field
    assert "6 decimal places" in info.value.reason


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_a_non_finite_yaml_price_is_an_input_error(value: str) -> None:
    with pytest.raises(InputError) as info:
        parse_catalog(load_yaml(f"models:\n  m:\n    input: {value}\n    output: 1\n", "c.yaml"), "c.yaml")
    assert info.value.field in ("models.m.input", "c.yaml")


def test_a_sexagesimal_yaml_number_is_read_or_rejected_cleanly() -> None:
    # YAML 1.1 reads 1:30.5 as a base-60 float (90.5); either that or an InputError, never a crash
    try:
        catalog = parse_catalog(load_yaml("models:\n  m:\n    input: 1:30.5\n    output: 1\n"))
    except InputError as exc:
        assert exc.field in ("models.m.input", "catalog")
    else:
        assert catalog.models["m"].input_uc == 90_500_000


def test_six_decimals_are_accepted() -> None:
    catalog = parse_catalog(load_yaml("models:\n  m:\n    input: 0.000001\n    output: 1.999999\n"))
    assert catalog.models["m"].input_uc == 1
    assert catalog.models["m"].output_uc == 1_999_999


@pytest.mark.parametrize(("text", "field"), [
    ("models:\n  m:\n    input: -1\n    output: 1\n", "models.m.input"),
    ("models:\n  m:\n    output: 1\n", "models.m.input"),
    ("models:\n  m:\n    input: 1\n", "models.m.output"),
    ("models:\n  m:\n    input: 1\n    output: 1\n    cached: 1\n", "models.m.cached"),
    ("features:\n  f: 1000000000001\n", "features.f"),
    ("features:\n  f: abc\n", "features.f"),
])
def test_bad_catalog_values_name_the_field(text: str, field: str) -> None:
    with pytest.raises(InputError) as info:
        parse_catalog(load_yaml(text))
    assert info.value.field == field


def test_unknown_model_is_an_input_error_naming_model(golden_catalog: Catalog) -> None:
    with pytest.raises(InputError) as info:
        rate(golden_catalog, "no-such-model", 10, 10, 0, 0)
    assert info.value.field == "model"
    assert "no-such-model" in info.value.reason


def test_unknown_feature_is_an_input_error_naming_the_feature(golden_catalog: Catalog) -> None:
    with pytest.raises(InputError) as info:
        rate(golden_catalog, "m-basic", 10, 10, 0, 0, (("web_search", 1), ("teleport", 2)))
    assert info.value.field == "quantities.teleport"
    with pytest.raises(InputError) as info:
        rate(golden_catalog, None, 0, 0, 0, 0, (("teleport", 1),))
    assert info.value.field == "quantities.teleport"


def test_unknown_model_or_feature_through_the_engine_charges_nothing(engine: Engine) -> None:
    t0 = at("2026-03-01T12:00:00Z")
    engine.create_account("alice", t0)
    engine.add_grant("alice", 5_000_000, "addon", t0, grant_id="g1")
    before = engine.balance("alice", t0)
    with pytest.raises(InputError) as info:
        engine.record({"id": "e1", "account_id": "alice", "model": "gpt-5-imaginary", "input_tokens": 5}, t0)
    assert info.value.field == "model"
    with pytest.raises(InputError) as info:
        engine.record({"id": "e2", "account_id": "alice", "model": "gpt-4o", "input_tokens": 5,
                       "quantities": {"web_search": 1, "telepathy": 1}}, t0)
    assert info.value.field == "quantities.telepathy"
    assert engine.balance("alice", t0) == before
    assert list(engine.usage("alice")) == []
    assert engine.check_invariants() == []


def test_never_undercharged_and_at_most_one_uc_over(golden_catalog: Catalog) -> None:
    """For many random events the cost is the exact cost rounded up: exact ≤ cost < exact + 1 µc."""
    rng = random.Random(20260101)
    prices = DATA["catalog"]["models"]
    kinds = ("input", "output", "cached_input", "cache_write")
    for _ in range(3_000):
        model = rng.choice([m for m in prices if m != "m-huge-price"])
        tokens = [rng.choice([0, rng.randint(0, 20), rng.randint(0, 10**7)]) for _ in kinds]
        # the exact cost in credits, from the catalog's decimal text, as a fraction
        exact_credits = Fraction(0)
        for kind, count in zip(kinds, tokens, strict=True):
            price = prices[model].get(kind, prices[model]["input"])
            exact_credits += Fraction(Decimal(price)) * count / 1_000_000
        exact_credits += Fraction(Decimal(prices[model].get("request", 0)))
        cost_uc = rate(golden_catalog, model, *tokens)
        exact_uc = exact_credits * 1_000_000
        assert exact_uc <= cost_uc < exact_uc + 1, (model, tokens, cost_uc, exact_uc)


def test_cached_input_is_never_also_charged_as_input(golden_catalog: Catalog) -> None:
    for model in ("m-basic", "m-decimal", "m-defaults"):
        price = golden_catalog.models[model]
        cost = rate(golden_catalog, model, 0, 0, 4_000_000, 0)
        assert cost == 4 * price.cached_input_uc
        both = rate(golden_catalog, model, 1_000_000, 0, 1_000_000, 0)
        assert both == price.input_uc + price.cached_input_uc


def test_event_token_counts_feed_the_formula(golden_catalog: Catalog) -> None:
    """The JSON field names of an event map onto the right prices (input ≠ cached_input ≠ cache_write)."""
    event = parse_event({"id": "x", "account_id": "a", "model": "m-basic", "input_tokens": 1,
                         "output_tokens": 10, "cached_input_tokens": 100, "cache_write_tokens": 1000})
    cost = rate(golden_catalog, event.model, event.input_tokens, event.output_tokens,
                event.cached_input_tokens, event.cache_write_tokens, event.quantities)
    assert cost == 250 + 10_000 + 12_500 + 375_000


# -- versions ------------------------------------------------------------------------------------

def _catalog(input_credits: str) -> Catalog:
    return parse_catalog({"models": {"m": {"input": input_credits, "output": "0"}}})


def test_price_book_answers_the_version_effective_at_an_instant() -> None:
    t1, t2 = at("2026-01-01"), at("2026-02-01")
    v1 = PriceVersion(1, t1, _catalog("1"))
    v2 = PriceVersion(2, t2, _catalog("2"))
    book = PriceBook([v2, v1])  # given out of order
    assert book.at(t1 - 1) is None
    assert book.at(t1) == v1
    assert book.at(t2 - 1) == v1
    assert book.at(t2) == v2
    assert book.at(at("2030-01-01")) == v2
    assert [v.version for v in book.versions] == [1, 2]


def test_price_book_later_loaded_version_wins_at_the_same_instant() -> None:
    t = at("2026-01-01")
    v1, v2 = PriceVersion(1, t, _catalog("1")), PriceVersion(2, t, _catalog("2"))
    assert PriceBook([v2, v1]).at(t) == v2
    # a version loaded later but effective earlier does not replace one effective later
    v3 = PriceVersion(3, t - 10, _catalog("3"))
    book = PriceBook([v1, v2, v3])
    assert book.at(t - 1) == v3
    assert book.at(t) == v2


def test_engine_prices_each_event_with_the_version_effective_at_its_timestamp(
        make_engine: EngineFactory) -> None:
    engine = make_engine()
    t_load = at("2026-03-01")
    va = engine.load_prices(_catalog("1"), at("2026-03-01"), t_load)      # 1 µc per token
    vb = engine.load_prices(_catalog("2"), at("2026-03-05"), t_load)      # 2 µc per token
    assert va.version != vb.version
    now = at("2026-03-06")
    engine.create_account("acct", t_load)
    engine.add_grant("acct", 1_000_000_000, "addon", t_load, grant_id="g")
    before = engine.record({"id": "e-before", "account_id": "acct", "model": "m", "input_tokens": 1000,
                            "timestamp": "2026-03-04T23:59:59.999999Z"}, now)
    after = engine.record({"id": "e-after", "account_id": "acct", "model": "m", "input_tokens": 1000,
                           "timestamp": "2026-03-05T00:00:00Z"}, now)
    assert (before.cost_uc, before.price_version) == (1000, va.version)
    assert (after.cost_uc, after.price_version) == (2000, vb.version)
    # no catalog effective yet: rejected with a clear error naming the timestamp
    engine2 = make_engine()
    engine2.load_prices(_catalog("1"), at("2026-03-05"), t_load)
    engine2.create_account("acct", t_load)
    with pytest.raises(InputError) as info:
        engine2.record({"id": "early", "account_id": "acct", "model": "m", "input_tokens": 1,
                        "timestamp": "2026-03-04T00:00:00Z"}, now)
    assert info.value.field == "timestamp"


def test_loading_a_new_version_does_not_change_charged_events(make_engine: EngineFactory) -> None:
    engine = make_engine()
    t0 = at("2026-04-01")
    v1 = engine.load_prices(_catalog("1"), t0, t0)
    engine.create_account("acct", t0)
    engine.add_grant("acct", 1_000_000_000, "addon", t0, grant_id="g")
    now = at("2026-04-03")
    first = engine.record({"id": "e1", "account_id": "acct", "model": "m", "input_tokens": 5000,
                           "timestamp": "2026-04-02T00:00:00Z"}, now)
    assert (first.cost_uc, first.price_version) == (5000, v1.version)
    balance_before = engine.balance("acct", now)
    # a new catalog effective from before the event: history stays as charged
    v2 = engine.load_prices(_catalog("7"), at("2026-04-01T12:00:00Z"), now)
    assert engine.balance("acct", now) == balance_before
    [stored] = list(engine.usage("acct"))
    assert (stored.charge.cost_uc, stored.charge.price_version) == (5000, v1.version)
    # the same event again is a duplicate answering the original charge and price version
    again = engine.record({"id": "e1", "account_id": "acct", "model": "m", "input_tokens": 5000,
                           "timestamp": "2026-04-02T00:00:00Z"}, now)
    assert (again.status, again.cost_uc, again.price_version) == ("duplicate", 5000, v1.version)
    # a new event at the same timestamp uses the new version
    second = engine.record({"id": "e2", "account_id": "acct", "model": "m", "input_tokens": 5000,
                            "timestamp": "2026-04-02T00:00:00Z"}, now)
    assert (second.cost_uc, second.price_version) == (35_000, v2.version)
    assert engine.balance("acct", now).available_uc == 1_000_000_000 - 5000 - 35_000
    assert engine.check_invariants() == []


def test_a_version_stores_and_reloads_exact_prices(make_engine: EngineFactory,
                                                   golden_catalog: Catalog) -> None:
    engine = make_engine()
    t0 = at("2026-01-01")
    engine.load_prices(golden_catalog, t0, t0)
    fresh = Engine(engine.store)  # a new engine reads the versions from the database
    version = fresh.price_book().at(t0)
    assert version is not None
    assert dict(version.catalog.models) == dict(golden_catalog.models)
    assert dict(version.catalog.features) == dict(golden_catalog.features)
