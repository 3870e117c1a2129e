"""``creditmeter tick`` and ``creditmeter reconcile``: the periodic run, and the ledger check."""

from __future__ import annotations

import sys

import click

from creditmeter import present
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit
from creditmeter.engine import Engine


@command(main, "tick", at=True, as_json=True)
def tick(engine: Engine, at_us: int, as_json: bool) -> None:
    """Time out holds, record expiries, pay overage from new credits (run it periodically)."""
    report = engine.tick(at_us)
    emit(present.tick(report, at_us), as_json, lambda data: click.echo(
        f"tick at {data['at']}: {report.renewed} subscriptions renewed, {report.accounts} "
        f"accounts, {report.holds_expired} holds timed out, {report.entries} ledger entries"))


@command(main, "reconcile", as_json=True)
def reconcile(engine: Engine, as_json: bool) -> None:
    """Re-derive every figure from the ledger and check every invariant; exit 1 on a violation."""
    problems = engine.check_invariants()
    emit({"ok": not problems, "violations": problems}, as_json, lambda _: _print_problems(problems))
    if problems:
        sys.exit(1)


def _print_problems(problems: list[str]) -> None:
    if not problems:
        click.echo("reconcile: every invariant holds")
    for line in problems:
        click.echo(f"violation: {line}")
