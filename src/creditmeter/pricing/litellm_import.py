"""Importing a LiteLLM price map (USD per token) as a catalog at a credits-per-USD rate.

Each entry becomes a model whose rates are LiteLLM's own for every service tier, prompt size and
off-peak state (see :mod:`creditmeter.pricing.litellm_rates`): the model's rates are LiteLLM's
for a standard request below every threshold, and each threshold, tier and off-peak window sets
what differs above it. Whatever an entry prices that the catalog cannot hold (audio, images,
per-second, per-query, batch prices …) is listed per model; an entry whose token prices cannot
be held exactly is skipped with the reason (rating then refuses the model, never charging 0).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

from creditmeter.errors import InputError
from creditmeter.money import MAX_UC, decimal_to_uc_ceil
from creditmeter.pricing.litellm_rates import (
    BASE_KEYS,
    IN,
    OUT,
    READ,
    REASONING,
    THRESHOLD_KEY,
    TIERED_FAMILY,
    WRITE,
    Entry,
    Unconvertible,
    entry_rates,
    number,
)
from creditmeter.pricing.model import (
    ALL_WEEKDAYS,
    RATE_FIELDS,
    SERVICE_TIERS,
    TOKENS_PER_PRICE_UNIT,
    Catalog,
    ModelPrice,
    OffPeakWindow,
    Rates,
    Threshold,
    Tier,
    TokenRates,
)
from creditmeter.pricing.rating import rates_for
from creditmeter.pricing.windows import MINUTES_PER_DAY, parse_hours, parse_weekdays, zone

_OUTPUTLESS_MODES = {"embedding", "moderation", "rerank"}
_REQUEST = "input_cost_per_request"
_CACHE_HIT = "input_cost_per_token_cache_hit"


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import of a LiteLLM-style map did.

    Attributes:
        catalog: the models imported.
        imported: how many.
        skipped: (entry, why) for each entry not imported.
        rounded: (model, price) for each price rounded up to 6 places (``above[0].input`` …).
        unconverted: (model, fields) for each imported model with prices the catalog does not hold.
    """

    catalog: Catalog
    imported: int
    skipped: tuple[tuple[str, str], ...]
    rounded: tuple[tuple[str, str], ...]
    unconverted: tuple[tuple[str, tuple[str, ...]], ...] = ()


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
    unconverted: list[tuple[str, tuple[str, ...]]] = []
    for name, entry in data.items():
        reason = _skip_reason(name, entry)
        if reason is None:
            assert isinstance(entry, Mapping)
            try:
                price, model_rounded, left = _Conversion(Entry(name, entry), credits_per_usd).run()
            except Unconvertible as exc:
                reason = str(exc)
        if reason is not None:
            skipped.append((str(name), reason))
            continue
        models[name] = price
        rounded.extend((name, path) for path in model_rounded)
        if left:
            unconverted.append((name, left))
    return ImportReport(Catalog(models=models, features={}), len(models), tuple(skipped), tuple(rounded),
                        tuple(unconverted))


def _skip_reason(name: object, entry: object) -> str | None:
    if not isinstance(name, str) or not name or len(name) > 255:
        return "model name is not a string of 1-255 characters"
    if name == "sample_spec":
        return "documentation entry, not a model"
    if not isinstance(entry, Mapping):
        return "entry is not an object"
    if entry.get(IN) is None and entry.get("tiered_pricing") is None:
        keys = sorted(k for k in entry if isinstance(k, str) and "cost" in k)
        return ("not priced per token (" + ", ".join(keys[:3]) + ")") if keys else "has no prices"
    if (entry.get(OUT) is None and entry.get("tiered_pricing") is None
            and entry.get("mode") not in _OUTPUTLESS_MODES):
        return "has no output_cost_per_token"
    return None


class _Conversion:
    """One entry's conversion: LiteLLM's rates at each tier, prompt size and off-peak state, laid
    out as a model's rates and the layers over them, then checked to give back every one."""

    def __init__(self, entry: Entry, credits_per_usd: Decimal) -> None:
        self.entry = entry
        self.credits_per_usd = credits_per_usd
        self.rounded: dict[str, None] = {}
        self.memo: dict[tuple[str | None, int, bool], tuple[TokenRates, frozenset[str]]] = {}
        # LiteLLM prices service tiers for every provider but these (their tier prices are listed)
        tiered = entry.provider not in TIERED_FAMILY and entry.provider not in ("perplexity", "xai")
        self.tiers = [t for t in SERVICE_TIERS if tiered and _prices_tier(entry, t)]
        self.sizes = _sizes(entry)

    def run(self) -> tuple[ModelPrice, tuple[str, ...], tuple[str, ...]]:
        base = self.rates(None, self.sizes[0], False)
        price = ModelPrice(base.input_uc, base.output_uc, base.cached_input_uc, base.cache_write_uc,
                           self._request(),
                           None if base.cache_write_1h_uc == base.cache_write_uc else base.cache_write_1h_uc,
                           None if base.reasoning_uc == base.output_uc else base.reasoning_uc)
        self._note("", Rates(base.input_uc, base.output_uc, base.cached_input_uc, base.cache_write_uc,
                             price.cache_write_1h_uc, price.reasoning_uc), None, self.sizes[0], False)
        price = replace(price, above=self._above(price, None, "above"))
        tiers: dict[str, Tier] = {}
        for tier in self.tiers:
            beneath = rates_for(price, tier, self.sizes[0], None)
            own = self._layer(f"tiers.{tier}.", beneath, tier, self.sizes[0])
            with_tier = replace(price, tiers={**tiers, tier: Tier(own)})
            above = self._above(with_tier, tier, f"tiers.{tier}.above")
            if own.items() or above:
                tiers[tier] = Tier(own, above)
        price = replace(price, tiers=tiers)
        if self.entry.off_peak is not None:
            price = self._off_peak(price)
        for on, size, off_peak in self._grid():
            window = price.off_peak[0] if off_peak and price.off_peak else None
            if rates_for(price, on, size, window) != self.rates(on, size, off_peak):
                raise Unconvertible("its rates combine in a way the catalog cannot hold exactly "
                                    f"(service tier {on or 'standard'}, prompt of {size} tokens)")
        self._check_zero(price)
        return price, tuple(self.rounded), _unconverted(self.entry, self.tiers)

    def rates(self, tier: str | None, size: int, off_peak: bool) -> TokenRates:
        """LiteLLM's rates for one request, in µc per 1M tokens."""
        return self._target(tier, size, off_peak)[0]

    def _target(self, tier: str | None, size: int, off_peak: bool) -> tuple[TokenRates, frozenset[str]]:
        """The rates, and which of them were rounded up to 6 places."""
        key = (tier, size, off_peak)
        if key not in self.memo:
            converted = [self._uc(value) for value in entry_rates(self.entry, tier, size, off_peak)]
            rounded = frozenset(name for name, (_, r) in zip(RATE_FIELDS, converted, strict=True) if r)
            self.memo[key] = (TokenRates(*(uc for uc, _ in converted)), rounded)
        return self.memo[key]

    def _layer(self, path: str, beneath: TokenRates, tier: str | None, size: int,
               off_peak: bool = False) -> Rates:
        """What a layer at ``path`` must set for LiteLLM's rates over ``beneath``."""
        layer = _diff(self.rates(tier, size, off_peak), beneath)
        self._note(path, layer, tier, size, off_peak)
        return layer

    def _note(self, path: str, layer: Rates, tier: str | None, size: int, off_peak: bool) -> None:
        rounded = self._target(tier, size, off_peak)[1]
        for name, _ in layer.items():
            if name in rounded:
                self.rounded[f"{path}{name}"] = None

    def _uc(self, usd: Decimal, per: int = TOKENS_PER_PRICE_UNIT) -> tuple[int, bool]:
        """USD (per token, or ``per=1`` per request) as µc per 1M tokens (or per request)."""
        with localcontext() as exact:
            exact.prec = 120  # every price and rate is ≤ 40 places: the product is exact
            uc, was_rounded = decimal_to_uc_ceil(usd * self.credits_per_usd * per)
        if uc > MAX_UC:
            raise Unconvertible(f"a price of {usd} USD is too large")
        return uc, was_rounded

    def _request(self) -> int:
        usd = self.entry.get(_REQUEST)
        if usd is None:
            return 0
        uc, was_rounded = self._uc(usd, per=1)
        if was_rounded:
            self.rounded["request"] = None
        return uc

    def _above(self, price: ModelPrice, tier: str | None, path: str) -> tuple[Threshold, ...]:
        """The thresholds at which LiteLLM's rates for ``tier`` change, each setting what changes."""
        out: list[Threshold] = []
        for size in self.sizes[1:]:
            layer = self._layer(f"{path}[{len(out)}].", rates_for(price, tier, size, None), tier, size)
            if not layer.items():
                continue
            out.append(Threshold(size - 1, layer))
            if tier is None:
                price = replace(price, above=tuple(out))
            else:
                price = replace(price, tiers={**price.tiers, tier: Tier(price.tiers[tier].rates, tuple(out))})
        return tuple(out)

    def _off_peak(self, price: ModelPrice) -> ModelPrice:
        grid = list(self._grid())
        if all(self.rates(tier, size, True) == self.rates(tier, size, False) for tier, size, _ in grid):
            return price  # its off-peak rates are the standard ones
        windows = _windows(self.entry)
        if not windows:
            raise Unconvertible("off_peak_pricing has no window this import can read")
        size = self.sizes[0]
        closed = rates_for(price, None, size, None)
        for layer in (_diff(self.rates(None, size, True), closed), _diff(self.rates(None, size, True), None)):
            candidate = replace(price, off_peak=tuple(
                OffPeakWindow(tz, hours, days, layer) for tz, hours, days in windows))
            if layer.items() and all(rates_for(candidate, tier, s, candidate.off_peak[0])
                                     == self.rates(tier, s, True) for tier, s, _ in grid):
                self._note("off_peak.", layer, None, size, True)
                return candidate
        raise Unconvertible("its off-peak rates combine with its other rates in a way the catalog "
                            "cannot hold exactly")

    def _grid(self) -> Iterator[tuple[str | None, int, bool]]:
        for tier in (None, *self.tiers):
            for size in self.sizes:
                yield tier, size, False
                if self.entry.off_peak is not None:
                    yield tier, size, True

    def _check_zero(self, price: ModelPrice) -> None:
        """A model whose token prices are all 0 while it is priced some other way is not free."""
        zero = TokenRates(0, 0, 0, 0, 0, 0)
        if price.request_uc or any(self.rates(tier, size, off_peak) != zero
                                   for tier, size, off_peak in self._grid()):
            return
        other = [key for key in _unconverted(self.entry, self.tiers)
                 if _positive(self.entry.data.get(key))]
        if other:
            raise Unconvertible(f"its token prices are all 0 but it is priced by {', '.join(other[:3])}")


def _positive(value: object) -> bool:
    if isinstance(value, Mapping):
        return any(_positive(v) for v in value.values())
    try:
        usd = number(value, "price")
    except Unconvertible:
        return False
    return usd is not None and usd > 0


def _diff(target: TokenRates, beneath: TokenRates | None) -> Rates:
    """The rates a layer must set to turn ``beneath`` into ``target`` (all of them when None)."""
    changes = {}
    for name in RATE_FIELDS:
        value = getattr(target, f"{name}_uc")
        if beneath is None or getattr(beneath, f"{name}_uc") != value:
            changes[f"{name}_uc"] = value
    return Rates(**changes)


def _prices_tier(entry: Entry, tier: str) -> bool:
    suffix = f"_{tier}"
    return any(value is not None for key, value in entry.data.items() if key.endswith(suffix)
               and (key.removesuffix(suffix) in BASE_KEYS or THRESHOLD_KEY.match(key)))


def _sizes(entry: Entry) -> list[int]:
    """Prompt sizes, one in each span over which LiteLLM's rates stay the same: 0, then one past
    each point where a threshold or a ``tiered_pricing`` range starts or ends."""
    points = set()
    for size, _ in entry.thresholds:
        points.add(size - 1 if entry.provider == "xai" else size)  # xAI's higher rate starts at the size
    for start, end, _ in entry.tiered:
        points.update(int(bound) for bound in (start, end) if bound >= 0)
    if entry.tiered:
        points.add(0)
    sizes = [0] + [point + 1 for point in sorted(points) if point >= 0]
    if entry.tiered and entry.get(IN) is None:
        # Priced by its ranges alone: the first range prices an empty prompt too (LiteLLM would
        # find no rate at all there).
        sizes = sizes[1:]
    return sizes


def _windows(entry: Entry) -> list[tuple[str, tuple[tuple[int, int], ...], tuple[int, ...]]]:
    """The off-peak block's windows: (time zone, local hours, weekdays)."""
    block = entry.off_peak
    assert block is not None
    out: list[tuple[str, tuple[tuple[int, int], ...], tuple[int, ...]]] = []
    every_day = block.get("hours_utc")
    if every_day is not None:
        out.append(("UTC", _hours(every_day, "off_peak_pricing.hours_utc"), ALL_WEEKDAYS))
    rules = block.get("windows") or []
    if not isinstance(rules, list):
        raise Unconvertible("off_peak_pricing.windows is not a list")
    name = block.get("weekday_timezone")
    timezone = name.strip() if isinstance(name, str) and name.strip() else "UTC"
    try:
        offset = _fixed_offset_minutes(timezone)
    except KeyError:
        timezone, offset = "UTC", 0  # LiteLLM reads weekdays in UTC then
    for index, rule in enumerate(rules):
        where = f"off_peak_pricing.windows[{index}]"
        if not isinstance(rule, Mapping) or rule.get("hours_utc") is None:
            continue
        if offset is None:
            raise Unconvertible(f"{where}: hours in UTC with weekdays in {timezone}, whose offset changes")
        hours = tuple(((start + offset) % MINUTES_PER_DAY, (end + offset) % MINUTES_PER_DAY)
                      for start, end in _hours(rule["hours_utc"], f"{where}.hours_utc"))
        days = rule.get("weekdays")
        try:
            weekdays = ALL_WEEKDAYS if days is None else parse_weekdays(days, f"{where}.weekdays")
        except InputError as exc:
            raise Unconvertible(f"{exc.field} {exc.reason}") from None
        out.append((timezone, hours, weekdays))
    return out


def _hours(value: object, where: str) -> tuple[tuple[int, int], ...]:
    try:
        return parse_hours(value, where)
    except InputError as exc:
        raise Unconvertible(f"{exc.field} {exc.reason}") from None


@functools.lru_cache(maxsize=64)
def _fixed_offset_minutes(timezone: str) -> int | None:
    """The zone's offset from UTC in minutes when it is the same at every instant from 2000 to
    2100 (so hours in UTC are fixed local hours); None when it changes. Unknown: KeyError."""
    tz = zone(timezone)
    offsets = set()
    moment = datetime(2000, 1, 1, tzinfo=UTC)
    while moment.year < 2100:
        local = moment.astimezone(tz).utcoffset()
        offsets.add(0 if local is None else local // timedelta(minutes=1))
        moment += timedelta(days=15)
    return offsets.pop() if len(offsets) == 1 else None


def _unconverted(entry: Entry, tiers: list[str]) -> tuple[str, ...]:
    """The entry's price fields the catalog does not hold, as LiteLLM names them."""
    converted = set(_converted_keys(entry, tiers))
    read = entry.data.get(READ)
    if entry.data.get(_CACHE_HIT) is not None and read is not None and number(read, READ) == number(
            entry.data.get(_CACHE_HIT), _CACHE_HIT):
        converted.add(_CACHE_HIT)  # the same price as the cache-read rate
    return tuple(sorted(key for key, value in entry.data.items()
                        if value is not None and key not in converted and _is_price(key)))


def _converted_keys(entry: Entry, tiers: list[str]) -> Iterator[str]:
    yield from ("off_peak_pricing", _REQUEST, "tiered_pricing")
    if entry.provider == "perplexity":
        yield from (IN, OUT, READ, REASONING)
        return
    if entry.provider in TIERED_FAMILY:
        yield from (IN, OUT, READ, WRITE, REASONING)
        return
    # xAI bills reasoning as output tokens, whatever reasoning rate the map gives
    yield from (key for key in BASE_KEYS if entry.provider != "xai" or key != REASONING)
    suffixes = [""] + [f"_{tier}" for tier in tiers]
    for key in entry.data:
        match = THRESHOLD_KEY.match(key)
        if match is not None and not match.group(1).endswith("_12hr") and (match.group(4) or "") in suffixes:
            yield key
        base, _, tier = key.rpartition("_")
        if base in BASE_KEYS and tier in tiers:
            yield key


def _is_price(key: str) -> bool:
    return "cost" in key or "pricing" in key or "multiplier" in key or key == "provider_specific_entry"
