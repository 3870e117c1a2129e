"""Rating: (catalog, event) -> cost in µc, and the most a request may cost. Pure: no I/O, no clock.

The rates one request is priced at are the model's own, with each rule that applies laid over
them in this order (a later one wins for each rate it sets):

1. the service tier's rates (``tiers.priority``, ``tiers.flex``), when the request ran on it;
2. for each threshold the prompt passes, lowest first: the standard rates above it, then the
   tier's own rates above it;
3. the first off-peak window open at the event's time.

The prompt is every token sent in (input, cache reads, cache writes). Then

    cost_uc = ceil(Σ tokens_k × rate_k / 1,000,000) + request + Σ quantity × feature_price
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace

from creditmeter.errors import InputError
from creditmeter.money import MAX_UC
from creditmeter.pricing.model import (
    SERVICE_TIERS,
    TOKENS_PER_PRICE_UNIT,
    Catalog,
    ModelPrice,
    OffPeakWindow,
    Rates,
    Tier,
    TokenRates,
)
from creditmeter.pricing.windows import is_open


def check_service_tier(service_tier: str | None) -> None:
    if service_tier is not None and service_tier not in SERVICE_TIERS:
        raise InputError("service_tier", f"must be one of {', '.join(SERVICE_TIERS)} (or absent), "
                         f"got {service_tier!r}")


def layers(price: ModelPrice, service_tier: str | None, prompt_tokens: int) -> list[Rates]:
    """The rules that apply below off-peak, in the order they are laid over the model's rates."""
    tier: Tier | None = price.tiers.get(service_tier) if service_tier is not None else None
    out = [] if tier is None else [tier.rates]
    standard = {t.prompt_tokens: t.rates for t in price.above}
    own = {} if tier is None else {t.prompt_tokens: t.rates for t in tier.above}
    for threshold in sorted(standard.keys() | own.keys()):
        if prompt_tokens <= threshold:
            break
        out.extend(rates for rates in (standard.get(threshold), own.get(threshold)) if rates is not None)
    return out


def _open_index(price: ModelPrice, at_us: int | None) -> int:
    """The index of the first off-peak window open at ``at_us``; -1 for none."""
    if at_us is not None:
        for index, window in enumerate(price.off_peak):
            if is_open(window.timezone, window.hours, window.weekdays, at_us):
                return index
    return -1


def _rates_in_force(price: ModelPrice, service_tier: str | None, prompt_tokens: int,
                    at_us: int | None) -> TokenRates:
    """:func:`rates_for` the open window, remembered on the model: the rates depend only on the
    tier, on which prompt sizes the prompt passes and on the window."""
    window = _open_index(price, at_us)
    key = (service_tier, bisect_left(price.cut_points, prompt_tokens), window)
    rates = price.rates_memo.get(key)
    if rates is None:
        rates = rates_for(price, service_tier, prompt_tokens, None if window < 0 else price.off_peak[window])
        price.rates_memo[key] = rates
    return rates


def rates_for(price: ModelPrice, service_tier: str | None, prompt_tokens: int,
              window: OffPeakWindow | None) -> TokenRates:
    """The rates a request is priced at (see the module's docstring)."""
    in_force = list(layers(price, service_tier, prompt_tokens))
    if window is not None:
        in_force.append(window.rates)
    rates = price.base_rates
    for layer in in_force:
        rates = rates.overlay(layer)
    # A reasoning or 1-hour cache-write rate no rule sets is the output or cache-write rate in
    # force, as it is for the model's own rates (a rule that raises output raises reasoning too).
    if price.reasoning_uc is None and all(layer.reasoning_uc is None for layer in in_force):
        rates = replace(rates, reasoning_uc=rates.output_uc)
    if price.cache_write_1h_uc is None and all(layer.cache_write_1h_uc is None for layer in in_force):
        rates = replace(rates, cache_write_1h_uc=rates.cache_write_uc)
    return rates


def rate(catalog: Catalog, model: str | None, input_tokens: int, output_tokens: int,
         cached_input_tokens: int, cache_write_tokens: int,
         quantities: tuple[tuple[str, int], ...] = (), *, reasoning_tokens: int = 0,
         cache_write_1h_tokens: int = 0, service_tier: str | None = None,
         at_us: int | None = None) -> int:
    """The cost of one event in µc, rounded up once (never undercharge, at most 1 µc over).

    Each kind of token is stated once: ``cached_input_tokens`` are not also in ``input_tokens``,
    ``reasoning_tokens`` not also in ``output_tokens``, ``cache_write_1h_tokens`` not also in
    ``cache_write_tokens``. ``service_tier`` is the tier the request ran on (``priority``,
    ``flex``; None: standard; a tier the model does not price costs the standard rates) and
    ``at_us`` the event's time, which decides off-peak windows (None: no window applies).
    """
    check_service_tier(service_tier)
    cost = 0
    if model is not None:
        price = _model(catalog, model)
        prompt = input_tokens + cached_input_tokens + cache_write_tokens + cache_write_1h_tokens
        r = _rates_in_force(price, service_tier, prompt, at_us) if price.has_rules else price.base_rates
        scaled = (input_tokens * r.input_uc + output_tokens * r.output_uc
                  + reasoning_tokens * r.reasoning_uc + cached_input_tokens * r.cached_input_uc
                  + cache_write_tokens * r.cache_write_uc + cache_write_1h_tokens * r.cache_write_1h_uc)
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


def estimate(catalog: Catalog, model: str, input_tokens: int, output_tokens: int, *,
             service_tier: str | None = None) -> int:
    """The most a request may cost, in µc: up to ``input_tokens`` tokens sent in (as input, cache
    reads or cache writes) and up to ``output_tokens`` tokens out (as output or reasoning).

    Never below what :func:`rate` could charge for such usage on ``service_tier``, whatever the
    event's time: each prompt size up to ``input_tokens`` and every off-peak window is weighed,
    each token at the dearest rate of its side.
    """
    check_service_tier(service_tier)
    price = _model(catalog, model)
    sizes = [0] + [t + 1 for t in _thresholds(price, service_tier) if t < input_tokens]
    windows: list[OffPeakWindow | None] = [None, *price.off_peak]
    most = 0
    for size in sizes:
        for window in windows:
            r = rates_for(price, service_tier, size, window)
            sent = max(r.input_uc, r.cached_input_uc, r.cache_write_uc, r.cache_write_1h_uc)
            most = max(most, input_tokens * sent + output_tokens * max(r.output_uc, r.reasoning_uc))
    cost = -(-most // TOKENS_PER_PRICE_UNIT) + price.request_uc
    if cost > MAX_UC:
        raise InputError("event", "costs more than the largest amount an event may charge")
    return cost


def _thresholds(price: ModelPrice, service_tier: str | None) -> set[int]:
    tier = price.tiers.get(service_tier) if service_tier is not None else None
    return {t.prompt_tokens for t in price.above} | {t.prompt_tokens for t in (tier.above if tier else ())}


def _model(catalog: Catalog, model: str) -> ModelPrice:
    price = catalog.models.get(model)
    if price is None:
        raise InputError("model", f"unknown model {model!r} (not in the price catalog)")
    return price
