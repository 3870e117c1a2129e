"""The price catalog and rating: (catalog, event) -> cost in µc. Pure: no I/O, no clock.

A catalog prices models in credits per 1M tokens (``input``, ``output``, ``cached_input``,
``cache_write``, ``cache_write_1h``, ``reasoning``), an optional per-request fee, and named
features per unit; a model's rates may change above a prompt-size threshold, by service tier
and in off-peak windows. Each price is an exact decimal with at most 6 places, so it is held as
an integer: µc per 1M tokens (models) or µc per unit (features, request fees).

    cost_uc = ceil(Σ tokens_k × rate_k / 1,000,000) + request + Σ quantity × feature_price

Catalogs are versioned: a :class:`PriceBook` holds every version with the instant it takes
effect, and an event is priced with the version effective at its timestamp.

Modules: ``model`` (the records), ``parse`` (the file form), ``windows`` (off-peak hours),
``rating`` (cost and estimates), ``litellm_rates`` and ``litellm_import`` (LiteLLM's price map).
"""

from creditmeter.pricing.litellm_import import ImportReport, import_litellm
from creditmeter.pricing.model import (
    MODEL_PRICE_FIELDS,
    RATE_FIELDS,
    SERVICE_TIERS,
    TOKENS_PER_PRICE_UNIT,
    Catalog,
    ModelPrice,
    OffPeakWindow,
    PriceBook,
    PriceVersion,
    Rates,
    Threshold,
    Tier,
    TokenRates,
)
from creditmeter.pricing.parse import load_yaml, parse_catalog
from creditmeter.pricing.rating import estimate, rate, rates_for

__all__ = [
    "MODEL_PRICE_FIELDS", "RATE_FIELDS", "SERVICE_TIERS", "TOKENS_PER_PRICE_UNIT", "Catalog",
    "ImportReport", "ModelPrice", "OffPeakWindow", "PriceBook", "PriceVersion", "Rates", "Threshold",
    "Tier", "TokenRates", "estimate", "import_litellm", "load_yaml", "parse_catalog", "rate", "rates_for",
]
