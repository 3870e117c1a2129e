"""What a LiteLLM price-map entry charges per token, by LiteLLM's own cost rules (in exact USD).

LiteLLM prices a request from its model's entry: the standard keys (``input_cost_per_token`` …),
their service-tier forms (``…_priority``, ``…_flex``), rates above a prompt-size threshold
(``input_cost_per_token_above_200k_tokens`` …, the whole request at the higher rate, the prompt
counting cache reads and writes), ``tiered_pricing`` ranges (all-or-nothing), and an
``off_peak_pricing`` block whose open window replaces the rates it sets. :func:`entry_rates`
answers the six rates of one request (service tier, prompt size, off-peak or not) as LiteLLM's
``cost_per_token`` reaches them for the entry's provider; the import turns them into a catalog.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import NamedTuple

from creditmeter.errors import InputError
from creditmeter.money import to_decimal

IN, OUT, READ, WRITE = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
                        "cache_creation_input_token_cost")
WRITE_1H = "cache_creation_input_token_cost_above_1hr"
REASONING = "output_cost_per_reasoning_token"
BASE_KEYS = (IN, OUT, READ, WRITE, WRITE_1H, REASONING)
THRESHOLD_KEY = re.compile(rf"^({IN}|{OUT}|{READ}|{WRITE}(?:_above_1hr|_above_12hr)?)_above_(\d+)(k?)_tokens"
                           r"(_priority|_flex)?$")
_TIER_SUFFIXES = ("_priority", "_flex")
# Providers whose cost function LiteLLM routes elsewhere than its generic one.
TIERED_FAMILY = frozenset({"dashscope", "qwencloud", "qwen_ai_platform"})
FIREWORKS_CACHE_READ_RATIO = Decimal("0.5")
ZERO = Decimal(0)


class Unconvertible(Exception):
    """The entry's prices cannot be read (the reason says why); the model is skipped."""


class Usd(NamedTuple):
    """The rates of one request, USD per token."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal


@dataclass(frozen=True, slots=True)
class _Base:
    """Rates before reasoning is resolved (``reasoning`` None: not set by what was read)."""

    input: Decimal
    output: Decimal
    read: Decimal
    write: Decimal
    reasoning: Decimal | None


def number(value: object, where: str) -> Decimal | None:
    """A price from the map: None when absent; a bad or negative one makes the model unconvertible."""
    if value is None:
        return None
    if isinstance(value, bool | str):
        raise Unconvertible(f"{where} is not a number")
    try:
        usd = to_decimal(value, where)
    except InputError:
        raise Unconvertible(f"{where} is not a number") from None
    if usd < 0:
        raise Unconvertible(f"{where} is negative")
    return usd


class Entry:
    """One price-map entry, read the way LiteLLM's cost functions read it."""

    def __init__(self, name: str, data: Mapping[str, object]) -> None:
        provider = data.get("litellm_provider")
        self.provider = provider if isinstance(provider, str) else ""
        if self.provider == "fireworks_ai":
            data = _fireworks_cache_reads(data)
        self.name = name
        self.data = data
        self.thresholds = _thresholds(data)
        self.tiered = _tiered(data.get("tiered_pricing"))
        off_peak = data.get("off_peak_pricing")
        self.off_peak: Mapping[str, object] | None = off_peak if isinstance(off_peak, Mapping) else None

    def get(self, key: str) -> Decimal | None:
        return number(self.data.get(key), key)

    def tiered_get(self, key: str, tier: str | None) -> Decimal | None:
        """A tier's form of ``key``, else the standard one (LiteLLM's fallback)."""
        if tier is not None:
            own = self.get(f"{key}_{tier}")
            if own is not None:
                return own
        return self.get(key)

    def off_peak_get(self, key: str) -> Decimal | None:
        return None if self.off_peak is None else number(self.off_peak.get(key), f"off_peak_pricing.{key}")


def _fireworks_cache_reads(data: Mapping[str, object]) -> Mapping[str, object]:
    """Fireworks bills cache reads at half the input rate where the map sets no cache-read rate
    (LiteLLM's ``with_default_cache_read_rate``), off-peak too."""
    input_rate = number(data.get(IN), IN)
    if data.get(READ) is not None or input_rate is None:
        return data
    read = input_rate * FIREWORKS_CACHE_READ_RATIO
    off_peak = data.get("off_peak_pricing")
    if not isinstance(off_peak, Mapping) or READ in off_peak:
        return {**data, READ: read}
    off_peak_input = number(off_peak.get(IN), f"off_peak_pricing.{IN}")
    off_peak_read = read if off_peak_input is None else off_peak_input * FIREWORKS_CACHE_READ_RATIO
    return {**data, READ: read, "off_peak_pricing": {**off_peak, READ: off_peak_read}}


def _thresholds(data: Mapping[str, object]) -> tuple[tuple[int, str], ...]:
    """The prompt sizes above which some rate changes, with the text the keys spell them in."""
    found: dict[int, str] = {}
    for key, value in data.items():
        if value is None or not key.startswith((f"{IN}_above_", f"{OUT}_above_", f"{READ}_above_",
                                                f"{WRITE}_above_")) or "_tokens" not in key:
            continue
        match = THRESHOLD_KEY.match(key)
        if match is None:
            if key.endswith(("_batches", "_balanced", "_ultrafast", "_decisions")):
                continue  # priced on calls this catalog does not take (listed as not converted)
            raise Unconvertible(f"{key} has a prompt-size threshold this import does not read")
        text = match.group(2) + match.group(3)
        size = int(match.group(2)) * (1000 if match.group(3) else 1)
        if found.setdefault(size, text) != text:
            raise Unconvertible(f"{key} spells the threshold {size} two ways")
    return tuple(sorted(found.items()))


def _tiered(value: object) -> tuple[tuple[Decimal, Decimal, Mapping[str, object]], ...]:
    """``tiered_pricing`` as (start, end, tier), ascending by start."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise Unconvertible("tiered_pricing is not a list of tiers")
    out = []
    for index, tier in enumerate(value):
        bounds = tier.get("range")
        if not (isinstance(bounds, list) and len(bounds) == 2
                and all(isinstance(b, int | Decimal | float) and not isinstance(b, bool) for b in bounds)):
            raise Unconvertible(f"tiered_pricing[{index}].range is not [start, end]")
        out.append((Decimal(str(bounds[0])), Decimal(str(bounds[1])), tier))
    return tuple(sorted(out, key=lambda t: t[0]))


def tier_for(entry: Entry, prompt_tokens: int) -> Mapping[str, object] | None:
    """The ``tiered_pricing`` tier a prompt falls in: start < tokens ≤ end, else the last one."""
    if not entry.tiered or prompt_tokens <= 0:
        return None
    for start, end, tier in entry.tiered:
        if start < prompt_tokens <= end:
            return tier
    return entry.tiered[-1][2]


def _tier_rate(tier: Mapping[str, object], key: str, fallback: str | None = None) -> Decimal:
    value = number(tier.get(key), f"tiered_pricing.{key}")
    if value is not None:
        return value
    if fallback is None:
        return ZERO
    return number(tier.get(fallback), f"tiered_pricing.{fallback}") or ZERO


def off_peak_over(entry: Entry, base: _Base, is_open: bool) -> _Base:
    """The rates with an open off-peak block's own in their place."""
    if not is_open or entry.off_peak is None:
        return base
    get = entry.off_peak_get

    def pick(key: str, standard: Decimal) -> Decimal:
        value = get(key)
        return standard if value is None else value

    reasoning = get(REASONING)
    return _Base(pick(IN, base.input), pick(OUT, base.output), pick(READ, base.read), pick(WRITE, base.write),
                 base.reasoning if reasoning is None else reasoning)


def entry_rates(entry: Entry, tier: str | None, prompt_tokens: int, off_peak: bool) -> Usd:
    """The six rates LiteLLM prices one request at (``off_peak``: while a window is open)."""
    if entry.provider in TIERED_FAMILY:
        return _tiered_family(entry, prompt_tokens, off_peak)
    if entry.provider == "perplexity":
        return _perplexity(entry, off_peak)
    if entry.provider == "xai":
        rates = _generic(entry, None, prompt_tokens, off_peak, inclusive=True)
        return rates._replace(reasoning=rates.output)  # xAI bills reasoning as output tokens
    return _generic(entry, tier, prompt_tokens, off_peak, inclusive=False)


def _generic(entry: Entry, tier: str | None, prompt_tokens: int, off_peak: bool, *, inclusive: bool) -> Usd:
    """LiteLLM's ``generic_cost_per_token`` for text, cache reads and writes, and reasoning."""
    chosen = tier_for(entry, prompt_tokens)
    if chosen is not None and IN in chosen:
        return _generic_tiered(entry, tier, chosen, off_peak)
    get = entry.tiered_get
    input_rate = get(IN, tier) or ZERO
    output_rate = get(OUT, tier) or ZERO
    if output_rate == 0:
        output_rate = entry.get("output_cost_per_image_token") or ZERO
    write, read = get(WRITE, tier), get(READ, tier)
    suffix = f"_{tier}" if tier else ""
    write_1h_key = WRITE_1H + suffix
    for size, text in entry.thresholds:
        if not (prompt_tokens > size or (inclusive and prompt_tokens == size)):
            continue
        if not any(entry.data.get(f"{key}_above_{text}_tokens{s}") is not None
                   for key in (IN, OUT, READ, WRITE, WRITE_1H, f"{WRITE}_above_12hr") for s in {"", suffix}):
            continue  # a threshold only another tier prices
        input_rate = _or(get(f"{IN}_above_{text}_tokens", tier), input_rate)
        output_rate = _or(get(f"{OUT}_above_{text}_tokens", tier), output_rate)
        write = _either(get(f"{WRITE}_above_{text}_tokens", tier), write)
        read = _either(get(f"{READ}_above_{text}_tokens", tier), read)
        # LiteLLM keeps the 1-hour write key it had unless the tier's own form exists above.
        own_1h = f"{WRITE_1H}_above_{text}_tokens{suffix}"
        write_1h_key = own_1h if entry.data.get(own_1h) is not None else write_1h_key
    missing = _or(entry.off_peak_get(IN) if off_peak else None, input_rate)
    base = off_peak_over(entry, _Base(input_rate, output_rate, _or(read, missing), _or(write, missing), None),
                         off_peak)
    write_1h = entry.get(write_1h_key)
    if write_1h is None and suffix and write_1h_key.endswith(suffix):
        write_1h = entry.get(write_1h_key.removesuffix(suffix))
    return Usd(base.input, base.output, base.read, base.write, _or(write_1h, base.write),
               _reasoning(entry, tier, base))


def _generic_tiered(entry: Entry, tier: str | None, chosen: Mapping[str, object], off_peak: bool) -> Usd:
    """A ``tiered_pricing`` tier in LiteLLM's generic function: every rate from the tier."""
    output = _tier_rate(chosen, OUT) if OUT in chosen else (entry.get(OUT) or ZERO)
    base = off_peak_over(entry, _Base(_tier_rate(chosen, IN), output, _tier_rate(chosen, READ, IN),
                                      _tier_rate(chosen, WRITE, IN), None), off_peak)
    own_1h = number(chosen.get(WRITE_1H), f"tiered_pricing.{WRITE_1H}")
    write_1h = base.write if own_1h is None else own_1h
    return Usd(base.input, base.output, base.read, base.write, write_1h,
               _reasoning(entry, tier, base, chosen))


def _reasoning(entry: Entry, tier: str | None, base: _Base,
               chosen: Mapping[str, object] | None = None) -> Decimal:
    """LiteLLM's reasoning rate: off-peak's, the tiered tier's, the service tier's, the model's,
    else the output rate the request is priced at."""
    if base.reasoning is not None:
        return base.reasoning  # an open off-peak block set it
    if chosen is not None and (REASONING in chosen or OUT in chosen):
        return _tier_rate(chosen, REASONING, OUT)
    if tier is not None:
        own = entry.get(f"{REASONING}_{tier}")
        if own is not None:
            return own
        if entry.get(f"{OUT}_{tier}") is not None:
            return base.output
    standard = entry.get(REASONING)
    return base.output if standard is None else standard


def _tiered_family(entry: Entry, prompt_tokens: int, off_peak: bool) -> Usd:
    """Alibaba Model Studio (LiteLLM's dashscope function): one tier for the whole request."""
    flat_input = entry.get(IN) or ZERO
    flat = _Base(flat_input, entry.get(OUT) or ZERO, _or(entry.get(READ), flat_input),
                 _or(entry.get(WRITE), flat_input), entry.get(REASONING))
    chosen = tier_for(entry, prompt_tokens)
    if chosen is not None:
        declares_output = OUT in chosen
        flat = _Base(_tier_rate(chosen, IN), _tier_rate(chosen, OUT) if declares_output else flat.output,
                     _tier_rate(chosen, READ, IN), _tier_rate(chosen, WRITE, IN),
                     _tier_rate(chosen, REASONING) if REASONING in chosen
                     else None if declares_output else flat.reasoning)
    rates = off_peak_over(entry, flat, off_peak)
    reasoning = rates.output if rates.reasoning is None else rates.reasoning
    return Usd(rates.input, rates.output, rates.read, rates.write, rates.write, reasoning)


def _perplexity(entry: Entry, off_peak: bool) -> Usd:
    """LiteLLM's perplexity function: cache writes are prompt tokens at the input rate."""
    read = entry.get(READ)
    rates = off_peak_over(entry, _Base(entry.get(IN) or ZERO, entry.get(OUT) or ZERO,
                                       read if read is not None else Decimal("NaN"), ZERO, None), off_peak)
    if rates.read.is_nan():
        rates = replace(rates, read=rates.input)
    reasoning = entry.get(REASONING)
    return Usd(rates.input, rates.output, rates.read, rates.input, rates.input,
               rates.output if reasoning is None else reasoning)


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


def _either(value: Decimal | None, default: Decimal | None) -> Decimal | None:
    return default if value is None else value
