"""What every part of a SQL transaction shares: its connection, the driver's parameter mark, and
plain driver reads that skip SQLAlchemy on the hot paths.

Driver errors raised here are not wrapped by SQLAlchemy; ``SqlStore.transaction`` maps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection


class DriverTransaction:
    """One open transaction on one SQLAlchemy connection and the driver connection under it."""

    def __init__(self, conn: Connection, mark: str, lock: bool = False) -> None:
        self.conn = conn
        self._mark = mark
        self._driver: Any = conn.connection.driver_connection
        self._pg = conn.dialect.name == "postgresql"
        self._last_grant_seq: int | None = None
        self._grant_seqs: list[int] = []  # PostgreSQL: taken from the sequence, not used yet
        # Lock the accounts a write loads (PostgreSQL); SQLite's BEGIN IMMEDIATE locks it all.
        self._lock = " ORDER BY id FOR UPDATE" if lock else ""

    def _fetch_all(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """The rows of several reads, in order; on PostgreSQL sent in one pipeline (the server
        still runs them one after the other)."""
        if not self._pg:
            return [self._fetch(sql, params) for sql, params in queries]
        cursors = []
        try:
            with self._driver.pipeline():
                for sql, params in queries:
                    cursor = self._driver.cursor()
                    cursors.append(cursor)
                    cursor.execute(sql, params)
            return [cursor.fetchall() for cursor in cursors]
        finally:
            for cursor in cursors:
                cursor.close()

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Rows of a read, as tuples, straight from the driver's cursor: the hot paths skip
        SQLAlchemy's result building (several times the cost of the query itself here)."""
        cursor = self._driver.cursor()
        try:
            cursor.execute(sql, params)
            rows: list[Any] = cursor.fetchall()
            return rows
        finally:
            cursor.close()
