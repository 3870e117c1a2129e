"""``creditmeter topup``: an account's auto top-up — when its available credits fall below a
threshold, a pack is requested of the operator's payment system (the ``topup.requested`` alert).
The command line acts as the operator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from creditmeter.alert_rules import AutoTopup
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit
from creditmeter.engine import Engine
from creditmeter.errors import InputError, NotFound

# The engine's names for the setting's fields, as the options name them.
OPTIONS = {"auto_topup.below": "below", "auto_topup.pack": "pack",
           "auto_topup.max_per_month": "max_per_month", "auto_topup.grant_now": "grant_now"}


@main.group()
def topup() -> None:
    """Auto top-up: a pack requested when an account's credits fall below a threshold."""


@command(topup, "show", as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
def topup_show(engine: Engine, account_id: str, as_json: bool) -> None:
    """ACCOUNT's auto top-up, if it has one."""
    _print(account_id, engine.auto_topup(account_id), as_json)


@command(topup, "set", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.option("--below", required=True, metavar="CREDITS",
              help="Request a top-up when the available credits fall from at or above this to below it.")
@click.option("--pack", "pack_id", required=True, metavar="PACK",
              help="The add-on or resource pack of the plan catalog to request.")
@click.option("--max-per-month", "max_per_month", required=True, type=int, metavar="N",
              help="At most N requests a UTC month.")
@click.option("--grant-now", is_flag=True,
              help="Grant the pack at once, before the payment is confirmed.")
def topup_set(engine: Engine, account_id: str, below: str, pack_id: str, max_per_month: int,
              grant_now: bool, at_us: int, as_json: bool) -> None:
    """Set (or replace) ACCOUNT's auto top-up."""
    setting = {"below": below, "pack": pack_id, "max_per_month": max_per_month, "grant_now": grant_now}
    with _options():
        made = engine.set_auto_topup(account_id, setting, at_us)
    _print(account_id, made, as_json)


@command(topup, "off", at=True)
@click.argument("account_id", metavar="ACCOUNT")
def topup_off(engine: Engine, account_id: str, at_us: int) -> None:
    """Turn ACCOUNT's auto top-up off."""
    engine.set_auto_topup(account_id, None, at_us)
    click.echo(f"{account_id}: no auto top-up")


def describe(topup: AutoTopup | None) -> str:
    if topup is None:
        return "no auto top-up"
    data = topup.to_dict()
    said = (f"auto top-up: {data['pack']} when the available credits fall below {data['below']}, "
            f"at most {data['max_per_month']} a month")
    return said + (" (granted at once, before payment)" if topup.grant_now else "")


def _print(account_id: str, topup: AutoTopup | None, as_json: bool) -> None:
    out: dict[str, Any] = {"auto_topup": None if topup is None else topup.to_dict()}
    emit(out, as_json, lambda _: click.echo(f"{account_id}: {describe(topup)}"))


@contextmanager
def _options() -> Iterator[None]:
    """Report an error of the setting under the option's name (``auto_topup.below`` → ``below``)."""
    try:
        yield
    except InputError as exc:
        if exc.field in OPTIONS:
            raise InputError(OPTIONS[exc.field], exc.reason) from None
        raise
    except NotFound as exc:
        if exc.field in OPTIONS:
            raise NotFound(exc.what, exc.ident, OPTIONS[exc.field]) from None
        raise
