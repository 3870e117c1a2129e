"""The ``creditmeter`` command: a thin edge over the engine.

Each command parses its options into engine calls and prints the result (a table, or JSON with
``--json``). ``--at TIME`` runs a command as if the current time were TIME; it is the only place
"now" is read. Errors print ``error: FIELD: REASON`` to stderr and exit non-zero (see errors.py).
"""

from __future__ import annotations

import click

from creditmeter.cli.common import settings_from_env

__all__ = ["main", "settings_from_env"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="creditmeter")
def main() -> None:
    """creditmeter: credits for AI products — prices, packages, burn-down, holds, usage."""


# Each command module adds its commands to ``main`` as it is imported, so these come after it.
from creditmeter.cli import (  # noqa: E402, F401
    accounts,
    db,
    enterprise,
    grants,
    holds,
    keys,
    maintenance,
    plans,
    prices,
    serve,
    usage,
)

