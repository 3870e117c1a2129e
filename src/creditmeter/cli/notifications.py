"""``creditmeter notifications``: an account's notices in plain words, and marking them read.

The command line reads as the operator (the reader ``operator``, the same as the operator key from
the environment): its marks are the operator's own and never mark anything for the account's people.
"""

from __future__ import annotations

from typing import Any

import click

from creditmeter import present
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import Column, show_table
from creditmeter.engine import Engine
from creditmeter.errors import InputError
from creditmeter.notices import MAX_PAGE, OPERATOR_READER


@main.group()
def notifications() -> None:
    """Notifications: an account's alerts in plain words, marked read per reader."""


@command(notifications, "list", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.option("--unread", is_flag=True, help="Only those the operator has not marked read.")
@click.option("--limit", type=int, default=50, show_default=True, help=f"At most this many (1-{MAX_PAGE}).")
@click.option("--before", type=int, metavar="SEQ", help="Older than this seq (a page's next_before).")
def notifications_list(engine: Engine, account_id: str, unread: bool, limit: int, before: int | None,
                       at_us: int, as_json: bool) -> None:
    """ACCOUNT's notifications, newest first, in plain words."""
    page = engine.notifications(account_id, OPERATOR_READER, at_us, unread_only=unread, before=before,
                                limit=limit)
    emit(present.notice_page(account_id, page), as_json, _table)


def _table(data: dict[str, Any]) -> None:
    rows = data["notifications"]
    show_table(f"Notifications of {rows[0]['account_id']}, newest first ({data['unread']} unread)"
               if rows else f"Notifications ({data['unread']} unread)",
               (Column("seq", right=True, drop=3), Column("when (UTC)"), Column("state", drop=1),
                Column("notification", whole=False), Column("id", drop=2)),
               [[r["seq"], r["timestamp"].removesuffix("Z").replace("T", " "),
                 "read" if r["read"] else "new", r["text"], r["id"]] for r in rows])
    if data["next_before"] is not None:
        click.echo(f"older: --before {data['next_before']}")


@command(notifications, "read", at=True, as_json=True)
@click.argument("account_id", metavar="ACCOUNT")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "all_", is_flag=True, help="Every notification ACCOUNT has so far.")
def notifications_read(engine: Engine, account_id: str, ids: tuple[str, ...], all_: bool, at_us: int,
                       as_json: bool) -> None:
    """Mark ACCOUNT's notifications read (for the operator): the IDs given, or --all."""
    if all_ == bool(ids):
        raise InputError("ids", "give notification ids, or --all")
    marked, unread = engine.mark_read(account_id, OPERATOR_READER, at_us, ids=list(ids) if ids else None)
    emit({"marked": marked, "unread": unread}, as_json,
         lambda d: click.echo(f"{d['marked']} marked read; {d['unread']} unread"))
