"""What people see on a terminal (rich): tables of balances, usage and prices, and a progress bar.

rich is imported when something is first drawn, so commands that print JSON or one line start
without it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@functools.cache
def console() -> Console:
    from rich.console import Console

    return Console()


def _table(title: str) -> Table:
    from rich.table import Table

    return Table(title=title)


def human(credits: str | Decimal) -> str:
    """Credits rounded for people (full precision is in --json and CSV)."""
    value = Decimal(credits)
    if value == value.to_integral_value():
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:,.2f}"


def simple_table(title: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    table = _table(title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    console().print(table)


def packages_table(balance: dict[str, Any], used: str = "used") -> None:
    """An account's packages; ``used`` names the column of what went out of each (an enterprise
    pool's packages give theirs to members: ``allocated``)."""
    table = _table(f"{balance['account_id']} at {balance['at']} — packages in burn-down order")
    for column in ("#", "package", "kind", "granted", used, "held", "remaining", "expired",
                   "expires", "status"):
        table.add_column(column, justify="right" if column in
                         ("#", "granted", used, "held", "remaining", "expired") else "left")
    for number, p in enumerate(balance["packages"], start=1):
        table.add_row(str(number), p["name"], p["kind"], human(p["granted_credits"]),
                      human(p["used_credits"]), human(p["held_credits"]),
                      human(p["remaining_credits"]),
                      human(Decimal(p["expired_credits"]) + Decimal(p["voided_credits"])),
                      (p["expires_at"] or "never")[:16].replace("T", " "), p["status"])
    console().print(table)
    line = (f"available [bold]{human(balance['available_credits'])}[/bold] credits, "
            f"held {human(balance['held_credits'])}")
    if Decimal(balance["overage_credits"]):
        line += f", [red]overage {human(balance['overage_credits'])}[/red] (a debt; paid by the next credits)"
    console().print(line)


def usage_table(rows: list[dict[str, Any]], title: str = "Usage, newest first") -> None:
    table = _table(title)
    for column in ("time", "model", "in", "out", "cached", "credits", "paid by"):
        table.add_column(column, justify="right" if column in ("in", "out", "cached", "credits") else "left")
    for row in rows:
        paid = ", ".join(f"{a['grant_id']} {human(a['amount_credits'])}" for a in row["allocations"])
        if Decimal(row["overage_credits"]):
            paid += f" + overage {human(row['overage_credits'])}"
        table.add_row(row["timestamp"][:19].replace("T", " "), row["model"] or "-",
                      f"{row['input_tokens']:,}", f"{row['output_tokens']:,}",
                      f"{row['cached_input_tokens']:,}", human(row["cost_credits"]), paid)
    console().print(table)


def prices_table(data: dict[str, Any]) -> None:
    catalog = data["catalog"]
    if catalog is None:
        console().print(f"no price catalog is effective at {data['at']}")
        return
    table = _table(f"Prices in effect at {data['at']} (version {data['current_version']}), "
                   "credits per 1M tokens")
    for column in ("model", "input", "output", "cached input", "cache write", "per request"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, p in catalog["models"].items():
        table.add_row(name, p["input"], p["output"], p["cached_input"], p["cache_write"], p["request"])
    console().print(table)
    if catalog["features"]:
        features = _table("Features, credits per unit")
        features.add_column("feature")
        features.add_column("credits", justify="right")
        for name, price in catalog["features"].items():
            features.add_row(name, price)
        console().print(features)
    console().print(f"{len(data['versions'])} price version(s) in all")


@contextmanager
def progress_bar(label: str, total: int, *, shown: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar (when ``shown``) that vanishes when done; yields "set the amount done"."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeRemainingColumn(), transient=True, disable=not shown)
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)
