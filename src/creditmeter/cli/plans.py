"""``creditmeter plans``, ``subscriptions`` and ``purchases``: the plan catalog, subscribing to
a plan, and buying one-off packs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from creditmeter import present
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import plans_table
from creditmeter.engine import Engine
from creditmeter.money import format_credits
from creditmeter.plans import load_plans_file
from creditmeter.timeutil import format_instant


@main.group()
def plans() -> None:
    """The plan catalog: trial, subscriptions, add-on packs, resource packs, enterprise."""


@command(plans, "load", at=True, as_json=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def plans_load(engine: Engine, file: Path, at_us: int, as_json: bool) -> None:
    """Make a plan catalog YAML file the catalog (running subscriptions keep their terms)."""
    catalog = load_plans_file(file)
    version = engine.load_plans(catalog, at_us, source=file.name)
    out = {"version": version, "plans": len(catalog.plans)}
    emit(out, as_json, lambda _: click.echo(f"plan catalog version {version}: {len(catalog.plans)} plans"))


@command(plans, "list", as_json=True)
def plans_list(engine: Engine, as_json: bool) -> None:
    """The plans (the shipped default until a catalog is loaded)."""
    rows = engine.plans().to_dict()["plans"]
    emit(rows, as_json, plans_table)


@main.group()
def subscriptions() -> None:
    """Subscriptions: trial, monthly or yearly plans, enterprise seats."""


def _print_subscription(data: dict[str, Any]) -> None:
    period = data["current_period"]
    when = f", period {period['start']} to {period['end']}" if period else ""
    click.echo(f"subscription {data['subscription_id']}: {data['plan_name']} ({data['plan_id']}) "
               f"on {data['account_id']}, {data['status']}{when}"
               + (f", ends {data['ends_at']}" if data["ends_at"] else ""))


@command(subscriptions, "create", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.argument("plan_id", metavar="PLAN")
@click.option("--seats", type=int, help="Enterprise plans: seats (default: the plan's).")
@click.option("--id", "subscription_id", metavar="ID",
              help="Idempotency key: the same create again does nothing.")
def subscriptions_create(engine: Engine, account_id: str, plan_id: str, seats: int | None,
                         subscription_id: str | None, at_us: int, as_json: bool) -> None:
    """Subscribe ACCOUNT to PLAN from now (--at): its first period is granted at once."""
    sub = engine.subscribe(account_id, plan_id, at_us, subscription_id=subscription_id, seats=seats)
    emit(present.subscription(sub, at_us), as_json, _print_subscription)


@command(subscriptions, "cancel", at=True, as_json=True)
@click.argument("subscription_id", metavar="SUBSCRIPTION_ID")
def subscriptions_cancel(engine: Engine, subscription_id: str, at_us: int, as_json: bool) -> None:
    """Cancel at the end of the current period."""
    sub = engine.cancel_subscription(subscription_id, at_us)
    emit(present.subscription(sub, at_us), as_json, _print_subscription)


@command(subscriptions, "show", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
def subscriptions_show(engine: Engine, account_id: str, at_us: int, as_json: bool) -> None:
    """An account's subscriptions (the trial included), oldest first."""
    rows = [present.subscription(sub, at_us) for sub in engine.subscriptions(account_id)]
    emit(rows, as_json, lambda _: _print_subscriptions(account_id, rows))


def _print_subscriptions(account_id: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo(f"{account_id} has no subscription")
    for row in rows:
        _print_subscription(row)


@main.group()
def purchases() -> None:
    """One-off packs (add-on packs, resource packages), as a payment webhook would buy them."""


@command(purchases, "create", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.argument("pack_id", metavar="PACK")
@click.option("--id", "order_id", metavar="ORDER_ID", help="The order id: the same order again does nothing.")
def purchases_create(engine: Engine, account_id: str, pack_id: str, order_id: str | None, at_us: int,
                     as_json: bool) -> None:
    """Buy PACK for ACCOUNT: a package of its credits, valid its days from now (--at)."""
    package = engine.purchase(account_id, pack_id, at_us, order_id=order_id)
    emit(present.package(package), as_json, lambda _: click.echo(
        f"grant {package.grant.id}: {format_credits(package.grant.amount_uc)} credits "
        f"({package.grant.name}) on {account_id}, "
        f"expires {format_instant(package.grant.expires_at_us)}"))
