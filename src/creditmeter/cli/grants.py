"""``creditmeter grants``: put credit packages on an account, list them, void them."""

from __future__ import annotations

import click

from creditmeter import present
from creditmeter.cli.common import command, instant, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import packages_table
from creditmeter.engine import Engine
from creditmeter.money import format_credits, parse_credits


@main.group()
def grants() -> None:
    """Credit packages."""


@command(grants, "add", at=True, as_json=True, signed=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.argument("amount")
@click.option("--kind", required=True, metavar="KIND",
              help="trial, subscription, addon, package, enterprise, promo or adjustment.")
@click.option("--expires", metavar="TIME", help="When it expires (default: never).")
@click.option("--effective", metavar="TIME", help="When it becomes usable (default: now).")
@click.option("--priority", type=int, help="0-100, lower is used first (default: trial 0, others 50).")
@click.option("--name", help="Shown to the user, e.g. 'Professional Edition — Nov 2026'.")
@click.option("--id", "grant_id", metavar="ID", help="Idempotency key: the same add again does nothing.")
def grants_add(engine: Engine, account_id: str, amount: str, kind: str, expires: str | None,
               effective: str | None, priority: int | None, name: str | None, grant_id: str | None,
               at_us: int, as_json: bool) -> None:
    """Put AMOUNT credits on ACCOUNT."""
    package = engine.add_grant(
        account_id, parse_credits(amount, "amount", allow_zero=False), kind, at_us,
        expires_at_us=instant(expires, "expires"), effective_at_us=instant(effective, "effective"),
        priority=priority, name=name, grant_id=grant_id, source="cli")
    emit(present.package(package), as_json, lambda _: click.echo(
        f"grant {package.grant.id}: {format_credits(package.grant.amount_uc)} credits "
        f"({package.grant.kind.value}) on {account_id}, {package.status.value}"))


@command(grants, "list", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
def grants_list(engine: Engine, account_id: str, at_us: int, as_json: bool) -> None:
    """List an account's packages in burn-down order."""
    b = engine.balance(account_id, at_us)
    emit([present.package(p) for p in b.packages], as_json, lambda _: packages_table(present.balance(b)))


@command(grants, "void", at=True, as_json=True)
@click.argument("grant_id")
def grants_void(engine: Engine, grant_id: str, at_us: int, as_json: bool) -> None:
    """Void (refund) a package: what remains is removed, what was used stays used."""
    package = engine.void_grant(grant_id, at_us)
    emit(present.package(package), as_json, lambda _: click.echo(
        f"grant {grant_id} voided: {format_credits(package.voided_uc)} credits removed"))
