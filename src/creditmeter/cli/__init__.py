"""The ``creditmeter`` command: a thin edge over the engine.

Each command parses its options into engine calls and prints the result (a table, or JSON with
``--json``). ``--at TIME`` runs a command as if the current time were TIME; it is the only place
"now" is read. Errors print ``error: FIELD: REASON`` to stderr and exit non-zero (see errors.py).
"""

from __future__ import annotations

# Each command module adds its commands to ``main`` (``cli.common``) as it is imported.
from creditmeter.cli import (  # noqa: F401
    accounts,
    consume,
    db,
    enterprise,
    grants,
    holds,
    keys,
    limits,
    maintenance,
    notifications,
    plans,
    prices,
    serve,
    topup,
    usage,
    webhooks,
)
from creditmeter.cli.common import main

__all__ = ["main"]
