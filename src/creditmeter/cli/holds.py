"""``creditmeter holds``: reserve credits for a request in flight, then settle or release them."""

from __future__ import annotations

import sys
from typing import Any

import click

from creditmeter import present
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit, print_json
from creditmeter.cli.usage import parse_quantities, print_charge, usage_options
from creditmeter.domain import Refused
from creditmeter.engine import Engine, Usage
from creditmeter.errors import InputError
from creditmeter.money import parse_credits

EXIT_REFUSED = 6


@main.group()
def holds() -> None:
    """Holds: credits reserved for requests in flight."""


@command(holds, "reserve", at=True, as_json=True, signed=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.argument("amount")
@click.option("--ttl", "ttl_s", type=int, default=None, help="Seconds before it lapses (default 600).")
@click.option("--id", "hold_id", metavar="ID", help="Idempotency key (default: a new id).")
def holds_reserve(engine: Engine, account_id: str, amount: str, ttl_s: int | None,
                  hold_id: str | None, at_us: int, as_json: bool) -> None:
    """Reserve AMOUNT credits; exit 6 if the account cannot cover it or a limit would be passed."""
    result = engine.reserve(account_id, parse_credits(amount, "amount", allow_zero=False), at_us,
                            ttl_s=ttl_s, hold_id=hold_id)
    if isinstance(result, Refused):
        refused = present.refused(result)
        if as_json:
            print_json(refused)
        # Said on stderr with --json too: a script sees why, and stdout stays the JSON.
        click.echo(f"refused: {refusal_words(refused)}", err=True)
        sys.exit(EXIT_REFUSED)
    emit(present.hold(result), as_json, lambda data: click.echo(
        f"hold {data['hold_id']}: {data['amount_credits']} credits until {data['expires_at']}"))


def refusal_words(refused: dict[str, Any]) -> str:
    """Why a reservation was refused: the limit it would pass (what counts against it, and when
    enough frees up), or the credits it lacks (and the model the account falls back to)."""
    limit = refused.get("limit")
    if limit is None:
        words = (f"{refused['reason']} (available {refused['available_credits']}, "
                 f"requested {refused['requested_credits']})")
        if "fallback_model" in refused:
            words += f"; the account's policy falls back to {refused['fallback_model']}"
        return words
    frees = (f"enough frees up at {limit['frees_at']}" if "frees_at" in limit
             else "waiting alone will not free enough")
    return (f"limit {limit['id']} reached: {limit['description']}: used {limit['used_credits']}, "
            f"held {limit['held_credits']}, requested {refused['requested_credits']}; {frees}")


@command(holds, "settle", at=True, as_json=True)
@click.argument("hold_id")
@usage_options
@click.option("--id", "event_id", metavar="ID", help="The usage event's id (default: hold:HOLD_ID).")
def holds_settle(engine: Engine, hold_id: str, model: str | None, input_tokens: int,
                 output_tokens: int, cached_input_tokens: int, cache_write_tokens: int,
                 reasoning_tokens: int, cache_write_1h_tokens: int, service_tier: str | None,
                 quantity: tuple[str, ...], event_id: str | None, at_us: int, as_json: bool) -> None:
    """Charge the actual usage of a held request; the rest of the hold is released."""
    quantities = tuple(sorted(parse_quantities(quantity).items()))
    for name, value in quantities:
        if value < 0:
            raise InputError(f"quantities.{name}", "must not be negative")
    usage = Usage(model, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
                  quantities, reasoning_tokens=reasoning_tokens,
                  cache_write_1h_tokens=cache_write_1h_tokens, service_tier=service_tier)
    result = engine.settle(hold_id, usage, at_us, event_id=event_id)
    print_charge(result, as_json)


@command(holds, "release", at=True, as_json=True)
@click.argument("hold_id")
def holds_release(engine: Engine, hold_id: str, at_us: int, as_json: bool) -> None:
    """Give a hold's credits back."""
    hold = engine.release(hold_id, at_us)
    emit(present.hold(hold), as_json, lambda _: click.echo(f"hold {hold.id}: {hold.status.value}"))
