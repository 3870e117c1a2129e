"""The ``creditmeter`` command: a thin edge over the engine.

Each command parses its options into engine calls and prints the result (a table, or JSON with
``--json``). ``--at TIME`` runs a command as if the current time were TIME; it is the only place
"now" is read. Errors print ``error: FIELD: REASON`` to stderr and exit non-zero (see errors.py).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

from creditmeter import present
from creditmeter.domain import Charge, Refused
from creditmeter.engine import Engine, Settings, Usage, open_engine
from creditmeter.errors import CreditmeterError, InputError, Unavailable
from creditmeter.keys import check_admin_key
from creditmeter.money import format_credits, parse_credits, to_decimal
from creditmeter.plans import load_plans_file
from creditmeter.pricing import import_litellm, load_yaml, parse_catalog
from creditmeter.timeutil import format_instant, parse_instant

if TYPE_CHECKING:
    from creditmeter.ingest import ImportSummary

DEFAULT_DB = "sqlite:///creditmeter.db"
EXIT_REFUSED = 6
F = TypeVar("F", bound=Callable[..., Any])


def now_us() -> int:
    return time.time_ns() // 1000


def settings_from_env() -> Settings:
    """Engine settings from CREDITMETER_LATENESS_WINDOW_S and CREDITMETER_HOLD_TTL_S."""
    values: dict[str, int] = {}
    for env, name in (("CREDITMETER_LATENESS_WINDOW_S", "lateness_window_s"),
                      ("CREDITMETER_HOLD_TTL_S", "default_hold_ttl_s")):
        raw = os.environ.get(env)
        if raw is not None:
            try:
                values[name] = int(raw)
            except ValueError:
                raise InputError(env, f"{raw!r} is not a whole number of seconds") from None
            if values[name] <= 0:
                raise InputError(env, "must be greater than zero")
    return Settings(**values)


def _instant(value: str | None, field: str) -> int | None:
    return None if value is None else parse_instant(value, field)


def _emit(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def command(group: click.Group, name: str, *, at: bool = False, as_json: bool = False) -> Callable[[F], F]:
    """Register a command with the shared options (--db, and --at / --json where they apply).

    The wrapped function gets ``engine`` (and ``at_us``, ``as_json``); errors become exit codes.
    """
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(db: str | None, **kwargs: Any) -> None:
            url = db or os.environ.get("CREDITMETER_DB") or DEFAULT_DB
            try:
                if at:
                    at_text = kwargs.pop("at")
                    kwargs["at_us"] = now_us() if at_text is None else parse_instant(at_text, "at")
                engine = open_engine(url, settings_from_env())
                try:
                    fn(engine=engine, **kwargs)
                finally:
                    engine.close()
            except CreditmeterError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(exc.exit_code)

        wrapped: Any = run
        if as_json:
            wrapped = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(wrapped)
        if at:
            wrapped = click.option("--at", metavar="TIME",
                                   help="Run as if now were TIME (ISO 8601; a date is 00:00 UTC).")(wrapped)
        wrapped = click.option("--db", metavar="URL",
                               help=f"Database URL (env CREDITMETER_DB, default {DEFAULT_DB}).")(wrapped)
        group.command(name)(wrapped)
        return fn

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="creditmeter")
def main() -> None:
    """creditmeter: credits for AI products — prices, packages, burn-down, holds, usage."""


# -- db ------------------------------------------------------------------------------------------

@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--db", "url", metavar="URL", help="Database URL (env CREDITMETER_DB).")
def db_upgrade(url: str | None) -> None:
    """Create or upgrade the schema to the newest version."""
    engine = open_engine(url or os.environ.get("CREDITMETER_DB") or DEFAULT_DB)
    try:
        revision = engine.upgrade_schema()
        click.echo(f"schema at {revision} ({engine.database_url})")
    except Unavailable as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    finally:
        engine.close()


# -- prices --------------------------------------------------------------------------------------

@main.group()
def prices() -> None:
    """The price catalog (credits per 1M tokens, features per unit)."""


@command(prices, "load", at=True, as_json=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--effective", metavar="TIME", help="When the new prices take effect (default: now).")
def prices_load(engine: Engine, file: Path, effective: str | None, at_us: int, as_json: bool) -> None:
    """Load a catalog YAML file as a new price version."""
    catalog = parse_catalog(load_yaml(file.read_text(encoding="utf-8"), str(file)), str(file))
    effective_us = at_us if effective is None else parse_instant(effective, "effective")
    version = engine.load_prices(catalog, effective_us, at_us, source=file.name)
    out = {"version": version.version, "effective_at": format_instant(effective_us),
           "models": len(catalog.models), "features": len(catalog.features)}
    if as_json:
        _emit(out)
    else:
        click.echo(f"price version {out['version']} effective {out['effective_at']}: "
                   f"{out['models']} models, {out['features']} features")


@command(prices, "import-litellm", at=True, as_json=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--credits-per-usd", "rate_text", required=True, metavar="N",
              help="How many credits one US dollar buys.")
@click.option("--effective", metavar="TIME", help="When the new prices take effect (default: now).")
def prices_import_litellm(engine: Engine, file: Path, rate_text: str, effective: str | None,
                          at_us: int, as_json: bool) -> None:
    """Import a LiteLLM-style price map (USD per token) as a new price version."""
    rate = to_decimal(rate_text, "credits-per-usd")
    if rate <= 0:
        raise InputError("credits-per-usd", "must be greater than zero")
    try:
        data = _json_decimal(file.read_text("utf-8"))
    except ValueError as exc:
        raise InputError(str(file), f"is not valid JSON: {exc}") from None
    report = import_litellm(data, rate)
    if not report.imported:
        raise InputError(str(file), "has no model priced per token")
    effective_us = at_us if effective is None else parse_instant(effective, "effective")
    version = engine.load_prices(report.catalog, effective_us, at_us, source=file.name)
    out = {"version": version.version, "effective_at": format_instant(effective_us),
           "imported": report.imported,
           "skipped": [{"model": m, "reason": r} for m, r in report.skipped],
           "rounded": [{"model": m, "price": f} for m, f in report.rounded]}
    if as_json:
        _emit(out)
        return
    click.echo(f"price version {version.version} effective {out['effective_at']}: "
               f"imported {report.imported} models, skipped {len(report.skipped)}, "
               f"rounded up {len(report.rounded)} prices to 6 places")
    reasons: dict[str, int] = {}
    for _, reason in report.skipped:
        key = reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        click.echo(f"  skipped {count:5d}: {reason}")


def _json_decimal(text: str) -> Any:
    """JSON with every fractional number read as an exact Decimal (never a float)."""
    return json.loads(text, parse_float=Decimal)


@command(prices, "list", at=True, as_json=True)
def prices_list(engine: Engine, at_us: int, as_json: bool) -> None:
    """Show the price version in effect now (--at), and every version."""
    out = present.prices(engine.price_book(), at_us)
    if as_json:
        _emit(out)
        return
    from creditmeter.tables import prices_table

    prices_table(out)


# -- accounts ------------------------------------------------------------------------------------

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
    if as_json:
        _emit(present.account(account, 0))
    else:
        click.echo(f"account {account.id} ({account.kind.value})")


@command(accounts, "list", as_json=True)
def accounts_list(engine: Engine, as_json: bool) -> None:
    """List accounts."""
    rows = [present.account(a, o) for a, o in engine.accounts()]
    if as_json:
        _emit(rows)
        return
    from creditmeter.tables import simple_table

    simple_table("Accounts", ["id", "name", "kind", "created_at", "overage_credits"], rows)


# -- grants --------------------------------------------------------------------------------------

@main.group()
def grants() -> None:
    """Credit packages."""


@command(grants, "add", at=True, as_json=True)
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
        expires_at_us=_instant(expires, "expires"), effective_at_us=_instant(effective, "effective"),
        priority=priority, name=name, grant_id=grant_id, source="cli")
    if as_json:
        _emit(present.package(package))
    else:
        click.echo(f"grant {package.grant.id}: {format_credits(package.grant.amount_uc)} credits "
                   f"({package.grant.kind.value}) on {account_id}, {package.status.value}")


@command(grants, "list", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
def grants_list(engine: Engine, account_id: str, at_us: int, as_json: bool) -> None:
    """List an account's packages in burn-down order."""
    b = engine.balance(account_id, at_us)
    if as_json:
        _emit([present.package(p) for p in b.packages])
        return
    from creditmeter.tables import packages_table

    packages_table(present.balance(b))


@command(grants, "void", at=True, as_json=True)
@click.argument("grant_id")
def grants_void(engine: Engine, grant_id: str, at_us: int, as_json: bool) -> None:
    """Void (refund) a package: what remains is removed, what was used stays used."""
    package = engine.void_grant(grant_id, at_us)
    if as_json:
        _emit(present.package(package))
    else:
        click.echo(f"grant {grant_id} voided: {format_credits(package.voided_uc)} credits removed")


# -- usage ---------------------------------------------------------------------------------------

@main.group()
def usage() -> None:
    """Usage events: record, import, list, export."""


def _quantities(values: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in values:
        name, sep, number = item.partition("=")
        if not sep or not name:
            raise InputError("quantity", f"{item!r} must look like NAME=N")
        try:
            out[name] = int(number)
        except ValueError:
            raise InputError(f"quantities.{name}", f"{number!r} is not a whole number") from None
    return out


def _usage_options(fn: F) -> F:
    for option in reversed([
        click.option("--model", metavar="M", help="The model id, as priced in the catalog."),
        click.option("--input", "input_tokens", type=int, default=0, help="Input tokens."),
        click.option("--output", "output_tokens", type=int, default=0, help="Output tokens."),
        click.option("--cached-input", "cached_input_tokens", type=int, default=0,
                     help="Cache-read input tokens (not also counted as input)."),
        click.option("--cache-write", "cache_write_tokens", type=int, default=0,
                     help="Cache-write tokens."),
        click.option("--quantity", "quantity", multiple=True, metavar="NAME=N",
                     help="Units of a priced feature (repeatable)."),
    ]):
        fn = option(fn)
    return fn


def _print_charge(result: Charge, as_json: bool) -> None:
    data = present.charge(result)
    if as_json:
        _emit(data)
        return
    parts = ", ".join(f"{a['grant_id']} {a['amount_credits']}" for a in data["allocations"]) or "-"
    line = f"{data['status']} {data['event_id']}: {data['cost_credits']} credits ({parts})"
    if result.overage_uc:
        line += f", overage {data['overage_credits']}"
    click.echo(line)


@command(usage, "record", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@_usage_options
@click.option("--id", "event_id", metavar="ID", help="Idempotency key (default: a new id).")
@click.option("--timestamp", metavar="TIME", help="When the usage happened (default: now / --at).")
def usage_record(engine: Engine, account_id: str, model: str | None, input_tokens: int,
                 output_tokens: int, cached_input_tokens: int, cache_write_tokens: int,
                 quantity: tuple[str, ...], event_id: str | None, timestamp: str | None,
                 at_us: int, as_json: bool) -> None:
    """Charge one usage event."""
    import uuid

    event: dict[str, Any] = {
        "id": event_id if event_id is not None else f"evt_{uuid.uuid4().hex}",
        "account_id": account_id, "model": model, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "cached_input_tokens": cached_input_tokens,
        "cache_write_tokens": cache_write_tokens, "quantities": _quantities(quantity),
    }
    if timestamp is not None:
        event["timestamp"] = timestamp
    _print_charge(engine.record(event, at_us), as_json)


@command(usage, "import", at=True, as_json=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", type=click.IntRange(1, 50_000), default=5_000, show_default=True,
              help="Events per transaction.")
def usage_import(engine: Engine, file: Path, batch_size: int, at_us: int, as_json: bool) -> None:
    """Charge every event of a JSONL file (one event per line); exit 1 if any was rejected."""
    from creditmeter.ingest import import_jsonl
    from creditmeter.tables import progress_bar

    with progress_bar("importing", file.stat().st_size,
                      shown=sys.stderr.isatty() and not as_json) as progress:
        summary = import_jsonl(engine, file, at_us, batch_size=batch_size, progress=progress)
    if as_json:
        _emit(summary.to_dict())
    else:
        _print_summary(summary)
    if summary.rejected:
        sys.exit(1)


def _print_summary(summary: ImportSummary) -> None:
    click.echo(f"{summary.total} events: {summary.charged} charged "
               f"({format_credits(summary.cost_uc)} credits), {summary.duplicate} duplicate, "
               f"{len(summary.rejected)} rejected in {summary.seconds:.2f}s")
    for line, eid, fld, reason in summary.rejected[:20]:
        click.echo(f"  line {line}: {eid + ': ' if eid else ''}{fld + ': ' if fld else ''}{reason}")
    if len(summary.rejected) > 20:
        click.echo(f"  … and {len(summary.rejected) - 20} more (use --json for all)")


def _range(from_: str | None, to: str | None) -> tuple[int | None, int | None]:
    start, end = _instant(from_, "from"), _instant(to, "to")
    if start is not None and end is not None and end <= start:
        raise InputError("to", "must be after --from")
    return start, end


@command(usage, "list", as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.option("--from", "from_", metavar="TIME", help="From this time (inclusive).")
@click.option("--to", metavar="TIME", help="Up to this time (exclusive).")
@click.option("--model", metavar="M", help="Only this model.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many (newest first).")
def usage_list(engine: Engine, account_id: str, from_: str | None, to: str | None,
               model: str | None, limit: int | None, as_json: bool) -> None:
    """An account's usage, newest first, with the packages that paid."""
    start, end = _range(from_, to)
    rows = [present.event(e) for e in engine.usage(account_id, from_us=start, to_us=end,
                                                    model=model, limit=limit)]
    if as_json:
        _emit(rows)
        return
    from creditmeter.tables import usage_table

    usage_table(rows)


@command(usage, "export")
@click.argument("account_id", metavar="ACCOUNT")
@click.option("--csv", "csv_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the CSV ('-' for standard output).")
@click.option("--from", "from_", metavar="TIME")
@click.option("--to", metavar="TIME")
@click.option("--model", metavar="M")
def usage_export(engine: Engine, account_id: str, csv_path: Path, from_: str | None,
                 to: str | None, model: str | None) -> None:
    """Write an account's usage to CSV (full precision), streamed."""
    from creditmeter.ingest import write_csv

    start, end = _range(from_, to)
    stream = engine.usage(account_id, from_us=start, to_us=end, model=model)
    if str(csv_path) == "-":
        write_csv(stream, sys.stdout)
        return
    with csv_path.open("w", newline="", encoding="utf-8") as out:
        count = write_csv(stream, out)
    click.echo(f"wrote {count} events to {csv_path}")


# -- balance -------------------------------------------------------------------------------------

@command(main, "balance", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
def balance(engine: Engine, account_id: str, at_us: int, as_json: bool) -> None:
    """Available, held and overage credits, and every package in burn-down order."""
    data = present.balance(engine.balance(account_id, at_us))
    if as_json:
        _emit(data)
        return
    from creditmeter.tables import packages_table

    packages_table(data)


# -- holds ---------------------------------------------------------------------------------------

@main.group()
def holds() -> None:
    """Holds: credits reserved for requests in flight."""


@command(holds, "reserve", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.argument("amount")
@click.option("--ttl", "ttl_s", type=int, default=None, help="Seconds before it lapses (default 600).")
@click.option("--id", "hold_id", metavar="ID", help="Idempotency key (default: a new id).")
def holds_reserve(engine: Engine, account_id: str, amount: str, ttl_s: int | None,
                  hold_id: str | None, at_us: int, as_json: bool) -> None:
    """Reserve AMOUNT credits; exit 6 if the account cannot cover it."""
    result = engine.reserve(account_id, parse_credits(amount, "amount", allow_zero=False), at_us,
                            ttl_s=ttl_s, hold_id=hold_id)
    if isinstance(result, Refused):
        data = present.refused(result)
        if as_json:
            _emit(data)
        click.echo(f"refused: {result.reason} (available {data['available_credits']}, "
                   f"requested {data['requested_credits']})", err=True)
        sys.exit(EXIT_REFUSED)
    data = present.hold(result)
    if as_json:
        _emit(data)
    else:
        click.echo(f"hold {data['hold_id']}: {data['amount_credits']} credits until {data['expires_at']}")


@command(holds, "settle", at=True, as_json=True)
@click.argument("hold_id")
@_usage_options
@click.option("--id", "event_id", metavar="ID", help="The usage event's id (default: hold:HOLD_ID).")
def holds_settle(engine: Engine, hold_id: str, model: str | None, input_tokens: int,
                 output_tokens: int, cached_input_tokens: int, cache_write_tokens: int,
                 quantity: tuple[str, ...], event_id: str | None, at_us: int, as_json: bool) -> None:
    """Charge the actual usage of a held request; the rest of the hold is released."""
    quantities = tuple(sorted(_quantities(quantity).items()))
    for name, value in quantities:
        if value < 0:
            raise InputError(f"quantities.{name}", "must not be negative")
    result = engine.settle(hold_id, Usage(model, input_tokens, output_tokens, cached_input_tokens,
                                          cache_write_tokens, quantities), at_us, event_id=event_id)
    _print_charge(result, as_json)


@command(holds, "release", at=True, as_json=True)
@click.argument("hold_id")
def holds_release(engine: Engine, hold_id: str, at_us: int, as_json: bool) -> None:
    """Give a hold's credits back."""
    hold = engine.release(hold_id, at_us)
    if as_json:
        _emit(present.hold(hold))
    else:
        click.echo(f"hold {hold.id}: {hold.status.value}")


# -- plans, subscriptions, purchases -------------------------------------------------------------

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
    if as_json:
        _emit(out)
    else:
        click.echo(f"plan catalog version {version}: {len(catalog.plans)} plans")


@command(plans, "list", as_json=True)
def plans_list(engine: Engine, as_json: bool) -> None:
    """The plans (the shipped default until a catalog is loaded)."""
    rows = engine.plans().to_dict()["plans"]
    if as_json:
        _emit(rows)
        return
    from creditmeter.tables import simple_table

    simple_table("Plans", ["id", "kind", "name", "credits", "period", "valid_days", "priority"],
                 [{**r, "period": r.get("period"), "valid_days": r.get("valid_days")} for r in rows])


@main.group()
def subscriptions() -> None:
    """Subscriptions: trial, monthly or yearly plans, enterprise seats."""


def _print_subscription(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit(data)
        return
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
    _print_subscription(present.subscription(sub, at_us), as_json)


@command(subscriptions, "cancel", at=True, as_json=True)
@click.argument("subscription_id", metavar="SUBSCRIPTION_ID")
def subscriptions_cancel(engine: Engine, subscription_id: str, at_us: int, as_json: bool) -> None:
    """Cancel at the end of the current period."""
    sub = engine.cancel_subscription(subscription_id, at_us)
    _print_subscription(present.subscription(sub, at_us), as_json)


@command(subscriptions, "show", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
def subscriptions_show(engine: Engine, account_id: str, at_us: int, as_json: bool) -> None:
    """An account's subscriptions (the trial included), oldest first."""
    rows = [present.subscription(sub, at_us) for sub in engine.subscriptions(account_id)]
    if as_json:
        _emit(rows)
        return
    if not rows:
        click.echo(f"{account_id} has no subscription")
    for row in rows:
        _print_subscription(row, False)


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
    if as_json:
        _emit(present.package(package))
    else:
        click.echo(f"grant {package.grant.id}: {format_credits(package.grant.amount_uc)} credits "
                   f"({package.grant.name}) on {account_id}, "
                   f"expires {format_instant(package.grant.expires_at_us)}")


# -- enterprises ---------------------------------------------------------------------------------

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
    if as_json:
        _emit(present.member(member))
    else:
        click.echo(f"{account_id} is {member.role.value} of {enterprise_id}")


@command(enterprise, "remove-member", at=True)
@click.argument("enterprise_id", metavar="ENTERPRISE")
@click.argument("account_id", metavar="USER")
def enterprise_remove_member(engine: Engine, enterprise_id: str, account_id: str, at_us: int) -> None:
    """Remove USER from ENTERPRISE (quota already added stays until revoked or expired)."""
    engine.remove_member(enterprise_id, account_id, at_us)
    click.echo(f"{account_id} is no longer a member of {enterprise_id}")


@command(enterprise, "allocate", at=True, as_json=True)
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
                              at_us, expires_at_us=_instant(expires, "expires"), allocation_id=allocation_id)
    if as_json:
        _emit(present.package(package))
    else:
        click.echo(f"allocation {package.grant.id}: {format_credits(package.grant.amount_uc)} credits to "
                   f"{account_id} until {format_instant(package.grant.expires_at_us) or 'never'}")


@command(enterprise, "revoke", at=True, as_json=True)
@click.argument("allocation_id", metavar="GRANT_ID")
def enterprise_revoke(engine: Engine, allocation_id: str, at_us: int, as_json: bool) -> None:
    """Revoke quota: what the member has not used goes back to the pool."""
    allocation = engine.revoke_allocation(allocation_id, at_us)
    if as_json:
        _emit(present.allocation(allocation))
    else:
        click.echo(f"allocation {allocation.id} revoked: {format_credits(allocation.returned_uc)} credits "
                   f"back to {allocation.enterprise_id}'s pool")


@command(enterprise, "show", at=True, as_json=True)
@click.argument("enterprise_id", metavar="ENTERPRISE")
def enterprise_show(engine: Engine, enterprise_id: str, at_us: int, as_json: bool) -> None:
    """The pool, the members and each member's quota, used and remaining."""
    data = present.enterprise(engine.enterprise(enterprise_id, at_us))
    if as_json:
        _emit(data)
        return
    from creditmeter.tables import packages_table, simple_table

    packages_table(data["pool"])
    simple_table(f"{enterprise_id}: members", ["account_id", "role", "quota_credits", "used_credits",
                                               "remaining_credits", "returned_credits"], data["members"])


# -- keys ----------------------------------------------------------------------------------------

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
    if as_json:
        _emit({**present.key(key), "key": secret})
    else:
        click.echo(f"{key.role.value} key {key.id}{' for ' + account_id if account_id else ''} "
                   "(shown once; store it now):", err=True)
        click.echo(secret)


@command(keys, "list", as_json=True)
@click.argument("account_id", metavar="ACCOUNT", required=False)
def keys_list(engine: Engine, account_id: str | None, as_json: bool) -> None:
    """List keys (every key, or ACCOUNT's) without the keys themselves."""
    rows = [present.key(k) for k in engine.keys(account_id)]
    if as_json:
        _emit(rows)
        return
    from creditmeter.tables import simple_table

    simple_table("Keys", ["key_id", "prefix", "role", "account_id", "name", "created_at", "revoked_at"], rows)


@command(keys, "revoke", at=True, as_json=True)
@click.argument("key_id")
def keys_revoke(engine: Engine, key_id: str, at_us: int, as_json: bool) -> None:
    """Revoke a key: it stops working at once."""
    key = engine.revoke_key(key_id, at_us)
    if as_json:
        _emit(present.key(key))
    else:
        click.echo(f"key {key.id} revoked at {format_instant(key.revoked_at_us)}")


# -- serve ---------------------------------------------------------------------------------------

@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes (SQLite allows one writer at a time; use PostgreSQL for many).")
@click.option("--db", "url", metavar="URL", help=f"Database URL (env CREDITMETER_DB, default {DEFAULT_DB}).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="Log every request (metrics are kept either way).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="CREDITMETER_CONFIG",
              help="A YAML file of server, engine and gateway settings (env CREDITMETER_CONFIG; "
                   "see docs/deployment.md, docs/gateway.md).")
def serve(host: str, port: int, workers: int, url: str | None, access_log: bool,
          config_path: Path | None) -> None:
    """Run the HTTP API (operator key from CREDITMETER_ADMIN_KEY or 'keys create --operator')."""
    import shutil
    import tempfile

    import uvicorn

    from creditmeter import serverconfig

    try:
        config = serverconfig.load(config_path, os.environ)
        url = url or config.server.database or DEFAULT_DB
        os.environ.update(serverconfig.to_environ(config))
        settings_from_env()
        check_admin_key(os.environ.get("CREDITMETER_ADMIN_KEY"))
        if config.gateway.models:
            from creditmeter.gateway import Gateway

            Gateway(config.gateway, os.environ)  # every upstream key is there
        engine = open_engine(url)
        try:
            engine.ping()  # the schema is there (SQLite gets it now) and the database answers
        finally:
            engine.close()
    except CreditmeterError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    os.environ["CREDITMETER_DB"] = url
    if config_path is not None:
        os.environ["CREDITMETER_CONFIG"] = str(config_path.resolve())
    else:
        os.environ.pop("CREDITMETER_CONFIG", None)
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its samples here; /metrics adds them up.
        metrics_dir = tempfile.mkdtemp(prefix="creditmeter-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    click.echo(f"creditmeter API on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}, "
               f"{url.split('://', 1)[0]})", err=True)
    try:
        uvicorn.run("creditmeter.api:app_from_env", factory=True, host=host, port=port, workers=workers,
                    access_log=access_log, log_level="info", server_header=False)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


# -- maintenance ---------------------------------------------------------------------------------

@command(main, "tick", at=True, as_json=True)
def tick(engine: Engine, at_us: int, as_json: bool) -> None:
    """Time out holds, record expiries, pay overage from new credits (run it periodically)."""
    report = engine.tick(at_us)
    data = present.tick(report, at_us)
    if as_json:
        _emit(data)
    else:
        click.echo(f"tick at {data['at']}: {report.renewed} subscriptions renewed, {report.accounts} "
                   f"accounts, {report.holds_expired} holds timed out, {report.entries} ledger entries")


@command(main, "reconcile", as_json=True)
def reconcile(engine: Engine, as_json: bool) -> None:
    """Re-derive every figure from the ledger and check every invariant; exit 1 on a violation."""
    problems = engine.check_invariants()
    if as_json:
        _emit({"ok": not problems, "violations": problems})
    elif problems:
        for line in problems:
            click.echo(f"violation: {line}")
    else:
        click.echo("reconcile: every invariant holds")
    if problems:
        sys.exit(1)


@main.command("demo")
@click.option("--db", "url", metavar="URL", default="sqlite:///creditmeter-demo.db", show_default=True,
              help="Where to create the demo database (an existing demo database is replaced).")
@click.option("--days", type=click.IntRange(1, 60), default=30, show_default=True,
              help="Days of usage to simulate.")
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Then run the server (console and gateway with the demo upstream) until Ctrl-C.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def demo(url: str, days: int, serve: bool, host: str, port: int) -> None:
    """Build a demo database (a user, packages, a team, a month of usage) and serve it."""
    from creditmeter.demo import USER, run_demo

    try:
        now = now_us()
        engine, requests = run_demo(url, days, now)
        show_demo(engine, url, now, requests)
        _, key = engine.create_key(USER, now, name="demo key")
    except CreditmeterError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    if not serve:
        click.echo(f"\n{USER}'s key for the API, gateway and console (shown once): {key}")
        return
    _serve_demo(engine, host, port, key)


def _serve_demo(engine: Engine, host: str, port: int, key: str) -> None:
    import socket

    import uvicorn

    from creditmeter.api.app import create_app
    from creditmeter.demo import GATEWAY_MODELS
    from creditmeter.gateway import Gateway
    from creditmeter.serverconfig import DEMO_UPSTREAM, GatewaySection, UpstreamModel

    with socket.socket() as probe:  # say so plainly rather than with a server's traceback
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            click.echo(f"error: port: {host}:{port} is not free ({exc.strerror}); "
                       "choose another with --port", err=True)
            sys.exit(2)
    models = {model: UpstreamModel(base_url=DEMO_UPSTREAM) for model in GATEWAY_MODELS}
    gateway = Gateway(GatewaySection(models=models), os.environ)
    app = create_app(engine, admin_key=None, gateway=gateway, tick_interval_s=60)
    shown = host if ":" not in host else f"[{host}]"
    click.echo(serve_instructions(f"http://{shown}:{port}", key))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)


def show_demo(engine: Engine, url: str, at_us: int, requests: int) -> None:
    """What the demo database holds, and commands to try on it."""
    from creditmeter.demo import TEAM, TEAMMATE, USER
    from creditmeter.tables import console, packages_table, usage_table

    screen = console()
    screen.rule("[bold]creditmeter demo[/bold] — example prices, not a vendor's")
    screen.print(f"{requests} requests by {USER} and {TEAMMATE} over the last days, replayed at their "
                 f"own times. {USER} also administers the enterprise {TEAM}, which gave quota to both.")
    packages_table(present.balance(engine.balance(USER, at_us)))
    recent = [present.event(e) for e in engine.usage(USER, limit=12)]
    usage_table(recent, title="Recent usage (newest first)")
    problems = engine.check_invariants()
    screen.print("reconcile: every invariant holds" if not problems else f"reconcile: {problems}")
    click.echo(f"\nThe demo database is {url}. Try:\n"
               f"  creditmeter balance {USER} --db {url}\n"
               f"  creditmeter usage list {USER} --db {url} --limit 20\n"
               f"  creditmeter usage record {USER} --model demo-large --input 12000 --output 900 --db {url}\n"
               f"  creditmeter reconcile --db {url}\n"
               f"(now is {format_instant(at_us)})")


def serve_instructions(base_url: str, key: str) -> str:
    """What the demo prints once its server is starting: where to look and how to call it."""
    from creditmeter.demo import GATEWAY_MODELS, TEAM, USER

    models = ", ".join(GATEWAY_MODELS)
    return f"""
The demo server is starting on {base_url} (Ctrl-C stops it).

  console   {base_url}/console      sign in with the demo key
  demo key  {key}
            ({USER}'s key, shown once; it also administers {TEAM})
  gateway   {base_url}/v1           models {models}, answered offline by the
            built-in demo upstream (generated text, not a model; true token counts)

Call the gateway with the openai client (pip install openai):

python3 - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{base_url}/v1", api_key="{key}")
reply = client.chat.completions.with_raw_response.create(
    model="demo-small", messages=[{{"role": "user", "content": "Hello, what does this cost?"}}])
print(reply.parse().choices[0].message.content)
print("credits charged:", reply.headers["x-credits-charged"],
      "remaining:", reply.headers["x-credits-remaining"])
EOF

or with curl:

curl -i {base_url}/v1/chat/completions -H "Authorization: Bearer {key}" \\
  -H "Content-Type: application/json" \\
  -d '{{"model": "demo-large", "messages": [{{"role": "user", "content": "Hello"}}]}}'
"""


if __name__ == "__main__":  # pragma: no cover
    main()
