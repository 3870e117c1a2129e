"""Price catalogs: loading a version, and what a chat request may cost at most."""

from __future__ import annotations

from creditmeter.engine._unit import EngineBase, _check_instant, _check_request_tokens, _version_at
from creditmeter.pricing import Catalog, PriceVersion, rate


class PriceCommands(EngineBase):
    """Catalog versions, each effective from its instant (read back through ``price_book``)."""

    def load_prices(self, catalog: Catalog, effective_at_us: int, at_us: int,
                    source: str = "") -> PriceVersion:
        """Add a catalog version effective from ``effective_at_us``."""
        _check_instant(effective_at_us, "effective")
        _check_instant(at_us, "at")
        version = self._write(lambda tx: tx.insert_price_version(catalog, effective_at_us, at_us, source))
        return PriceVersion(version, effective_at_us, catalog)

    def estimate(self, model: str, input_tokens: int, max_output_tokens: int, at_us: int) -> int:
        """What a chat request may cost at most: its input tokens at the input price
        plus its max output tokens at the output price, with the prices effective at ``at_us``."""
        _check_instant(at_us, "at")
        version = _version_at(self.price_book(), at_us)
        _check_request_tokens(input_tokens, max_output_tokens)
        return rate(version.catalog, model, input_tokens, max_output_tokens, 0, 0)
