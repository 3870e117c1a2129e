"""creditmeter: a credits engine for AI products.

Rate model usage from a versioned price catalog, burn credit packages down in a fixed order
(the trial first, then whatever expires soonest), hold credits for requests in flight, and keep
an append-only ledger from which every figure is re-derived.

    >>> import creditmeter
    >>> engine = creditmeter.open_engine("sqlite:///credits.db")
"""

from creditmeter.domain import (
    Account,
    Allocation,
    Balance,
    Charge,
    Grant,
    GrantKind,
    GrantStatus,
    Hold,
    HoldStatus,
    Package,
    Refused,
    Rejected,
    UsageEvent,
)
from creditmeter.engine import Engine, Settings, TickReport, Usage, open_engine
from creditmeter.errors import Conflict, CreditmeterError, InputError, NotFound, SchemaError
from creditmeter.money import format_credits, parse_credits
from creditmeter.pricing import Catalog, ModelPrice, PriceBook, import_litellm, parse_catalog, rate
from creditmeter.store import SqlStore, open_store

__version__ = "0.1.0"


__all__ = [
    "Account", "Allocation", "Balance", "Catalog", "Charge", "Conflict", "CreditmeterError",
    "Engine", "Grant", "GrantKind", "GrantStatus", "Hold", "HoldStatus", "InputError",
    "ModelPrice", "NotFound", "Package", "PriceBook", "Refused", "Rejected", "SchemaError",
    "Settings", "SqlStore", "TickReport", "Usage", "UsageEvent", "__version__", "format_credits",
    "import_litellm", "open_engine", "open_store", "parse_catalog", "parse_credits", "rate",
]
