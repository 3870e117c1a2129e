"""``creditmeter keys``: API keys, shown once when made and stored only as a hash."""

from __future__ import annotations

import click

from creditmeter import present
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import keys_table
from creditmeter.engine import Engine
from creditmeter.errors import InputError
from creditmeter.timeutil import format_instant


@main.group()
def keys() -> None:
    """API keys: shown once, stored only as a hash."""


@command(keys, "create", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT", required=False)
@click.option("--operator", is_flag=True, help="An operator key (full access) instead of an account key.")
@click.option("--name", help="A label for the key, e.g. where it is used.")
def keys_create(engine: Engine, account_id: str | None, operator: bool, name: str | None, at_us: int,
                as_json: bool) -> None:
    """Create a key for ACCOUNT (or --operator); the key is printed this once."""
    if operator == (account_id is not None):
        raise InputError("account", "give either ACCOUNT or --operator")
    key, secret = engine.create_key(account_id, at_us, name=name)

    def show(_: object) -> None:
        # The note goes to stderr so that stdout is the key alone, for scripts.
        click.echo(f"{key.role.value} key {key.id}{' for ' + account_id if account_id else ''} "
                   "(shown once; store it now):", err=True)
        click.echo(secret)

    emit({**present.key(key), "key": secret}, as_json, show)


@command(keys, "list", as_json=True)
@click.argument("account_id", metavar="ACCOUNT", required=False)
def keys_list(engine: Engine, account_id: str | None, as_json: bool) -> None:
    """List keys (every key, or ACCOUNT's) without the keys themselves."""
    rows = [present.key(k) for k in engine.keys(account_id)]
    emit(rows, as_json, keys_table)


@command(keys, "revoke", at=True, as_json=True)
@click.argument("key_id")
def keys_revoke(engine: Engine, key_id: str, at_us: int, as_json: bool) -> None:
    """Revoke a key: it stops working at once."""
    key = engine.revoke_key(key_id, at_us)
    emit(present.key(key), as_json,
         lambda _: click.echo(f"key {key.id} revoked at {format_instant(key.revoked_at_us)}"))
