"""The prices the concurrency tests charge at, and the cost each event must get, computed
independently of the engine (exact decimal arithmetic)."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

# Credits per 1M tokens, as text: the independent cost below is exact decimal arithmetic.
PRICES = {
    "small": {"input": "0.15", "output": "0.6"},
    "odd": {"input": "3.333333", "output": "13.000007"},
    "big": {"input": "15", "output": "75"},
}


def expected_cost_uc(event: dict[str, object]) -> int:
    """SPEC §3, computed independently: a price in credits per 1M tokens is µc per token, so the
    cost in µc is Σ tokens × price, rounded up once per event."""
    price = PRICES[str(event["model"])]
    exact = (Decimal(str(event["input_tokens"])) * Decimal(price["input"])
             + Decimal(str(event["output_tokens"])) * Decimal(price["output"]))
    return int(exact.to_integral_value(rounding=ROUND_CEILING))
