"""``creditmeter enterprise``: an enterprise pool's members, and the quota admins give them."""

from __future__ import annotations

from typing import Any

import click

from creditmeter import present
from creditmeter.cli.common import command, instant, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import allocations_table, members_table, packages_table
from creditmeter.engine import Engine
from creditmeter.money import format_credits, parse_credits
from creditmeter.timeutil import format_instant


@main.group()
def enterprise() -> None:
    """Enterprise pools: members, and the quota admins add to them."""


@command(enterprise, "add-member", at=True, as_json=True)
@click.argument("enterprise_id", metavar="ENTERPRISE")
@click.argument("account_id", metavar="USER")
@click.option("--role", type=click.Choice(["admin", "member"]), default="member", show_default=True)
def enterprise_add_member(engine: Engine, enterprise_id: str, account_id: str, role: str, at_us: int,
                          as_json: bool) -> None:
    """Make USER a member (or admin) of ENTERPRISE; again changes the role."""
    member = engine.add_member(enterprise_id, account_id, at_us, role=role)
    emit(present.member(member), as_json,
         lambda _: click.echo(f"{account_id} is {member.role.value} of {enterprise_id}"))


@command(enterprise, "remove-member", at=True)
@click.argument("enterprise_id", metavar="ENTERPRISE")
@click.argument("account_id", metavar="USER")
def enterprise_remove_member(engine: Engine, enterprise_id: str, account_id: str, at_us: int) -> None:
    """Remove USER from ENTERPRISE (quota already added stays until revoked or expired)."""
    engine.remove_member(enterprise_id, account_id, at_us)
    click.echo(f"{account_id} is no longer a member of {enterprise_id}")


@command(enterprise, "allocate", at=True, as_json=True, signed=True)
@click.argument("enterprise_id", metavar="ENTERPRISE")
@click.argument("account_id", metavar="USER")
@click.argument("amount")
@click.option("--expires", metavar="TIME",
              help="Until when (default: as long as the pool credits it comes from last).")
@click.option("--id", "allocation_id", metavar="ID", help="Idempotency key; also the member's package id.")
def enterprise_allocate(engine: Engine, enterprise_id: str, account_id: str, amount: str,
                        expires: str | None, allocation_id: str | None, at_us: int, as_json: bool) -> None:
    """Add AMOUNT credits of ENTERPRISE's pool to USER's quota."""
    package = engine.allocate(enterprise_id, account_id, parse_credits(amount, "amount", allow_zero=False),
                              at_us, expires_at_us=instant(expires, "expires"), allocation_id=allocation_id)
    emit(present.package(package), as_json, lambda _: click.echo(
        f"allocation {package.grant.id}: {format_credits(package.grant.amount_uc)} credits to "
        f"{account_id} until {format_instant(package.grant.expires_at_us) or 'never'}"))


@command(enterprise, "revoke", at=True, as_json=True)
@click.argument("allocation_id", metavar="GRANT_ID")
def enterprise_revoke(engine: Engine, allocation_id: str, at_us: int, as_json: bool) -> None:
    """Revoke quota: what the member has not used goes back to the pool."""
    allocation = engine.revoke_allocation(allocation_id, at_us)
    emit(present.allocation(allocation), as_json, lambda _: click.echo(
        f"allocation {allocation.id} revoked: {format_credits(allocation.returned_uc)} credits "
        f"back to {allocation.enterprise_id}'s pool"))


@command(enterprise, "show", at=True, as_json=True)
@click.argument("enterprise_id", metavar="ENTERPRISE")
def enterprise_show(engine: Engine, enterprise_id: str, at_us: int, as_json: bool) -> None:
    """The pool, the members and each member's quota, used and remaining."""
    emit(present.enterprise(engine.enterprise(enterprise_id, at_us)), as_json,
         lambda data: _enterprise_tables(enterprise_id, data))


def _enterprise_tables(enterprise_id: str, data: dict[str, Any]) -> None:
    pool = data["pool"]
    packages_table(pool, used="allocated")
    click.echo(f"allocated to members {pool['allocated_credits']} credits, "
               f"used by members {pool['members_used_credits']}")
    members_table(enterprise_id, data["members"])
    allocations_table(enterprise_id, data["allocations"])
