"""Writes a batch of :class:`~creditmeter.store.changes.Changes` to SQLite: each statement once
through the driver's ``executemany`` (straight to the driver's cursor: SQLAlchemy's execution
context around each costs more than a short statement), in the order both dialects share.

The caller holds the database lock (``BEGIN IMMEDIATE``), so nothing runs between statements.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from creditmeter.store.changes import (
    COUNTERS_UPDATE,
    DAY_COLUMNS,
    DAY_UPSERT,
    VERSION_UPDATE,
    Changes,
    plain_writes,
)
from creditmeter.store.rows import ENTRY_COLUMNS, EVENT_COLUMNS, insert_sql
from creditmeter.store.schema import entries, events


def write(conn: Connection, mark: str, changes: Changes) -> int:
    """Write ``changes`` (but their new grants and closing entries); the number of accounts
    found at their loaded version and moved to the next."""
    m = mark
    writes = plain_writes(changes, m)
    writes += [
        (insert_sql(events, EVENT_COLUMNS, m), changes.events),
        (insert_sql(entries, ENTRY_COLUMNS, m), changes.entries),
        (DAY_UPSERT.format(values=f"({', '.join([m] * len(DAY_COLUMNS))})"), changes.days),
    ]
    cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for sql, rows in writes:
            if rows:
                cursor.executemany(sql, rows)
        if changes.counters:
            cursor.executemany(COUNTERS_UPDATE.format(m=m), changes.counters)
        if not changes.versions:
            return 0
        cursor.executemany(VERSION_UPDATE.format(m=m), changes.versions)
        return int(cursor.rowcount)
    finally:
        cursor.close()
