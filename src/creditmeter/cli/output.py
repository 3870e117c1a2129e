"""A command's answer: JSON with ``--json`` (the same data the API answers), else for people."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import orjson

T = TypeVar("T")


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def emit(data: T, as_json: bool, table: Callable[[T], object]) -> None:
    """Print ``data`` as JSON, or hand it to ``table`` to show it to people (a table or a line)."""
    if as_json:
        print_json(data)
    else:
        table(data)
