"""What people see on a terminal (rich): tables of balances, usage and prices, and a progress bar.

Ids and amounts are what people copy into the next command, so they are never cut, folded or
rounded: each stays whole on one line, and amounts are exact (the same text as the API's). When
the terminal is too narrow, names wrap or shorten, then the least useful columns go; if the ids
and amounts alone are wider than the terminal, the table is drawn wider than it rather than cut.
rich is imported when something is first drawn, so commands that print JSON or one line start
without it.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from creditmeter.events import STANDARD_TIER
from creditmeter.money import format_credits, parse_credits

if TYPE_CHECKING:
    from rich.console import Console

TEXT_MIN_WIDTH = 10  # a wrapping column (a name) is given at least this many characters


def console(width: int | None = None) -> Console:
    """The terminal (standard output), read afresh: its width is the terminal's or COLUMNS."""
    return _console_class()(width=width)


@functools.cache
def _console_class() -> type[Console]:
    from rich.console import Console

    class Terminal(Console):
        def on_broken_pipe(self) -> None:
            # rich would exit 1 without a word; the command's entry says it like any OS error.
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    return Terminal


@dataclass(frozen=True)
class Column:
    """A table column. ``whole``: ids, amounts and times, never cut nor wrapped (a cell may hold
    several lines of them); else free text that may wrap or shorten. ``drop``: when the terminal
    is too narrow, columns with a higher ``drop`` go first (0: always shown)."""

    header: str
    whole: bool = True
    right: bool = False
    drop: int = 0


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _width(column: Column, cells: Sequence[str]) -> int:
    from rich.cells import cell_len

    widest = max((cell_len(line) for cell in cells for line in cell.splitlines()), default=0)
    if column.whole:
        return max(widest, cell_len(column.header))
    return min(max(widest, cell_len(column.header)), TEXT_MIN_WIDTH)


def _needed(widths: Sequence[int]) -> int:
    """A table's width with rich's default box: a border per column and one, a space each side."""
    return sum(widths) + 3 * len(widths) + 1


def show_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[object]]) -> None:
    """Print a table; a None cell is empty."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    cells = [[_text(v) for v in row] for row in rows]
    keep = list(range(len(columns)))
    widths = [_width(c, [row[i] for row in cells]) for i, c in enumerate(columns)]
    available = console().width
    while _needed([widths[i] for i in keep]) > available and any(columns[i].drop for i in keep):
        keep.remove(max(keep, key=lambda i: columns[i].drop))
    table = Table(title=escape(title))
    for i in keep:
        column = columns[i]
        if column.whole:
            table.add_column(column.header, no_wrap=True, overflow="ignore", min_width=widths[i],
                             justify="right" if column.right else "left")
        else:
            table.add_column(column.header, overflow="fold")
    for row in cells:
        table.add_row(*(Text(row[i]) for i in keep))  # as given: an id may hold "[...]"
    needed = _needed([widths[i] for i in keep])
    console(needed if needed > available else None).print(table)


def _sum_credits(*amounts: str) -> str:
    return format_credits(sum(parse_credits(a, "credits", allow_negative=True) for a in amounts))


PLAN_COLUMNS = (Column("id"), Column("kind", drop=2), Column("name", whole=False),
                Column("credits", right=True), Column("period"), Column("valid days", right=True),
                Column("priority", right=True, drop=1))


def plans_table(rows: list[dict[str, Any]]) -> None:
    """The plans; what some add to their credits (allowances, rollover, limits, the policy when
    credits run out) in a column of its own, a line each."""
    extras = ["\n".join(_plan_extras(r)) for r in rows]
    columns = PLAN_COLUMNS + ((Column("also"),) if any(extras) else ())
    show_table("Plans", columns, [[r["id"], r["kind"], r["name"], r["credits"], r.get("period"),
                                   r.get("valid_days"), r["priority"], extra][:len(columns)]
                                  for r, extra in zip(rows, extras, strict=True)])


def _plan_extras(plan: dict[str, Any]) -> list[str]:
    lines = [f"{a['credits']} every {a['every']} ({a['id']}"
             + (f", {a['calendar']})" if "calendar" in a else ")") for a in plan.get("allowances", ())]
    if "rollover" in plan:
        caps = [f"{plan['rollover']['max_percent']}%"] if "max_percent" in plan["rollover"] else []
        caps += [f"{plan['rollover']['max_credits']} credits"] if "max_credits" in plan["rollover"] else []
        lasts = plan["rollover"]["lasts"]
        lines.append(f"rollover: at most {' and '.join(caps)}, for {lasts} period{'s' * (lasts > 1)}")
    lines += [f"limit: {r['credits']} credits, {r['window']}"
              + (f" ({r['calendar']})" if "calendar" in r else "") for r in plan.get("limits", ())]
    policy = plan.get("when_out_of_credits")
    if isinstance(policy, dict):
        lines.append(f"out of credits: overage up to {policy['overage']}" if "overage" in policy
                     else f"out of credits: falls back to {policy['fallback']}"
                     + (f", {policy['daily_cap']} a day" if "daily_cap" in policy else ""))
    return lines


def accounts_table(rows: list[dict[str, Any]]) -> None:
    show_table("Accounts", (Column("id"), Column("name", whole=False, drop=1), Column("kind"),
                            Column("created", drop=2), Column("overage", right=True)),
               [[r["id"], r["name"], r["kind"], r["created_at"], r["overage_credits"]] for r in rows])


def keys_table(rows: list[dict[str, Any]]) -> None:
    show_table("Keys", (Column("key_id"), Column("prefix", drop=3), Column("role"), Column("account"),
                        Column("name", whole=False, drop=1), Column("created", drop=4),
                        Column("revoked", drop=2)),
               [[r["key_id"], r["prefix"], r["role"], r["account_id"], r["name"], r["created_at"],
                 r["revoked_at"]] for r in rows])


def members_table(enterprise_id: str, rows: list[dict[str, Any]]) -> None:
    show_table(f"{enterprise_id}: members",
               (Column("account"), Column("role"), Column("quota", right=True),
                Column("used", right=True), Column("held", right=True, drop=2),
                Column("remaining", right=True), Column("expired", right=True, drop=1),
                Column("returned", right=True, drop=3)),
               [[r["account_id"], r["role"], r["quota_credits"], r["used_credits"], r["held_credits"],
                 r["remaining_credits"], r["expired_credits"], r["returned_credits"]] for r in rows])


def allocations_table(enterprise_id: str, rows: list[dict[str, Any]]) -> None:
    show_table(f"{enterprise_id}: allocations",
               (Column("allocation"), Column("member"), Column("credits", right=True),
                Column("returned", right=True), Column("created", drop=2), Column("revoked", drop=1)),
               [[r["allocation_id"], r["account_id"], r["amount_credits"], r["returned_credits"],
                 r["created_at"], r["revoked_at"]] for r in rows])


PACKAGE_COLUMNS = (Column("#", right=True, drop=5), Column("id"), Column("name", whole=False, drop=4),
                   Column("kind", drop=3), Column("granted", right=True), Column("used", right=True),
                   Column("held", right=True, drop=1), Column("remaining", right=True),
                   Column("expired/voided", right=True, drop=2), Column("expires"), Column("status"))


def packages_table(balance: dict[str, Any], used: str = "used") -> None:
    """An account's packages; ``used`` names the column of what went out of each (an enterprise
    pool's packages give theirs to members: ``allocated``)."""
    columns = tuple(Column(used, right=True) if c.header == "used" else c for c in PACKAGE_COLUMNS)
    show_table(f"{balance['account_id']} at {balance['at']} — packages in burn-down order",
               columns,
               [[number, p["grant_id"], p["name"], p["kind"], p["granted_credits"], p["used_credits"],
                 p["held_credits"], p["remaining_credits"],
                 _sum_credits(p["expired_credits"], p["voided_credits"]),
                 (p["expires_at"] or "never")[:16].replace("T", " "), p["status"]]
                for number, p in enumerate(balance["packages"], start=1)])
    line = (f"available [bold]{balance['available_credits']}[/bold] credits, "
            f"held {balance['held_credits']}")
    if parse_credits(balance["overage_credits"], "overage_credits"):
        line += f", [red]overage {balance['overage_credits']}[/red] (a debt; paid by the next credits)"
    console().print(line, highlight=False)


def balance_table(balance: dict[str, Any]) -> None:
    """An account's packages, then its recurring allowances, its limits and what its requests
    meet once its credits run out."""
    packages_table(balance)
    if balance["allowances"]:
        allowances_table(balance["allowances"])
    if balance["limits"]:
        limits_table(balance["account_id"], balance["limits"])
    description = balance["when_out_of_credits"]["description"]
    console().print(f"{description[:1].upper()}{description[1:]}.", highlight=False)


def _instant(text: str | None) -> str:
    """An instant for a table: exact (a rolling window resets at any microsecond), in UTC,
    without the seconds when they are zero."""
    if text is None:
        return ""
    shown = text.removesuffix("Z").replace("T", " ")
    return shown.removesuffix(":00") if len(shown) == 19 else shown


ALLOWANCE_COLUMNS = (Column("id"), Column("name", whole=False, drop=2), Column("every", drop=1),
                     Column("period (UTC)"), Column("used / granted", right=True),
                     Column("held", right=True, drop=3), Column("remaining", right=True))


def allowances_table(rows: list[dict[str, Any]]) -> None:
    """Each recurring allowance with its running period and that period's package."""
    show_table("Recurring allowances", ALLOWANCE_COLUMNS,
               [[r["id"], r["name"], r["every"] + (f" ({r['calendar']})" if r["calendar"] else ""),
                 f"{_instant(r['period_start'])} → {_instant(r['resets_at'])}",
                 f"{r['used_credits']} / {r['granted_credits']}", r["held_credits"],
                 r["remaining_credits"]] for r in rows])


LIMIT_COLUMNS = (Column("id"), Column("scope"), Column("window", drop=2),
                 Column("used / limit", right=True), Column("held", right=True, drop=3),
                 Column("remaining", right=True), Column("resets at (UTC)", drop=1),
                 Column("description", whole=False, drop=4))


def _scope(row: dict[str, Any]) -> str:
    if row["scope"] == "key":
        return f"key {row['key_id']}"
    if row["scope"] == "member":
        return f"member of {row['enterprise_id']}"
    return str(row["scope"])


def _window(row: dict[str, Any]) -> str:
    calendar = row["calendar"]
    if calendar == "UTC" or row["window"] == "total" or row["window"].startswith("rolling"):
        return str(row["window"])
    return f"{row['window']} ({calendar})"


def limits_table(account_id: str, rows: list[dict[str, Any]]) -> None:
    """Limits with what counts against them now, and when the window resets (a rolling window:
    when its oldest usage stops counting)."""
    show_table(f"{account_id}: limits", LIMIT_COLUMNS,
               [[r["id"], _scope(r), _window(r),
                 f"{r['used_credits']} / {r['limit_credits']}", r["held_credits"], r["remaining_credits"],
                 _instant(r["resets_at"]) or "-", r["description"]] for r in rows])


USAGE_COLUMNS = (Column("time"), Column("model"), Column("in", right=True, drop=3),
                 Column("out", right=True, drop=2), Column("reasoning", right=True, drop=4),
                 Column("cached", right=True, drop=1), Column("credits", right=True),
                 Column("paid by"))


def usage_table(rows: list[dict[str, Any]], title: str = "Usage, newest first") -> None:
    table_rows = []
    for row in rows:
        paid = [f"{a['grant_id']} {a['amount_credits']}" for a in row["allocations"]]
        if parse_credits(row["overage_credits"], "overage_credits"):
            paid.append(f"overage {row['overage_credits']}")
        model = row["model"] or "-"
        if row["service_tier"] != STANDARD_TIER:
            model += f" ({row['service_tier']})"
        table_rows.append([row["timestamp"][:19].replace("T", " "), model,
                           f"{row['input_tokens']:,}", f"{row['output_tokens']:,}",
                           f"{row['reasoning_tokens']:,}", f"{row['cached_input_tokens']:,}",
                           row["cost_credits"], "\n".join(paid)])
    show_table(title, USAGE_COLUMNS, table_rows)


def prices_table(data: dict[str, Any]) -> None:
    catalog = data["catalog"]
    if catalog is None:
        console().print(f"no price catalog is effective at {data['at']}")
        return
    show_table(f"Prices in effect at {data['at']} (version {data['current_version']}), "
               "credits per 1M tokens",
               (Column("model"), Column("input", right=True), Column("output", right=True),
                Column("cached input", right=True, drop=2), Column("cache write", right=True, drop=1),
                Column("per request", right=True, drop=3)),
               [[name, p["input"], p["output"], p["cached_input"], p["cache_write"], p["request"]]
                for name, p in catalog["models"].items()])
    if catalog["features"]:
        show_table("Features, credits per unit", (Column("feature"), Column("credits", right=True)),
                   list(catalog["features"].items()))
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
