"""Writes a batch of :class:`~creditmeter.store.changes.Changes` to PostgreSQL (psycopg 3).

Large appends (events, entries) go by COPY, several times faster than INSERTs for many rows.
Everything else is sent in one pipeline, one round trip rather than one per statement; the
updates of many rows each go as one statement over arrays, those of one row (a command on one
account) as a short prepared statement of plain values.

A write of events that asks for it runs after a savepoint: when another transaction stored one
of their ids first, what the write did is undone and ``EventTaken`` raised, the transaction
still open. Without it the transaction fails whole on the taken id (and is retried whole).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from creditmeter.store.base import EventTaken, StaleWrite
from creditmeter.store.changes import (
    COUNTERS_UPDATE,
    DAY_COLUMNS,
    DAY_UPSERT,
    VERSION_UPDATE,
    Changes,
    Row,
    plain_writes,
)
from creditmeter.store.driver import prepare
from creditmeter.store.rows import ENTRY_COLUMNS, EVENT_COLUMNS, insert_sql
from creditmeter.store.schema import entries, events

COPY_FROM = 50  # appends of fewer rows go as INSERTs in the pipeline

# The rollups, counters and versions of a batch each go as one statement of a few arrays (one per
# column): its text is the same whatever the number of rows, so psycopg neither parses a long
# VALUES list nor misses its cache. It is not prepared (see ``driver.prepare``): planned for its
# rows each time, it joins them to the table by its key whatever the table's size.
_DAY_TYPES = ("text", "bigint", "text") + ("bigint",) * (len(DAY_COLUMNS) - 3)
_DAYS = DAY_UPSERT.replace("VALUES {values}", "SELECT * FROM unnest("
                           + ", ".join(f"%b::{t}[]" for t in _DAY_TYPES) + ")")
_COUNTERS = ("UPDATE grants AS g SET used_uc = v.u, held_uc = v.h, closed_uc = v.c "
             "FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[]) AS v(u, h, c, seq) "
             "WHERE g.seq = v.seq")
_VERSIONS = ("UPDATE accounts AS a SET overage_uc = v.o, overage_since_us = v.s, version = v.nv "
             "FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::text[], %b::bigint[]) "
             "AS v(o, s, nv, id, ov) WHERE a.id = v.id AND a.version = v.ov")
# The same writes of one row: plain values, prepared (by key: planned alike for any value).
_DAY = DAY_UPSERT.format(values=f"({', '.join(['%s'] * len(DAY_COLUMNS))})")
_COUNTER = COUNTERS_UPDATE.format(m="%s")
_VERSION = VERSION_UPDATE.format(m="%s")


_UNIQUE_VIOLATION = "23505"


@contextmanager
def undone_if_event_taken(driver: Any, changes: Changes) -> Iterator[None]:
    """Run the block (the write of ``changes``) after a savepoint; if it fails because an event
    id is already stored (by a transaction that committed meanwhile), roll back to the savepoint
    and raise ``EventTaken``. A write that goes in one pipeline opens and releases the savepoint
    in it (``Changes.savepoint``): two round trips fewer.

    Locks taken before the savepoint are kept, and the committed event is visible to the next
    statement (read committed), so looking for the events again finds it.
    """
    changes.savepoint = not (changes.grants or changes.closings or len(changes.events) >= COPY_FROM
                             or len(changes.entries) >= COPY_FROM)
    if not changes.savepoint:
        driver.execute("SAVEPOINT persist")
    try:
        yield
    except Exception as exc:
        orig = getattr(exc, "orig", exc)  # SQLAlchemy wraps the driver's error; COPY does not
        diag = getattr(orig, "diag", None)
        if (getattr(orig, "sqlstate", None) != _UNIQUE_VIOLATION
                or getattr(diag, "table_name", None) != events.name):
            raise
        driver.execute("ROLLBACK TO SAVEPOINT persist")
        raise EventTaken(str(orig).strip().splitlines()[0]) from exc
    if not changes.savepoint:
        driver.execute("RELEASE SAVEPOINT persist")


def write(driver: Any, mark: str, changes: Changes, commit: bool = False) -> int:
    """Write ``changes`` (but their new grants and closing entries) on the driver connection;
    the number of accounts found at their loaded version and moved to the next. ``commit``
    (one book's write, no savepoint): the pipeline ends with the transaction's commit, after
    the version's write checked it in the server (``StaleWrite`` and nothing committed if not)."""
    if commit and len(changes.versions) == 1 and not changes.savepoint:
        return _write_and_commit(driver, mark, changes)
    writes: list[tuple[str, list[Any]]] = [("SAVEPOINT persist", [()])] if changes.savepoint else []
    writes += _writes(driver, mark, changes)
    first_check = len(writes)
    writes += _by_columns(_VERSIONS, _VERSION, changes.versions)
    last_check = len(writes)
    if changes.savepoint:
        writes.append(("RELEASE SAVEPOINT persist", [()]))
    counts = _pipeline(driver, writes)
    return sum(counts[first_check:last_check])


# The version's write failing the transaction when the account is not at its loaded version any
# more: 1 / 0 raises, and the commit sent after it in the pipeline is not run.
_VERSION_CHECKED = f"WITH v AS ({_VERSION} RETURNING 1) SELECT 1 / count(*) FROM v"
_DIVISION_BY_ZERO = "22012"


def _write_and_commit(driver: Any, mark: str, changes: Changes) -> int:
    """``write`` of one book's changes, then COMMIT, in one pipeline."""
    writes = _writes(driver, mark, changes)
    try:
        _pipeline(driver, [*writes, (_VERSION_CHECKED, changes.versions), ("COMMIT", [()])], counted=False)
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == _DIVISION_BY_ZERO:
            raise StaleWrite("the account changed meanwhile") from exc
        raise
    return 1


def _writes(driver: Any, mark: str, changes: Changes) -> list[tuple[str, list[Any]]]:
    """The statements (each with its rows) that write ``changes`` but the versions, in order;
    long appends are written here and now, by COPY (which cannot run inside a pipeline)."""
    writes = plain_writes(changes, mark)
    for table, columns, rows in ((events, EVENT_COLUMNS, changes.events),
                                 (entries, ENTRY_COLUMNS, changes.entries)):
        if len(rows) >= COPY_FROM:
            _copy(driver, table, columns, rows)
        else:
            writes.append((insert_sql(table, columns, mark), rows))
    writes += _by_columns(_DAYS, _DAY, changes.days)
    writes += _by_columns(_COUNTERS, _COUNTER, changes.counters)
    return writes


def _by_columns(statement: str, one: str, rows: Sequence[Row]) -> list[tuple[str, list[Any]]]:
    """``statement`` run once with the rows' values as one list per column; one row: ``one``
    run with its values (none: not run)."""
    if len(rows) == 1:
        return [(one, [rows[0]])]
    return [(statement, [tuple(list(column) for column in zip(*rows, strict=True))])] if rows else []


def _copy(driver: Any, table: sa.Table, columns: Sequence[str], rows: list[Row]) -> None:
    """Append rows with COPY."""
    with driver.cursor() as cursor, cursor.copy(
            f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _pipeline(driver: Any, writes: list[tuple[str, list[Any]]], counted: bool = True) -> list[int]:
    """Run the writes in one pipeline; the rows each statement changed (not ``counted``: none,
    and one cursor sends them all)."""
    cursors = [] if counted else [driver.cursor()]
    try:
        with driver.pipeline():
            for sql, rows in writes:
                if counted:
                    cursors.append(driver.cursor())
                cursor = cursors[-1]
                if len(rows) == 1:
                    cursor.execute(sql, rows[0], prepare=prepare(rows[0]))
                elif rows:
                    cursor.executemany(sql, rows)
        return [cursor.rowcount for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()
