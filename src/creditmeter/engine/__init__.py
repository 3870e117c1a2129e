"""The engine: the one place that runs a command.

Each command opens one transaction, loads what it needs into books, runs the pure transitions
(``ledger``, ``burndown``, ``pricing``), writes what they produced and commits — or raises one of
``creditmeter.errors`` and writes nothing. Time is always an argument (``at_us``): the engine
never reads a clock.

The commands are grouped by area, one module each, over the unit of work they share
(``_unit``); :class:`Engine` is all of them together.
"""

from __future__ import annotations

from creditmeter.engine._unit import Settings
from creditmeter.engine.access import KeyCommands
from creditmeter.engine.accounts import AccountCommands
from creditmeter.engine.billing import SubscriptionCommands
from creditmeter.engine.grants import RESERVED_GRANT_PREFIXES, GrantCommands
from creditmeter.engine.holds import MAX_HOLD_TTL_S, HoldCommands, Usage
from creditmeter.engine.limits import LimitCommands
from creditmeter.engine.maintenance import Maintenance, TickReport
from creditmeter.engine.notifications import NoticeCommands
from creditmeter.engine.prices import PriceCommands
from creditmeter.engine.quota import EnterpriseCommands, EnterpriseView
from creditmeter.engine.usage import GROUPS, MAX_PAGE, SETTLE_ID_PREFIX, UsageCommands
from creditmeter.engine.webhooks import WebhookCommands
from creditmeter.store import SqlStore

__all__ = [
    "GROUPS",
    "MAX_HOLD_TTL_S",
    "MAX_PAGE",
    "RESERVED_GRANT_PREFIXES",
    "SETTLE_ID_PREFIX",
    "Engine",
    "EnterpriseView",
    "Settings",
    "TickReport",
    "Usage",
    "open_engine",
]


class Engine(AccountCommands, KeyCommands, PriceCommands, GrantCommands, UsageCommands, HoldCommands,
             Maintenance, SubscriptionCommands, EnterpriseCommands, LimitCommands, WebhookCommands,
             NoticeCommands):
    """Credits operations over a :class:`~creditmeter.store.base.Store`."""


def open_engine(url: str = "sqlite:///creditmeter.db", settings: Settings | None = None) -> Engine:
    """An engine on the database at ``url`` (SQLite files get their schema on first use)."""
    return Engine(SqlStore(url), settings)
