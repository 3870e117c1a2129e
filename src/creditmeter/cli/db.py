"""``creditmeter db``: the database schema."""

from __future__ import annotations

import os

import click

from creditmeter.cli.common import DEFAULT_DB, fail, main
from creditmeter.engine import open_engine
from creditmeter.errors import Unavailable


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
        fail(error)
    finally:
        engine.close()
