"""The price catalog's records: a model's rates and the rules that change them, catalogs, versions.

Every price is held as an integer: µc per 1M tokens (token rates), µc per request or per unit
(request fees, features). A model's own rates (``input``, ``output``, ``cached_input``,
``cache_write``, ``cache_write_1h``, ``reasoning``) are complete; each rule that changes them —
a rate above a prompt-size threshold, a service tier, an off-peak window — is a :class:`Rates`
layer that sets some of them, the others staying what they would be beneath it.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from creditmeter.money import format_credits
from creditmeter.pricing.windows import format_hours, format_weekdays

TOKENS_PER_PRICE_UNIT = 1_000_000
# The token rates, in the order a catalog file lists them.
RATE_FIELDS = ("input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning")
MODEL_PRICE_FIELDS = (*RATE_FIELDS, "request", "above", "tiers", "off_peak")
SERVICE_TIERS = ("priority", "flex")


@dataclass(frozen=True, slots=True)
class TokenRates:
    """The rates one request is priced at, µc per 1M tokens of each kind."""

    input_uc: int
    output_uc: int
    cached_input_uc: int
    cache_write_uc: int
    cache_write_1h_uc: int
    reasoning_uc: int

    def overlay(self, layer: Rates) -> TokenRates:
        """These rates with the ones ``layer`` sets in their place."""
        changes = {f"{name}_uc": value for name, value in layer.items()}
        return replace(self, **changes) if changes else self


@dataclass(frozen=True, slots=True)
class Rates:
    """Some token rates, µc per 1M tokens; ``None``: not set here (the rate beneath applies)."""

    input_uc: int | None = None
    output_uc: int | None = None
    cached_input_uc: int | None = None
    cache_write_uc: int | None = None
    cache_write_1h_uc: int | None = None
    reasoning_uc: int | None = None

    def items(self) -> list[tuple[str, int]]:
        """The rates set, as (field name, µc per 1M tokens), in :data:`RATE_FIELDS` order."""
        out = []
        for name in RATE_FIELDS:
            value = getattr(self, f"{name}_uc")
            if value is not None:
                out.append((name, value))
        return out

    def to_dict(self) -> dict[str, str]:
        return {name: format_credits(value) for name, value in self.items()}


@dataclass(frozen=True, slots=True)
class Threshold:
    """Rates for a request whose prompt has more than ``prompt_tokens`` tokens (all its tokens).

    The prompt is every token sent in: input, cache reads and cache writes.
    """

    prompt_tokens: int
    rates: Rates

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, **self.rates.to_dict()}


@dataclass(frozen=True, slots=True)
class Tier:
    """A service tier's rates (``priority``, ``flex``) and its own rates above thresholds."""

    rates: Rates
    above: tuple[Threshold, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.rates.to_dict()
        if self.above:
            out["above"] = [t.to_dict() for t in self.above]
        return out


ALL_WEEKDAYS = (1, 2, 3, 4, 5, 6, 7)


@dataclass(frozen=True, slots=True)
class OffPeakWindow:
    """Rates while the window is open: a local time of day in ``hours`` on one of ``weekdays``.

    Attributes:
        timezone: the IANA time zone the hours and weekdays are read in.
        hours: (start, end) minutes after local midnight; start inclusive, end exclusive; an end
            at or before the start runs past midnight (equal: the whole day).
        weekdays: ISO weekdays (1 = Monday) of the instant itself, in that time zone.
        rates: the rates it sets.
    """

    timezone: str
    hours: tuple[tuple[int, int], ...]
    weekdays: tuple[int, ...]
    rates: Rates

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"timezone": self.timezone, "hours": format_hours(self.hours)}
        if self.weekdays != ALL_WEEKDAYS:
            out["weekdays"] = format_weekdays(self.weekdays)
        return {**out, **self.rates.to_dict()}


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """A model's prices: µc per 1M tokens of each kind, µc per request, and the rules on them.

    ``cache_write_1h_uc`` is ``None`` when 1-hour cache writes cost what ``cache_write_uc`` says,
    ``reasoning_uc`` when reasoning tokens cost what ``output_uc`` says. ``above`` is in
    ascending ``prompt_tokens`` order; ``off_peak`` in the catalog's order (the first open
    window applies).
    """

    input_uc: int
    output_uc: int
    cached_input_uc: int
    cache_write_uc: int
    request_uc: int = 0
    cache_write_1h_uc: int | None = None
    reasoning_uc: int | None = None
    above: tuple[Threshold, ...] = ()
    tiers: Mapping[str, Tier] = field(default_factory=dict)
    off_peak: tuple[OffPeakWindow, ...] = ()
    # Derived once (rating reads them for every event).
    base_rates: TokenRates = field(init=False, repr=False, compare=False)
    has_rules: bool = field(init=False, repr=False, compare=False)
    # Every prompt size a rule starts above, ascending (standard and each tier's), and the rates
    # in force remembered by (tier, how many of them a prompt passes, open window's index): a
    # handful of combinations per model, each worked out once.
    cut_points: tuple[int, ...] = field(init=False, repr=False, compare=False)
    rates_memo: dict[tuple[str | None, int, int], TokenRates] = field(init=False, repr=False,
                                                                       compare=False)

    def __post_init__(self) -> None:
        # The model's own rates: standard tier, below every threshold, outside off-peak.
        object.__setattr__(self, "base_rates", TokenRates(
            self.input_uc, self.output_uc, self.cached_input_uc, self.cache_write_uc,
            self.cache_write_uc if self.cache_write_1h_uc is None else self.cache_write_1h_uc,
            self.output_uc if self.reasoning_uc is None else self.reasoning_uc))
        object.__setattr__(self, "has_rules", bool(self.above or self.tiers or self.off_peak))
        cuts = {t.prompt_tokens for t in self.above}
        cuts.update(t.prompt_tokens for tier in self.tiers.values() for t in tier.above)
        object.__setattr__(self, "cut_points", tuple(sorted(cuts)))
        object.__setattr__(self, "rates_memo", {})

    def to_dict(self) -> dict[str, Any]:
        """The model in its file form (credits as strings)."""
        out: dict[str, Any] = {
            "input": format_credits(self.input_uc),
            "output": format_credits(self.output_uc),
            "cached_input": format_credits(self.cached_input_uc),
            "cache_write": format_credits(self.cache_write_uc),
            "request": format_credits(self.request_uc),
        }
        if self.cache_write_1h_uc is not None:
            out["cache_write_1h"] = format_credits(self.cache_write_1h_uc)
        if self.reasoning_uc is not None:
            out["reasoning"] = format_credits(self.reasoning_uc)
        if self.above:
            out["above"] = [t.to_dict() for t in self.above]
        if self.tiers:
            out["tiers"] = {name: tier.to_dict() for name, tier in sorted(self.tiers.items())}
        if self.off_peak:
            out["off_peak"] = [w.to_dict() for w in self.off_peak]
        return out


@dataclass(frozen=True, slots=True)
class Catalog:
    """One version's prices: ``models`` by model id, ``features`` in µc per unit."""

    models: Mapping[str, ModelPrice]
    features: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        """The catalog in its file form (credits as strings), for storage and display."""
        models = {name: price.to_dict() for name, price in sorted(self.models.items())}
        features = {k: format_credits(v) for k, v in sorted(self.features.items())}
        return {"models": models, "features": features}


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """A catalog version: effective from ``effective_at_us``; ``version`` numbers count up."""

    version: int
    effective_at_us: int
    catalog: Catalog


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


assert [f.name for f in fields(Rates)] == [f"{name}_uc" for name in RATE_FIELDS]
