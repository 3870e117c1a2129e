"""Connecting to the database: :class:`SqlStore` (SQLAlchemy Core), its schema revision, its
transactions, and how the driver's errors map to the store's.

SQLite is the embedded default; PostgreSQL (psycopg 3) runs the same schema and code.
SQLite specifics: WAL journal, ``synchronous=NORMAL``, a busy timeout, and write transactions
opened with ``BEGIN IMMEDIATE`` so that a command's reads and writes are one serialised unit
(no check-then-act race between processes). PostgreSQL: write transactions lock the rows of the
accounts they load (``FOR UPDATE``, in id order so two writers cannot deadlock each other), so
work on one account is serialised and different accounts proceed in parallel. On both, a write
that loses a race anyway (a unique key taken meanwhile, a serialisation failure, a deadlock, a
busy database) raises ``StaleWrite`` and the engine retries the command whole.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from creditmeter.errors import InputError, SchemaError
from creditmeter.store import driver
from creditmeter.store.alert_queries import AlertQueries
from creditmeter.store.alerts import AlertRecords
from creditmeter.store.base import LostConnection, StaleWrite
from creditmeter.store.checkpoints import FALLBACK_PAGES, INTERVAL_S, Checkpointer
from creditmeter.store.deliveries import DeliveryWork
from creditmeter.store.notifications import NoticeRecords
from creditmeter.store.reads import Reads
from creditmeter.store.reconcile import Reconcile
from creditmeter.store.summary import Summaries
from creditmeter.store.writes import Writes

SCHEMA_REVISION = "0009"
NEVER_BY_COUNT = 1 << 30  # psycopg's prepare threshold: with None, not even a statement asked to is


class SqlTransaction(Reads, Summaries, Writes, Reconcile, AlertRecords, AlertQueries, DeliveryWork,
                     NoticeRecords):
    """The :class:`~creditmeter.store.base.Transaction` on one SQLAlchemy connection."""


def open_store(url: str) -> SqlStore:
    return SqlStore(url)


class SqlStore:
    """A store on any SQLAlchemy URL; one engine (connection pool) per store."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._fallback_checkpoints = False  # SQLite: checkpoint only past the fallback (own thread)
        try:
            self._create_engine(url)
        except sa.exc.ArgumentError:  # not a URL, or a scheme no installed driver speaks
            scheme = url.split("://", 1)[0] if "://" in url else url[:40]
            raise InputError("db", f"{scheme!r} is not a database URL creditmeter can open "
                             "(sqlite:///FILE or postgresql://USER@HOST:PORT/DB)") from None
        self._checked = False
        self._readers = threading.local()
        self._writer = threading.RLock()
        self._write_conn: Connection | None = None  # SQLite: the one kept for writes (_writing_connection)
        self._checkpointer: Checkpointer | None = None
        dialect = self.engine.dialect
        self._driver_error: type[Exception] = dialect.loaded_dbapi.Error
        self._mark = "?" if dialect.paramstyle == "qmark" else "%s"

    def _create_engine(self, url: str) -> None:
        if self.is_sqlite:
            self._ensure_sqlite_dir(url)
            # Connections are kept (opening one runs PRAGMAs): enough for a server's thread pool.
            self.engine = sa.create_engine(url, connect_args={"timeout": 30}, pool_size=20,
                                           max_overflow=20)
            sa.event.listen(self.engine, "connect", self._sqlite_on_connect)
            sa.event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            # No statement is prepared because it ran often (the threshold is never reached):
            # after a few runs PostgreSQL would switch it to a generic plan, and for
            # `id IN (…500 ids…)` that plan is a full scan. Short statements (the hot path's) are
            # prepared one by one (``driver.prepare``).
            # A connection idle for a while is pinged before use (one that was just used is not:
            # a ping per transaction would be a round trip each). One found dead mid-transaction
            # fails it as LostConnection (writes are retried whole), and the pool is renewed.
            driver.PREPARE = driver.prepares(os.environ)
            self.engine = sa.create_engine(_driver_url(url),
                                           connect_args={"prepare_threshold": NEVER_BY_COUNT})
            sa.event.listen(self.engine, "checkout", _ping_if_idle)
            sa.event.listen(self.engine, "checkin", _note_checkin)
            sa.event.listen(self.engine, "before_cursor_execute", _in_transaction)

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> None:
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    # -- schema ------------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest migration (Alembic)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", "creditmeter.store:migrations")
        try:
            conn = self.engine.connect()
        except sa.exc.OperationalError as exc:
            raise LostConnection(_describe(exc)) from exc
        with conn:
            conn.info["immediate"] = True
            with conn.begin():
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        self._checked = True

    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()

    def _check_schema(self, auto_create: bool) -> None:
        if self._checked:
            return
        current = self.revision()
        if current is None and auto_create and self.is_sqlite:
            self.upgrade()  # the embedded default needs no set-up
            return
        if current != SCHEMA_REVISION:
            raise SchemaError(
                f"the database at {self.url} has schema {current or 'none'}, this creditmeter "
                f"needs {SCHEMA_REVISION}: run 'creditmeter db upgrade'")
        self._checked = True

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self, write: bool = False, auto_create: bool = True) -> Iterator[SqlTransaction]:
        """One transaction: committed if the block ends normally, rolled back if it raises."""
        if write and self.is_sqlite:
            # SQLite has one writer at a time; threads of this process queue here rather than in
            # SQLite's busy handler, which sleeps in steps of up to 100 ms.
            with self._writer, self._transaction(write, auto_create) as tx:
                yield tx
        else:
            with self._transaction(write, auto_create) as tx:
                yield tx

    @contextmanager
    def _transaction(self, write: bool, auto_create: bool) -> Iterator[SqlTransaction]:
        keep = False
        try:
            self._check_schema(auto_create)
            if self.is_sqlite and not write:
                # Reads on SQLite reuse this thread's connection: taking one from the pool and
                # giving it back costs more than a short read.
                conn = getattr(self._readers, "conn", None)
                keep = conn is not None and not conn.closed and not conn.in_transaction()
                if not keep:
                    conn = self.engine.connect()
                    if getattr(self._readers, "conn", None) is None:
                        self._readers.conn = conn
                        keep = True
            elif self.is_sqlite:
                conn, keep = self._writing_connection()
            else:
                conn = self.engine.connect()
        except sa.exc.OperationalError as exc:
            raise LostConnection(_describe(exc)) from exc
        assert conn is not None
        try:
            if self.is_sqlite:
                conn.info["immediate"] = write
            try:
                with conn.begin():
                    yield SqlTransaction(conn, self._mark, lock=write and not self.is_sqlite)
            except sa.exc.DBAPIError as exc:
                if _connection_lost(exc):
                    if not exc.connection_invalidated:
                        conn.invalidate()  # broken under us (a pipeline cut short): never reused
                    raise LostConnection(_describe(exc)) from exc
                if write and _lost_race(exc):
                    raise StaleWrite(_describe(exc)) from exc
                raise
            except self._driver_error as exc:  # raised by the driver itself (plain reads, COPY)
                if self.engine.dialect.is_disconnect(exc, None, None) or _connection_lost(exc):  # type: ignore[arg-type]
                    conn.invalidate()
                    self.engine.dispose()  # the others in the pool are as dead as this one
                    raise LostConnection(_describe(exc)) from exc
                if write and _lost_race(exc):
                    raise StaleWrite(_describe(exc)) from exc
                raise
        finally:
            if not self.is_sqlite and not conn.invalidated:
                driver.end_ahead(conn.connection.driver_connection)
            if not keep:
                try:
                    conn.close()
                except sa.exc.DBAPIError:  # the connection is already gone; nothing to give back
                    pass

    def _writing_connection(self) -> tuple[Connection, bool]:
        """SQLite's write transactions take turns (under ``_writer``), so one connection is kept
        for them: a checkout from the pool and its return cost more than a short write. A write
        begun inside another (the same thread) gets one of its own. True: the connection is kept."""
        conn = self._write_conn
        if conn is not None and not conn.closed and not conn.invalidated and not conn.in_transaction():
            return conn, True
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            self._write_conn = conn = self.engine.connect()
            return conn, True
        return self.engine.connect(), False

    def background_checkpoints(self, interval_s: float = INTERVAL_S) -> Callable[[], None]:
        """SQLite: run the WAL's checkpoints on a thread of their own (``checkpoints.Checkpointer``)
        rather than in the commits that grow it; answers how to stop them (elsewhere: a no-op)."""
        path = sa.engine.make_url(self.url).database if self.is_sqlite else None
        if not path or path == ":memory:" or self._checkpointer is not None:
            return lambda: None
        # Read by each connection opened from now on (no listener added while threads connect).
        self._fallback_checkpoints = True
        with self._writer:  # connections opened from now on checkpoint only past the fallback
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None
            self.engine.dispose()
        self._checkpointer = Checkpointer(path, interval_s)
        self._checkpointer.start()
        return self._stop_checkpoints

    def _sqlite_on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        _set_up_sqlite(dbapi_conn, self._fallback_checkpoints)

    def _stop_checkpoints(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None

    def close(self) -> None:
        self._stop_checkpoints()
        kept = getattr(self._readers, "conn", None)
        if kept is not None:
            self._readers.conn = None
            kept.close()
        with self._writer:
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None
        self.engine.dispose()


def _driver_url(url: str) -> str:
    """``postgresql://…`` means psycopg 3 here (SQLAlchemy's default driver is psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# SQLSTATEs of a write that lost a race: unique violation, serialization failure, deadlock.
_RACE_STATES = {"23505", "40001", "40P01"}


def _orig(exc: Exception) -> BaseException | None:
    """The driver's own exception (SQLAlchemy wraps it; ``_fetch`` does not)."""
    return exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc


def _describe(exc: Exception) -> str:
    orig = _orig(exc)
    return str(orig).strip().splitlines()[0] if orig is not None and str(orig).strip() else str(exc)


def _connection_lost(exc: Exception) -> bool:
    """The server went away or refuses connections now (restart, shutdown, network). The cause
    may lie under the error raised: a shutdown met inside a pipeline surfaces as "cannot exit
    pipeline mode", and then as the failed rollback after it."""
    seen: Exception | BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, sa.exc.DBAPIError) and seen.connection_invalidated:
            return True
        state = getattr(_orig(seen), "sqlstate", None) or "" if isinstance(seen, Exception) else ""
        if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _lost_race(exc: Exception) -> bool:
    orig = _orig(exc)
    state = getattr(orig, "sqlstate", None)
    if state is not None:
        return state in _RACE_STATES
    text = str(orig).lower()
    return "unique constraint" in text or "database is locked" in text


IDLE_PING_S = 1.0


def _in_transaction(conn: Connection, *_: Any) -> None:
    """A statement run through SQLAlchemy runs in the transaction: begun first, if the store's
    own reads did not begin it yet (``driver.begin_ahead``)."""
    driver.begun(conn.connection.driver_connection)


def _note_checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """Before handing out a connection that sat idle, make sure the server still answers; a
    dead one is replaced by the pool (``DisconnectionError``)."""
    if time.monotonic() - record.info.get("checked_in", time.monotonic()) < IDLE_PING_S:
        return
    try:
        dbapi_conn.execute("SELECT 1")
        dbapi_conn.rollback()  # leave it as the pool gave it: outside any transaction
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable
        raise sa.exc.DisconnectionError(str(exc)) from exc


def _set_up_sqlite(dbapi_conn: Any, fallback_checkpoints: bool) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun explicitly (below)
    cursor = dbapi_conn.cursor()
    _to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    if fallback_checkpoints:  # the checkpoints run on a thread of their own
        cursor.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
    cursor.close()


WAL_SWITCH_TIMEOUT_S = 30.0  # as long as the busy timeout


def _to_wal(cursor: Any) -> None:
    """Put the database in WAL mode (kept in the file: once it is, nothing to do). Switching a new
    file takes a lock SQLite does not wait for: connections opened at once on a file not yet in
    WAL mode (threads starting together) get "database is locked" and try again, within the busy
    timeout."""
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT_S
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def _sqlite_on_begin(conn: Connection) -> None:
    # Straight to the driver: this runs for every transaction.
    conn.connection.driver_connection.execute(  # type: ignore[union-attr]
        "BEGIN IMMEDIATE" if conn.info.get("immediate") else "BEGIN")

