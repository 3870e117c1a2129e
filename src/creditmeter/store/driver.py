"""What every part of a SQL transaction shares: its connection, the driver's parameter mark, and
plain driver reads that skip SQLAlchemy on the hot paths.

Driver errors raised here are not wrapped by SQLAlchemy; ``SqlStore.transaction`` maps them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from creditmeter.errors import InputError

# Statements of at most this many parameters are prepared on PostgreSQL (parsed and planned once
# a connection): the hot path's lookups and one-row writes. Longer ones (an id list of a batch)
# are not: their texts vary with the batch, and a generic plan of a long IN list is a full scan.
PREPARE_MAX_PARAMS = 20  # an event row


def prepares(environ: Mapping[str, str]) -> bool:
    """Whether short statements are prepared: unless ``CREDITMETER_PG_PREPARE`` is ``off`` (behind
    a pooler that cannot keep prepared statements, such as PgBouncer before 1.21)."""
    value = environ.get("CREDITMETER_PG_PREPARE", "on").strip().lower()
    if value not in ("on", "off"):
        raise InputError("CREDITMETER_PG_PREPARE", f"must be on or off, not {value!r}")
    return value == "on"


PREPARE = True  # set from the environment when a PostgreSQL store is opened


def prepare(params: Sequence[Any]) -> bool:
    """psycopg's ``prepare`` for a statement with ``params``. A statement given arrays (a read of
    many ids, a batch's writes over arrays) is planned for its values each time: a generic plan of
    ``= ANY($1)`` or of a join on ``unnest($1)``, made while a table was small and never analysed,
    reads it whole once it is not (and is kept until the table is analysed)."""
    return PREPARE and len(params) <= PREPARE_MAX_PARAMS and not any(type(p) is list for p in params)


IDLE = 0  # libpq's transaction status of a connection in no transaction


def begin_ahead(driver: Any) -> None:
    """PostgreSQL: let the transaction begin with the first pipeline of reads (its BEGIN sent in
    it), not in a round trip of its own as psycopg sends it. The driver connection is put in
    autocommit until then (psycopg then sends no BEGIN); ``begun`` makes sure a statement sent
    any other way first is in the transaction all the same, and ``end_ahead`` puts it back."""
    if driver.pgconn.transaction_status == IDLE:
        driver.autocommit = True


def begun(driver: Any) -> bool:
    """Whether the transaction has begun; if not, it will with the next statement (psycopg's
    own BEGIN before it). False: the caller may send BEGIN itself, first in its pipeline."""
    if driver.autocommit and driver.pgconn.transaction_status == IDLE:
        driver.autocommit = False
        return False
    return True


def end_ahead(driver: Any) -> None:
    """After the transaction (committed or rolled back): psycopg begins transactions again."""
    if driver.autocommit and driver.pgconn.transaction_status == IDLE:
        driver.autocommit = False


class DriverTransaction:
    """One open transaction on one SQLAlchemy connection and the driver connection under it.

    On PostgreSQL the transaction's BEGIN goes with its first pipeline of reads (``begin_ahead``):
    the driver connection is reached through ``_driver``, which begins it first if not yet."""

    def __init__(self, conn: Connection, mark: str, lock: bool = False) -> None:
        self.conn = conn
        self._mark = mark
        self._raw: Any = conn.connection.driver_connection
        self._pg = conn.dialect.name == "postgresql"
        if self._pg:
            begin_ahead(self._raw)
        self._last_grant_seq: int | None = None
        self._grant_seqs: list[int] = []  # PostgreSQL: taken from the sequence, not used yet
        # Lock the accounts a write loads (PostgreSQL); SQLite's BEGIN IMMEDIATE locks it all. In
        # code point order, the order they are taken in (sorted in Python, in chunks), whatever
        # the database's collation: writers that lock many accounts lock them in one order.
        self._lock = ' ORDER BY id COLLATE "C" FOR UPDATE' if lock else ""
        self.serialised = not self._pg and bool(conn.info.get("immediate"))
        self._ahead: list[tuple[Hashable, str, Sequence[Any]]] = []  # reads sent with the next pipeline
        self._answers: dict[Hashable, list[Any]] = {}  # their rows, each taken once

    @property
    def _driver(self) -> Any:
        """The driver connection, in the transaction (PostgreSQL: begun if it was not)."""
        if self._pg:
            begun(self._raw)
        return self._raw

    def _among(self, column: str, values: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """A condition that ``column`` (text) is one of ``values``, and its parameters. On
        PostgreSQL one array parameter: the same short text whatever the count, not a list of
        hundreds of parameters for psycopg to build and parse each time (planned for its values
        each time: see :func:`prepare`). One value (a command on one account): plain equality,
        a short statement prepared like any lookup by key."""
        if len(values) == 1:
            return f"{column} = {self._mark}", (values[0],)
        if self._pg:
            return f"{column} = ANY(%b::text[])", (list(values),)
        return f"{column} IN ({', '.join([self._mark] * len(values))})", tuple(values)

    def _send_ahead(self, key: Hashable, sql: str, params: Sequence[Any]) -> None:
        """On PostgreSQL, send a read with the next pipeline of reads (after the statements
        given to it: after its locks), not in a round trip of its own; ``_answered(key)`` then
        has its rows. Elsewhere nothing: the read runs when asked."""
        if self._pg:
            self._ahead.append((key, sql, params))

    def _answered(self, key: Hashable) -> list[Any] | None:
        """The rows of a read sent ahead, once; None if it was not (or they were taken)."""
        return self._answers.pop(key, None)

    def _forget_answers(self) -> None:
        """Drop what reads sent ahead answered and no one took: a write may change it."""
        self._answers.clear()

    def _fetch_all(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """The rows of several reads, in order; on PostgreSQL sent in one pipeline (the server
        still runs them one after the other)."""
        if not self._pg:
            return [self._fetch(sql, params) for sql, params in queries]
        ahead, self._ahead = self._ahead, []
        cursors = []
        driver = self._raw
        begin = driver.autocommit and driver.pgconn.transaction_status == IDLE
        try:
            with driver.pipeline():
                if begin:  # the transaction's BEGIN, in autocommit till now (see begin_ahead)
                    driver.execute("BEGIN")
                for sql, params in [*queries, *((sql, params) for _, sql, params in ahead)]:
                    cursor = driver.cursor()
                    cursors.append(cursor)
                    cursor.execute(sql, params, prepare=prepare(params))
            rows = [cursor.fetchall() for cursor in cursors]
            for (key, _, _), answer in zip(ahead, rows[len(queries):], strict=True):
                self._answers[key] = answer
            return rows[:len(queries)]
        finally:
            for cursor in cursors:
                cursor.close()

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Rows of a read, as tuples, straight from the driver's cursor: the hot paths skip
        SQLAlchemy's result building (several times the cost of the query itself here)."""
        cursor = self._driver.cursor()
        try:
            if self._pg:
                cursor.execute(sql, params, prepare=prepare(params))
            else:
                cursor.execute(sql, params)
            rows: list[Any] = cursor.fetchall()
            return rows
        finally:
            cursor.close()
