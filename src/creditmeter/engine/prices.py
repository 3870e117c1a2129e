"""Price catalogs: loading a version, and what a chat request may cost at most."""

from __future__ import annotations

from creditmeter.engine._unit import EngineBase, _check_instant, _check_request_tokens, _version_at
from creditmeter.pricing import Catalog, PriceVersion, estimate
from creditmeter.store.base import Transaction
from creditmeter.timeutil import MIN_US


class PriceCommands(EngineBase):
    """Catalog versions, each effective from its instant (read back through ``price_book``)."""

    def load_prices(self, catalog: Catalog, effective_at_us: int | None, at_us: int,
                    source: str = "") -> PriceVersion:
        """Add a catalog version effective from ``effective_at_us``. When it is ``None``, the
        first catalog ever loaded is effective from the start of time (so usage from before it
        was loaded can be priced), and every later one from ``at_us``."""
        if effective_at_us is not None:
            _check_instant(effective_at_us, "effective")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> PriceVersion:
            effective = effective_at_us
            if effective is None:
                tx.lock_price_versions()  # two first loads at once: one of them is the first
                effective = MIN_US if tx.latest_price_version() == 0 else at_us
            version = tx.insert_price_version(catalog, effective, at_us, source)
            return PriceVersion(version, effective, catalog)

        return self._write(work)

    def estimate(self, model: str, input_tokens: int, max_output_tokens: int, at_us: int, *,
                 service_tier: str | None = None) -> int:
        """What a chat request may cost at most, with the prices effective at ``at_us``: its input
        tokens and its max output tokens each at the dearest rate they may be charged at on
        ``service_tier`` (see :func:`creditmeter.pricing.estimate`)."""
        _check_instant(at_us, "at")
        version = _version_at(self.price_book(), at_us)
        _check_request_tokens(input_tokens, max_output_tokens)
        return estimate(version.catalog, model, input_tokens, max_output_tokens, service_tier=service_tier)
