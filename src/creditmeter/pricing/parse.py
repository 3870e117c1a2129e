"""Reading a catalog file (YAML with exact decimals) into a :class:`Catalog`, naming each bad field.

The file form (see ``catalogs/example.yaml`` and docs/prices.md)::

    models:
      MODEL:
        input: 3                 # credits per 1M tokens; input and output are required
        output: 15
        cached_input: 0.3        # default: input
        cache_write: 3.75        # default: input
        cache_write_1h: 6        # default: cache_write
        reasoning: 15            # default: output
        request: 0               # credits per request
        above:                   # when the prompt has more than prompt_tokens tokens
          - {prompt_tokens: 200000, input: 6, output: 22.5}
        tiers:                   # chosen by the request's service tier
          priority: {input: 5, output: 25, above: [...]}
          flex: {input: 1.5, output: 7.5}
        off_peak:                # the first window open at the event's time
          - {timezone: Asia/Shanghai, hours: "00:30-08:30", weekdays: [mon, tue], input: 1}
    features:
      NAME: 2                    # credits per unit
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from creditmeter.errors import InputError
from creditmeter.money import parse_credits
from creditmeter.pricing.model import (
    ALL_WEEKDAYS,
    MODEL_PRICE_FIELDS,
    RATE_FIELDS,
    SERVICE_TIERS,
    Catalog,
    ModelPrice,
    OffPeakWindow,
    Rates,
    Threshold,
    Tier,
)
from creditmeter.pricing.windows import parse_hours, parse_timezone, parse_weekdays

MAX_PROMPT_TOKENS = 10**12
_WINDOW_FIELDS = ("timezone", "hours", "weekdays")


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


def parse_catalog(data: object, source: str = "catalog") -> Catalog:
    """Validate a catalog in its file form (see ``catalogs/example.yaml``) into integer prices."""
    if not isinstance(data, Mapping):
        raise InputError(source, "must be a mapping with 'models' and/or 'features'")
    unknown = set(data) - {"models", "features"}
    if unknown:
        raise InputError(f"{sorted(unknown, key=str)[0]}",
                         "unknown catalog section (expected models, features)")
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
        _check_name(name, f"models.{name}")
        models[name] = parse_model(prices, f"models.{name}")
    features: dict[str, int] = {}
    for name, price in features_in.items():
        _check_name(name, f"features.{name}")
        features[name] = parse_credits(price, f"features.{name}")
    return Catalog(models=models, features=features)


def parse_model(prices: object, field: str) -> ModelPrice:
    """One model's prices (``field`` names it in errors, e.g. ``models.gpt-4o``)."""
    if not isinstance(prices, Mapping):
        raise InputError(field, "must be a mapping of prices (input, output, ...)")
    _check_keys(prices, MODEL_PRICE_FIELDS, field, "price field")
    for required in ("input", "output"):
        if required not in prices:
            raise InputError(f"{field}.{required}", "is required")
    rates = _rates(prices, field)
    assert rates.input_uc is not None and rates.output_uc is not None
    cache_write = prices.get("cache_write", prices["input"])
    above = _thresholds(prices.get("above"), f"{field}.above")
    return ModelPrice(
        input_uc=rates.input_uc,
        output_uc=rates.output_uc,
        cached_input_uc=parse_credits(prices.get("cached_input", prices["input"]), f"{field}.cached_input"),
        cache_write_uc=parse_credits(cache_write, f"{field}.cache_write"),
        request_uc=parse_credits(prices.get("request", 0), f"{field}.request"),
        cache_write_1h_uc=rates.cache_write_1h_uc,
        reasoning_uc=rates.reasoning_uc,
        above=above,
        tiers=_tiers(prices.get("tiers"), f"{field}.tiers"),
        off_peak=_windows(prices.get("off_peak"), f"{field}.off_peak"),
    )


def _check_keys(data: Mapping[Any, Any], allowed: tuple[str, ...], field: str, what: str) -> None:
    extra = [key for key in data if key not in allowed]
    if extra:
        raise InputError(f"{field}.{sorted(map(str, extra))[0]}",
                         f"unknown {what} (expected {', '.join(allowed)})")


def _rates(data: Mapping[Any, Any], field: str) -> Rates:
    values = {f"{name}_uc": parse_credits(data[name], f"{field}.{name}")
              for name in RATE_FIELDS if name in data}
    return Rates(**values)


def _layer_rates(data: Mapping[Any, Any], field: str) -> Rates:
    rates = _rates(data, field)
    if not rates.items():
        raise InputError(field, f"sets no rate (expected one or more of {', '.join(RATE_FIELDS)})")
    return rates


def _list(value: object, field: str, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(field, f"must be a list of {what}")
    return value


def _thresholds(value: object, field: str) -> tuple[Threshold, ...]:
    out: list[Threshold] = []
    for index, entry in enumerate(_list(value, field, "{prompt_tokens: N, rates...}")):
        where = f"{field}[{index}]"
        if not isinstance(entry, Mapping):
            raise InputError(where, "must be a mapping {prompt_tokens: N, input: ..., ...}")
        _check_keys(entry, ("prompt_tokens", *RATE_FIELDS), where, "field")
        tokens = entry.get("prompt_tokens")
        if type(tokens) is not int or not 0 <= tokens <= MAX_PROMPT_TOKENS:
            raise InputError(f"{where}.prompt_tokens", f"must be a whole number of tokens from 0 to "
                             f"{MAX_PROMPT_TOKENS}, got {tokens!r}")
        if any(t.prompt_tokens == tokens for t in out):
            raise InputError(f"{where}.prompt_tokens", f"{tokens} is listed twice")
        out.append(Threshold(tokens, _layer_rates(entry, where)))
    return tuple(sorted(out, key=lambda t: t.prompt_tokens))


def _tiers(value: object, field: str) -> dict[str, Tier]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(field, f"must be a mapping of service tier ({', '.join(SERVICE_TIERS)}) to rates")
    tiers: dict[str, Tier] = {}
    for name, entry in value.items():
        where = f"{field}.{name}"
        if name not in SERVICE_TIERS:
            raise InputError(where, f"unknown service tier (expected {', '.join(SERVICE_TIERS)})")
        if not isinstance(entry, Mapping):
            raise InputError(where, "must be a mapping of rates (input, output, ..., above)")
        _check_keys(entry, (*RATE_FIELDS, "above"), where, "field")
        above = _thresholds(entry.get("above"), f"{where}.above")
        rates = _rates(entry, where) if above else _layer_rates(entry, where)
        tiers[name] = Tier(rates, above)
    return tiers


def _windows(value: object, field: str) -> tuple[OffPeakWindow, ...]:
    out = []
    for index, entry in enumerate(_list(value, field, "{timezone, hours, weekdays, rates...}")):
        where = f"{field}[{index}]"
        if not isinstance(entry, Mapping):
            raise InputError(where, "must be a mapping {timezone, hours, weekdays, input: ..., ...}")
        _check_keys(entry, (*_WINDOW_FIELDS, *RATE_FIELDS), where, "field")
        for required in ("timezone", "hours"):
            if required not in entry:
                raise InputError(f"{where}.{required}", "is required")
        weekdays = entry.get("weekdays")
        out.append(OffPeakWindow(
            timezone=parse_timezone(entry["timezone"], f"{where}.timezone"),
            hours=parse_hours(entry["hours"], f"{where}.hours"),
            weekdays=ALL_WEEKDAYS if weekdays is None else parse_weekdays(weekdays, f"{where}.weekdays"),
            rates=_layer_rates(entry, where),
        ))
    return tuple(out)


def _check_name(name: object, field: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 255:
        raise InputError(field, "a model or feature name must be a string of 1-255 characters")
