"""``creditmeter accounts`` and ``creditmeter balance``: accounts, and what an account can spend."""

from __future__ import annotations

import click

from creditmeter import present
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import accounts_table, balance_table
from creditmeter.engine import Engine


@main.group()
def accounts() -> None:
    """Accounts (people and enterprises)."""


@command(accounts, "create", at=True, as_json=True)
@click.argument("account_id", metavar="ID")
@click.option("--name", help="Shown to people (default: the id).")
@click.option("--kind", type=click.Choice(["user", "enterprise"]), default="user", show_default=True)
def accounts_create(engine: Engine, account_id: str, name: str | None, kind: str, at_us: int,
                    as_json: bool) -> None:
    """Create an account."""
    account = engine.create_account(account_id, at_us, name=name, kind=kind)
    emit(present.account(account, 0), as_json,
         lambda _: click.echo(f"account {account.id} ({account.kind.value})"))


@command(accounts, "list", as_json=True)
def accounts_list(engine: Engine, as_json: bool) -> None:
    """List accounts."""
    rows = [present.account(a, o) for a, o in engine.accounts()]
    emit(rows, as_json, accounts_table)


@command(main, "balance", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
def balance(engine: Engine, account_id: str, at_us: int, as_json: bool) -> None:
    """Available, held and overage credits, every package in burn-down order, the recurring
    allowances, the limits, and what requests meet once the credits run out."""
    emit(present.balance(engine.balance(account_id, at_us)), as_json, balance_table)
