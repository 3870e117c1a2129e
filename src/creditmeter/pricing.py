"""The price catalog and rating: (catalog, event) -> cost in µc. Pure: no I/O, no clock.

A catalog prices models in credits per 1M tokens (``input``, ``output``, ``cached_input``,
``cache_write``), an optional per-request fee, and named features per unit. Each price is an
exact decimal with at most 6 places, so it is held as an integer: µc per 1M tokens (models) or
µc per unit (features, request fees).

    cost_uc = ceil(Σ tokens_k × price_k / 1,000,000) + request + Σ quantity × feature_price

Catalogs are versioned: a :class:`PriceBook` holds every version with the instant it takes
effect, and an event is priced with the version effective at its timestamp.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from creditmeter.errors import InputError
from creditmeter.money import MAX_UC, decimal_to_uc_ceil, format_credits, parse_credits, to_decimal

MODEL_PRICE_FIELDS = ("input", "output", "cached_input", "cache_write", "request")
TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """A model's prices: µc per 1M tokens of each kind, and µc per request."""

    input_uc: int
    output_uc: int
    cached_input_uc: int
    cache_write_uc: int
    request_uc: int = 0


@dataclass(frozen=True, slots=True)
class Catalog:
    """One version's prices: ``models`` by model id, ``features`` in µc per unit."""

    models: Mapping[str, ModelPrice]
    features: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        """The catalog in its file form (credits as strings), for storage and display."""
        models = {}
        for name, price in sorted(self.models.items()):
            models[name] = {
                "input": format_credits(price.input_uc),
                "output": format_credits(price.output_uc),
                "cached_input": format_credits(price.cached_input_uc),
                "cache_write": format_credits(price.cache_write_uc),
                "request": format_credits(price.request_uc),
            }
        features = {k: format_credits(v) for k, v in sorted(self.features.items())}
        return {"models": models, "features": features}


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """A catalog version: effective from ``effective_at_us``; ``version`` numbers count up."""

    version: int
    effective_at_us: int
    catalog: Catalog


class _DecimalLoader(yaml.SafeLoader):
    """YAML loader that reads every float as an exact Decimal."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal | str:
    """A YAML float as an exact Decimal; what Decimal cannot read (``.inf``, ``1:30.5``) stays
    text, so the catalog's own checks reject it naming the field."""
    value = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        number = Decimal(value.replace("_", ""))
    except InvalidOperation:
        return value
    return number if number.is_finite() else value


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def load_yaml(text: str, source: str = "catalog") -> Any:
    """Parse YAML with exact decimals; a syntax error names the source and line."""
    try:
        return yaml.load(text, Loader=_DecimalLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InputError(source, f"is not valid YAML: {exc}") from None


def _price(value: object, field: str) -> int:
    return parse_credits(value, field)


def parse_catalog(data: object, source: str = "catalog") -> Catalog:
    """Validate a catalog in its file form (see ``catalogs/example.yaml``) into integer prices."""
    if not isinstance(data, Mapping):
        raise InputError(source, "must be a mapping with 'models' and/or 'features'")
    unknown = set(data) - {"models", "features"}
    if unknown:
        raise InputError(f"{sorted(unknown)[0]}", "unknown catalog section (expected models, features)")
    models_in = data.get("models") or {}
    features_in = data.get("features") or {}
    if not isinstance(models_in, Mapping):
        raise InputError("models", "must be a mapping of model id to prices")
    if not isinstance(features_in, Mapping):
        raise InputError("features", "must be a mapping of feature name to credits per unit")
    if not models_in and not features_in:
        raise InputError(source, "has no models and no features")
    models: dict[str, ModelPrice] = {}
    for name, prices in models_in.items():
        field = f"models.{name}"
        _check_name(name, field)
        if not isinstance(prices, Mapping):
            raise InputError(field, "must be a mapping of prices (input, output, ...)")
        extra = set(prices) - set(MODEL_PRICE_FIELDS)
        if extra:
            raise InputError(f"{field}.{sorted(extra)[0]}", "unknown price field "
                             f"(expected {', '.join(MODEL_PRICE_FIELDS)})")
        for required in ("input", "output"):
            if required not in prices:
                raise InputError(f"{field}.{required}", "is required")
        input_uc = _price(prices["input"], f"{field}.input")
        models[name] = ModelPrice(
            input_uc=input_uc,
            output_uc=_price(prices["output"], f"{field}.output"),
            cached_input_uc=_price(prices.get("cached_input", prices["input"]), f"{field}.cached_input"),
            cache_write_uc=_price(prices.get("cache_write", prices["input"]), f"{field}.cache_write"),
            request_uc=_price(prices.get("request", 0), f"{field}.request"),
        )
    features: dict[str, int] = {}
    for name, price in features_in.items():
        _check_name(name, f"features.{name}")
        features[name] = _price(price, f"features.{name}")
    return Catalog(models=models, features=features)


def _check_name(name: object, field: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 255:
        raise InputError(field, "a model or feature name must be a string of 1-255 characters")


def rate(catalog: Catalog, model: str | None, input_tokens: int, output_tokens: int,
         cached_input_tokens: int, cache_write_tokens: int,
         quantities: tuple[tuple[str, int], ...] = (), *, reasoning_tokens: int = 0,
         cache_write_1h_tokens: int = 0, service_tier: str | None = None,
         at_us: int | None = None) -> int:
    """The cost of one event in µc, rounded up once (never undercharge, at most 1 µc over).

    Each kind of token is stated once: ``cached_input_tokens`` are not also in ``input_tokens``,
    ``reasoning_tokens`` not also in ``output_tokens``, ``cache_write_1h_tokens`` not also in
    ``cache_write_tokens``. ``service_tier`` is the tier the request ran on (``priority``,
    ``flex``; None: standard) and ``at_us`` the event's time, which decides off-peak windows.
    """
    cost = 0
    if model is not None:
        price = catalog.models.get(model)
        if price is None:
            raise InputError("model", f"unknown model {model!r} (not in the price catalog)")
        scaled = (input_tokens * price.input_uc + (output_tokens + reasoning_tokens) * price.output_uc
                  + cached_input_tokens * price.cached_input_uc
                  + (cache_write_tokens + cache_write_1h_tokens) * price.cache_write_uc)
        cost = -(-scaled // TOKENS_PER_PRICE_UNIT) + price.request_uc
    elif (input_tokens or output_tokens or cached_input_tokens or cache_write_tokens
          or reasoning_tokens or cache_write_1h_tokens):
        raise InputError("model", "is required when token counts are given")
    for name, quantity in quantities:
        unit = catalog.features.get(name)
        if unit is None:
            raise InputError(f"quantities.{name}", f"unknown feature {name!r} (not in the price catalog)")
        cost += quantity * unit
    if cost > MAX_UC:
        raise InputError("event", "costs more than the largest amount an event may charge")
    return cost


class PriceBook:
    """Every catalog version; answers which one is effective at an instant."""

    def __init__(self, versions: list[PriceVersion]) -> None:
        # Effective order: by instant, and a later-loaded version wins at the same instant.
        self._versions = sorted(versions, key=lambda v: (v.effective_at_us, v.version))
        self._starts = [v.effective_at_us for v in self._versions]

    @property
    def versions(self) -> list[PriceVersion]:
        return list(self._versions)

    def at(self, at_us: int) -> PriceVersion | None:
        index = bisect.bisect_right(self._starts, at_us) - 1
        return self._versions[index] if index >= 0 else None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import of a LiteLLM-style map did: ``skipped`` and ``rounded`` say why for each."""

    catalog: Catalog
    imported: int
    skipped: tuple[tuple[str, str], ...]
    rounded: tuple[tuple[str, str], ...]


_LITELLM_FIELDS = (
    ("input", "input_cost_per_token"),
    ("output", "output_cost_per_token"),
    ("cached_input", "cache_read_input_token_cost"),
    ("cache_write", "cache_creation_input_token_cost"),
)
_OUTPUTLESS_MODES = {"embedding", "moderation", "rerank"}


def import_litellm(data: object, credits_per_usd: Decimal) -> ImportReport:
    """Convert a LiteLLM price map (USD per token) into a catalog at ``credits_per_usd``.

    Imports every entry priced per token; each other entry is skipped with the reason. A price
    with more than 6 decimal places (in credits per 1M tokens) is rounded up and listed.
    """
    if not isinstance(data, Mapping):
        raise InputError("file", "must be a JSON object mapping model names to prices")
    if credits_per_usd <= 0:
        raise InputError("credits_per_usd", "must be greater than zero")
    models: dict[str, ModelPrice] = {}
    skipped: list[tuple[str, str]] = []
    rounded: list[tuple[str, str]] = []
    for name, entry in data.items():
        reason = _litellm_skip_reason(name, entry)
        if reason:
            skipped.append((name, reason))
            continue
        assert isinstance(entry, Mapping)
        prices: dict[str, int] = {}
        bad = None
        for ours, theirs in _LITELLM_FIELDS:
            raw = entry.get(theirs)
            if raw is None:
                continue
            try:
                usd = to_decimal(raw, theirs)
            except InputError:
                bad = f"{theirs} is not a number"
                break
            if usd < 0:
                bad = f"{theirs} is negative"
                break
            uc, was_rounded = decimal_to_uc_ceil(usd * credits_per_usd * TOKENS_PER_PRICE_UNIT)
            if uc > MAX_UC:
                bad = f"{theirs} is too large"
                break
            if was_rounded:
                rounded.append((name, ours))
            prices[ours] = uc
        if bad:
            skipped.append((name, bad))
            continue
        output_uc = prices.get("output", 0)
        models[name] = ModelPrice(
            input_uc=prices["input"], output_uc=output_uc,
            cached_input_uc=prices.get("cached_input", prices["input"]),
            cache_write_uc=prices.get("cache_write", prices["input"]),
        )
    return ImportReport(Catalog(models=models, features={}), len(models), tuple(skipped), tuple(rounded))


def _litellm_skip_reason(name: object, entry: object) -> str | None:
    if not isinstance(name, str) or not name or len(name) > 255:
        return "model name is not a string of 1-255 characters"
    if name == "sample_spec":
        return "documentation entry, not a model"
    if not isinstance(entry, Mapping):
        return "entry is not an object"
    if entry.get("input_cost_per_token") is None:
        keys = sorted(k for k in entry if isinstance(k, str) and "cost" in k)
        return ("not priced per token (" + ", ".join(keys[:3]) + ")") if keys else "has no prices"
    if entry.get("output_cost_per_token") is None and entry.get("mode") not in _OUTPUTLESS_MODES:
        return "has no output_cost_per_token"
    return None
