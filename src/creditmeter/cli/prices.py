"""``creditmeter prices``: load a price catalog, import a LiteLLM price map, show the prices."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from creditmeter import present
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import prices_table
from creditmeter.engine import Engine
from creditmeter.errors import InputError
from creditmeter.money import to_decimal
from creditmeter.pricing import ImportReport, import_litellm, load_yaml, parse_catalog
from creditmeter.timeutil import format_instant, parse_instant

EFFECTIVE_HELP = ("When the new prices take effect (default: the first catalog ever loaded from the start "
                  "of time, so earlier usage can be priced; every later one from now).")


@main.group()
def prices() -> None:
    """The price catalog (credits per 1M tokens, features per unit)."""


@command(prices, "load", at=True, as_json=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--effective", metavar="TIME", help=EFFECTIVE_HELP)
def prices_load(engine: Engine, file: Path, effective: str | None, at_us: int, as_json: bool) -> None:
    """Load a catalog YAML file as a new price version."""
    catalog = parse_catalog(load_yaml(_read_text(file), str(file)), str(file))
    effective_us = None if effective is None else parse_instant(effective, "effective")
    version = engine.load_prices(catalog, effective_us, at_us, source=file.name)
    out = {"version": version.version, "effective_at": format_instant(version.effective_at_us),
           "models": len(catalog.models), "features": len(catalog.features)}
    emit(out, as_json, lambda o: click.echo(f"price version {o['version']} effective {o['effective_at']}: "
                                            f"{o['models']} models, {o['features']} features"))


@command(prices, "import-litellm", at=True, as_json=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--credits-per-usd", "rate_text", required=True, metavar="N",
              help="How many credits one US dollar buys.")
@click.option("--effective", metavar="TIME", help=EFFECTIVE_HELP)
def prices_import_litellm(engine: Engine, file: Path, rate_text: str, effective: str | None,
                          at_us: int, as_json: bool) -> None:
    """Import a LiteLLM-style price map (USD per token) as a new price version.

    Prints how many models were imported, which entries were skipped and why, which prices were
    rounded up, and which price fields (audio, images, batches …) were not converted.
    """
    rate = to_decimal(rate_text, "credits-per-usd")
    if rate <= 0:
        raise InputError("credits-per-usd", "must be greater than zero")
    try:
        data = _json_decimal(_read_text(file))
    except ValueError as exc:
        raise InputError(str(file), f"is not valid JSON: {exc}") from None
    report = import_litellm(data, rate)
    if not report.imported:
        raise InputError(str(file), "has no model priced per token")
    effective_us = None if effective is None else parse_instant(effective, "effective")
    version = engine.load_prices(report.catalog, effective_us, at_us, source=file.name)
    out = {"version": version.version, "effective_at": format_instant(version.effective_at_us),
           "imported": report.imported,
           "skipped": [{"model": m, "reason": r} for m, r in report.skipped],
           "rounded": [{"model": m, "price": f} for m, f in report.rounded],
           "unconverted": [{"model": m, "fields": list(fields)} for m, fields in report.unconverted]}
    emit(out, as_json, lambda o: _print_import(report, o))


def _print_import(report: ImportReport, out: dict[str, Any]) -> None:
    click.echo(f"price version {out['version']} effective {out['effective_at']}: "
               f"imported {report.imported} models, skipped {len(report.skipped)}, "
               f"rounded up {len(report.rounded)} prices to 6 places, "
               f"{len(report.unconverted)} models with prices not converted")
    reasons = Counter(reason.split(" (")[0] for _, reason in report.skipped)
    for reason, count in reasons.most_common():
        click.echo(f"  skipped {count:5d}: {reason}")
    fields = Counter(field for _, names in report.unconverted for field in names)
    for field, count in fields.most_common():
        click.echo(f"  not converted in {count:5d} models: {field}")


def _read_text(file: Path) -> str:
    """A UTF-8 file's text; a byte order mark at its start is not part of it."""
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(str(file), f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _json_decimal(text: str) -> Any:
    """JSON with every fractional number read as an exact Decimal (never a float)."""
    return json.loads(text, parse_float=Decimal)


@command(prices, "list", at=True, as_json=True)
def prices_list(engine: Engine, at_us: int, as_json: bool) -> None:
    """Show the price version in effect now (--at), and every version."""
    emit(present.prices(engine.price_book(), at_us), as_json, prices_table)
