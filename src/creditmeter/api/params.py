"""Query parameters shared by several routes, and turning their text into engine values."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Query

from creditmeter.errors import InputError
from creditmeter.timeutil import parse_instant

At = Annotated[str | None, Query(description="ISO 8601 (default: now)")]
Member = Annotated[str | None, Query(max_length=255, description=(
    "Enterprise accounts: one member's usage, only the parts the enterprise's quota paid"))]
From = Annotated[str | None, Query(alias="from", description="ISO 8601, inclusive")]
To = Annotated[str | None, Query(description="ISO 8601, exclusive")]
Model = Annotated[str | None, Query(max_length=255, description="Only this model's usage")]


@contextmanager
def fields(**names: str) -> Iterator[None]:
    """Report an engine error under the field name the API uses (``expires`` → ``expires_at``;
    a field inside one is renamed with it: ``when_out_of_credits.overage`` → ``policy.overage``)."""
    try:
        yield
    except InputError as exc:
        renamed = renamed_field(exc.field, names)
        if renamed is not None:
            raise InputError(renamed, exc.reason) from None
        raise


def renamed_field(field: str, names: dict[str, str]) -> str | None:
    """``field`` as the API names it under ``names`` (exact names first), or None."""
    if field in names:
        return names[field]
    for old, new in names.items():
        if field.startswith((old + ".", old + "[")):
            return new + field[len(old):]
    return None


def instant(value: str | None, field: str) -> int | None:
    return None if value is None else parse_instant(value, field)


def time_range(from_: str | None, to: str | None) -> tuple[int | None, int | None]:
    start, end = instant(from_, "from"), instant(to, "to")
    if start is not None and end is not None and end <= start:
        raise InputError("to", "must be after from")
    return start, end
