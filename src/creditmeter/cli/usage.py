"""``creditmeter usage``: record one event, import a JSONL file, list and export an account's usage.

The token and feature options, and how a charge is printed, are shared with ``holds settle``.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import click

from creditmeter import present
from creditmeter.cli.common import F, command, instant, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import progress_bar, usage_table
from creditmeter.domain import Charge
from creditmeter.engine import Engine
from creditmeter.errors import InputError
from creditmeter.ingest import ImportSummary, import_jsonl, write_csv
from creditmeter.money import format_credits


@main.group()
def usage() -> None:
    """Usage events: record, import, list, export."""


def parse_quantities(values: tuple[str, ...]) -> dict[str, int]:
    """``--quantity NAME=N`` options as {NAME: N}."""
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


def usage_options(fn: F) -> F:
    """The options that describe what a request used: model, tokens, feature units."""
    for option in reversed([
        click.option("--model", metavar="M", help="The model id, as priced in the catalog."),
        click.option("--input", "input_tokens", type=int, default=0, help="Input tokens."),
        click.option("--output", "output_tokens", type=int, default=0, help="Output tokens."),
        click.option("--cached-input", "cached_input_tokens", type=int, default=0,
                     help="Cache-read input tokens (not also counted as input)."),
        click.option("--cache-write", "cache_write_tokens", type=int, default=0,
                     help="Cache-write tokens."),
        click.option("--reasoning", "reasoning_tokens", type=int, default=0,
                     help="Reasoning tokens (not also counted as output)."),
        click.option("--cache-write-1h", "cache_write_1h_tokens", type=int, default=0,
                     help="Cache-write tokens kept for an hour (not also counted in --cache-write)."),
        click.option("--service-tier", metavar="TIER",
                     help="The tier the request ran on: priority, flex or standard (the default)."),
        click.option("--quantity", "quantity", multiple=True, metavar="NAME=N",
                     help="Units of a priced feature (repeatable)."),
    ]):
        fn = option(fn)
    return fn


def print_charge(result: Charge, as_json: bool) -> None:
    emit(present.charge(result), as_json, lambda data: click.echo(_charge_line(result, data)))


def _charge_line(result: Charge, data: dict[str, Any]) -> str:
    parts = ", ".join(f"{a['grant_id']} {a['amount_credits']}" for a in data["allocations"]) or "-"
    line = f"{data['status']} {data['event_id']}: {data['cost_credits']} credits ({parts})"
    if result.overage_uc:
        line += f", overage {data['overage_credits']}"
    return line


@command(usage, "record", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@usage_options
@click.option("--id", "event_id", metavar="ID", help="Idempotency key (default: a new id).")
@click.option("--timestamp", metavar="TIME", help="When the usage happened (default: now / --at).")
def usage_record(engine: Engine, account_id: str, model: str | None, input_tokens: int,
                 output_tokens: int, cached_input_tokens: int, cache_write_tokens: int,
                 reasoning_tokens: int, cache_write_1h_tokens: int, service_tier: str | None,
                 quantity: tuple[str, ...], event_id: str | None, timestamp: str | None,
                 at_us: int, as_json: bool) -> None:
    """Charge one usage event."""
    event: dict[str, Any] = {
        "id": event_id if event_id is not None else f"evt_{uuid.uuid4().hex}",
        "account_id": account_id, "model": model, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "cached_input_tokens": cached_input_tokens,
        "cache_write_tokens": cache_write_tokens, "reasoning_tokens": reasoning_tokens,
        "cache_write_1h_tokens": cache_write_1h_tokens, "service_tier": service_tier,
        "quantities": parse_quantities(quantity),
    }
    if timestamp is not None:
        event["timestamp"] = timestamp
    print_charge(engine.record(event, at_us), as_json)


@command(usage, "import", at=True, as_json=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", type=click.IntRange(1, 50_000), default=5_000, show_default=True,
              help="Events per transaction.")
def usage_import(engine: Engine, file: Path, batch_size: int, at_us: int, as_json: bool) -> None:
    """Charge every event of a JSONL file (one event per line); exit 1 if any was rejected."""
    with progress_bar("importing", file.stat().st_size,
                      shown=sys.stderr.isatty() and not as_json) as progress:
        summary = import_jsonl(engine, file, at_us, batch_size=batch_size, progress=progress)
    emit(summary.to_dict(), as_json, lambda _: _print_summary(summary))
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
    start, end = instant(from_, "from"), instant(to, "to")
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
    emit(rows, as_json, usage_table)


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
    start, end = _range(from_, to)
    stream = engine.usage(account_id, from_us=start, to_us=end, model=model)
    if str(csv_path) == "-":
        write_csv(stream, sys.stdout)
        return
    with csv_path.open("w", newline="", encoding="utf-8") as out:
        count = write_csv(stream, out)
    click.echo(f"wrote {count} events to {csv_path}")
