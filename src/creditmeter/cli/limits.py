"""``creditmeter limits`` and ``creditmeter policy``: bounds on an account's consumption, and what
its requests meet once its credits run out. The command line acts as the operator."""

from __future__ import annotations

from typing import Any

import click

from creditmeter import present
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import limits_table
from creditmeter.engine import Engine
from creditmeter.errors import InputError
from creditmeter.money import format_credits, parse_credits

POLICY_MODES = ("block", "overage", "fallback", "plan")


@main.group()
def limits() -> None:
    """Limits on consumption: per account, per key, per enterprise member."""


@command(limits, "set", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.option("--window", required=True, metavar="WINDOW",
              help="total, 'rolling 5h' (hours, days or weeks), or a calendar length: 1d, 7d, 1mo.")
@click.option("--credits", "credits", required=True, metavar="N",
              help="The most consumption the window may count, in credits.")
@click.option("--calendar", metavar="TZ", help="The time zone of a calendar window (default UTC).")
@click.option("--scope", type=click.Choice(["account", "key", "member"]), default="account",
              show_default=True, help="Whose consumption counts.")
@click.option("--key-id", metavar="KEY", help="The key whose requests count (scope key).")
@click.option("--enterprise", "enterprise_id", metavar="ENTERPRISE",
              help="The enterprise whose quota counts (scope member).")
@click.option("--id", "limit_id", metavar="ID", help="The limit's id: setting it again replaces it.")
def limits_set(engine: Engine, account_id: str, window: str, credits: str, calendar: str | None,
               scope: str, key_id: str | None, enterprise_id: str | None, limit_id: str | None,
               at_us: int, as_json: bool) -> None:
    """Set (or replace, by --id) a limit on ACCOUNT's consumption."""
    rule = engine.set_limit(account_id, window, credits, at_us, scope=scope, key_id=key_id,
                            enterprise_id=enterprise_id, limit_id=limit_id, calendar=calendar,
                            source="operator")
    status = next(s for s in engine.limits(account_id, at_us) if s.rule.id == rule.id)
    emit(present.limit(status), as_json, lambda data: click.echo(
        f"limit {data['id']} on {account_id}: {data['description']} "
        f"(used {data['used_credits']}, held {data['held_credits']})"))


@command(limits, "list", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
def limits_list(engine: Engine, account_id: str, at_us: int, as_json: bool) -> None:
    """Every limit in force on ACCOUNT (the plan's, then its own), with what counts against it."""
    rows = [present.limit(s) for s in engine.limits(account_id, at_us)]
    emit(rows, as_json, lambda _: limits_table(account_id, rows))


@command(limits, "remove", at=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.argument("limit_id", metavar="ID")
def limits_remove(engine: Engine, account_id: str, limit_id: str, at_us: int) -> None:
    """Remove one of ACCOUNT's own limits (a plan's limits go with its plan)."""
    rule = engine.remove_limit(account_id, limit_id, at_us)
    click.echo(f"limit {rule.id} removed from {account_id}: {rule.describe()}")


@main.group()
def policy() -> None:
    """What requests meet once an account's credits run out: refused, overage, or a fallback model."""


def _policy(mode: str, value: str | None, daily_cap: int | None) -> object:
    """The policy in its file form from ``MODE [VALUE]``; None for ``plan`` (the plan's again)."""
    if mode not in POLICY_MODES:
        raise InputError("mode", f"must be one of {', '.join(POLICY_MODES)}, got {mode!r}")
    if daily_cap is not None and mode != "fallback":
        raise InputError("daily_cap", "only a fallback has a daily cap")
    if mode in ("block", "plan"):
        if value is not None:
            raise InputError("mode", f"{mode} takes nothing after it, got {value!r}")
        return None if mode == "plan" else "block"
    if value is None:
        field = "cap" if mode == "overage" else "model"
        raise InputError(field, f"is required: {mode} {field.upper()}")
    if mode == "overage":
        return {"overage": format_credits(parse_credits(value, "cap", allow_zero=False))}
    out: dict[str, Any] = {"fallback": value}
    if daily_cap is not None:
        out["daily_cap"] = daily_cap
    return out


@command(policy, "set", at=True, as_json=True, signed=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.argument("mode", metavar="block|overage|fallback|plan")
@click.argument("value", metavar="[CAP|MODEL]", required=False)
@click.option("--daily-cap", "daily_cap", type=int, metavar="N",
              help="With fallback: the most requests a UTC day that may fall back (default: no cap).")
def policy_set(engine: Engine, account_id: str, mode: str, value: str | None, daily_cap: int | None,
               at_us: int, as_json: bool) -> None:
    """Set what ACCOUNT's requests meet once its credits run out: block, overage CAP (credits of
    debt at most), fallback MODEL, or plan (back to the plan's)."""
    policy = engine.set_out_of_credits(account_id, _policy(mode, value, daily_cap), at_us)
    emit(present.when_out(policy), as_json,
         lambda data: click.echo(f"{account_id}: {data['description']}"))


@command(policy, "show", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
def policy_show(engine: Engine, account_id: str, at_us: int, as_json: bool) -> None:
    """The policy in force on ACCOUNT: the account's own if set, else its plan's."""
    emit(present.when_out(engine.out_of_credits(account_id, at_us)), as_json,
         lambda data: click.echo(f"{account_id}: {data['description']}"))
