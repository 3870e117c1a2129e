"""The SQL store (SQLAlchemy Core). SQLite is the embedded default; PostgreSQL (psycopg 3)
runs the same schema and code.

SQLite specifics: WAL journal, ``synchronous=NORMAL``, a busy timeout, and write transactions
opened with ``BEGIN IMMEDIATE`` so that a command's reads and writes are one serialised unit
(no check-then-act race between processes). PostgreSQL: write transactions lock the rows of the
accounts they load (``FOR UPDATE``, in id order so two writers cannot deadlock each other), so
work on one account is serialised and different accounts proceed in parallel. On both, a write
that loses a race anyway (a unique key taken meanwhile, a serialisation failure, a deadlock, a
busy database) raises ``StaleWrite`` and the engine retries the command whole.
Hot-path bulk writes go through the driver's ``executemany`` with statements built once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from creditmeter.domain import (
    Account,
    AccountId,
    AccountKind,
    Allocation,
    Charge,
    EntryKind,
    EventId,
    Grant,
    GrantId,
    GrantKind,
    Hold,
    HoldId,
    HoldStatus,
    StoredEvent,
    SummaryRow,
    UsageEvent,
)
from creditmeter.enterprise import Member, QuotaAllocation
from creditmeter.errors import SchemaError
from creditmeter.invariants import GrantRow, LedgerTotals
from creditmeter.keys import ApiKey, MemberRole, Role
from creditmeter.ledger import Book, Counters
from creditmeter.plans import PlanCatalog, parse_plan, parse_plans
from creditmeter.pricing import Catalog, PriceVersion, parse_catalog
from creditmeter.store.base import LostConnection, StaleWrite
from creditmeter.store.schema import (
    accounts,
    allocations,
    api_keys,
    entries,
    events,
    grants,
    holds,
    members,
    plan_catalogs,
    price_versions,
    subscriptions,
    usage_days,
)
from creditmeter.subscriptions import Subscription
from creditmeter.timeutil import DAY_US

SCHEMA_REVISION = "0003"
_CHUNK = 500  # ids per IN (...) list


def open_store(url: str) -> SqlStore:
    return SqlStore(url)


class SqlStore:
    """A store on any SQLAlchemy URL; one engine (connection pool) per store."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._ensure_sqlite_dir(url)
            # Connections are kept (opening one runs PRAGMAs): enough for a server's thread pool.
            self.engine = sa.create_engine(url, connect_args={"timeout": 30}, pool_size=20,
                                           max_overflow=20)
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
            sa.event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            # No server-side prepared statements: after a few runs PostgreSQL would switch them to
            # a generic plan, and for `id IN (…500 ids…)` that plan is a full scan.
            # A connection idle for a while is pinged before use (one that was just used is not:
            # a ping per transaction would be a round trip each). One found dead mid-transaction
            # fails it as LostConnection (writes are retried whole), and the pool is renewed.
            self.engine = sa.create_engine(_driver_url(url), connect_args={"prepare_threshold": None})
            sa.event.listen(self.engine, "checkout", _ping_if_idle)
            sa.event.listen(self.engine, "checkin", _note_checkin)
        self._checked = False
        self._readers = threading.local()
        self._writer = threading.RLock()
        dialect = self.engine.dialect
        self._driver_error: type[Exception] = dialect.loaded_dbapi.Error
        self._mark = "?" if dialect.paramstyle == "qmark" else "%s"

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
                    raise LostConnection(_describe(exc)) from exc
                if write and _lost_race(exc):
                    raise StaleWrite(_describe(exc)) from exc
                raise
            except self._driver_error as exc:  # from SqlTransaction._fetch, not wrapped by SQLAlchemy
                if self.engine.dialect.is_disconnect(exc, None, None) or _connection_lost(exc):  # type: ignore[arg-type]
                    conn.invalidate()
                    self.engine.dispose()  # the others in the pool are as dead as this one
                    raise LostConnection(_describe(exc)) from exc
                if write and _lost_race(exc):
                    raise StaleWrite(_describe(exc)) from exc
                raise
        finally:
            if not keep:
                try:
                    conn.close()
                except sa.exc.DBAPIError:  # the connection is already gone; nothing to give back
                    pass

    def close(self) -> None:
        kept = getattr(self._readers, "conn", None)
        if kept is not None:
            self._readers.conn = None
            kept.close()
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
    """The server went away or refuses connections now (restart, shutdown, network)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    state = getattr(_orig(exc), "sqlstate", None) or ""
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _lost_race(exc: Exception) -> bool:
    orig = _orig(exc)
    state = getattr(orig, "sqlstate", None)
    if state is not None:
        return state in _RACE_STATES
    text = str(orig).lower()
    return "unique constraint" in text or "database is locked" in text


IDLE_PING_S = 1.0


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


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun explicitly (below)
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Straight to the driver: this runs for every transaction.
    conn.connection.driver_connection.execute(  # type: ignore[union-attr]
        "BEGIN IMMEDIATE" if conn.info.get("immediate") else "BEGIN")


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _insert_sql(table: sa.Table, columns: Sequence[str], mark: str) -> str:
    return (f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"VALUES ({', '.join([mark] * len(columns))})")


_EVENT_COLUMNS = ("id", "account_id", "ts_us", "model", "input_tokens", "output_tokens",
                  "cached_input_tokens", "cache_write_tokens", "quantities", "metadata",
                  "cost_uc", "overage_uc", "allocations", "price_version", "hold_id",
                  "fingerprint", "recorded_at_us")
_HOLD_INSERT_COLUMNS = ("id", "account_id", "amount_uc", "parts", "created_at_us", "expires_at_us",
                        "status", "request_fp")
_ENTRY_COLUMNS = ("account_id", "grant_id", "kind", "amount_uc", "at_us", "hold_id", "note",
                  "recorded_at_us")
_CLOSING = (EntryKind.EXPIRE, EntryKind.VOID)


_GRANT_KINDS = {k.value: k for k in GrantKind}
# Grant's fields in order, then the cached counters.
_GRANT_SELECT = ("id, account_id, kind, amount_uc, priority, effective_at_us, expires_at_us, name, "
                 "source, seq, created_at_us, voided_at_us, used_uc, held_uc, closed_uc")


_HOLD_SELECT = "id, account_id, amount_uc, parts, created_at_us, expires_at_us, status, settled_event_id"
_KEY_SELECT = "id, hash, prefix, role, account_id, name, created_at_us, revoked_at_us"


def _grant_from_row(row: Any) -> Grant:
    return Grant(
        id=GrantId(row.id), account_id=AccountId(row.account_id), kind=GrantKind(row.kind),
        amount_uc=row.amount_uc, priority=row.priority, effective_at_us=row.effective_at_us,
        expires_at_us=row.expires_at_us, name=row.name, source=row.source, seq=row.seq,
        created_at_us=row.created_at_us, voided_at_us=row.voided_at_us,
    )


def _parts(text: str) -> tuple[Allocation, ...]:
    return tuple(Allocation(GrantId(g), a) for g, a in orjson.loads(text))


def _parts_json(parts: Iterable[Allocation]) -> str:
    return orjson.dumps([[p.grant_id, p.amount_uc] for p in parts]).decode()


# Rows read through ``_fetch`` are plain tuples in these column orders.
_ACCOUNT_SELECT = "id, name, kind, created_at_us, overage_uc"


def _hold_from_row(r: Sequence[Any]) -> Hold:
    """A hold from a row of ``_HOLD_SELECT``."""
    return Hold(id=HoldId(r[0]), account_id=AccountId(r[1]), amount_uc=r[2], parts=_parts(r[3]),
                created_at_us=r[4], expires_at_us=r[5], status=HoldStatus(r[6]),
                settled_event_id=EventId(r[7]) if r[7] else None)


def _account_from_row(r: Sequence[Any]) -> Account:
    """An account from a row of ``_ACCOUNT_SELECT``."""
    return Account(AccountId(r[0]), r[1], AccountKind(r[2]), r[3])


def _key_from_row(r: Sequence[Any]) -> ApiKey:
    """A key from a row of ``_KEY_SELECT``."""
    return ApiKey(r[0], r[2], Role(r[3]), r[4], r[5], r[6], r[7])


_SUBSCRIPTION_SELECT = ("id, account_id, plan, seats, anchor_us, created_at_us, next_period, cancel_at_us, "
                        "cancelled_at_us")


def _subscription_from_row(r: Sequence[Any]) -> Subscription:
    """A subscription from a row of ``_SUBSCRIPTION_SELECT``."""
    return Subscription(r[0], AccountId(r[1]), parse_plan(orjson.loads(r[2])), r[3], r[4], r[5], r[6], r[7],
                        r[8])


_ALLOCATION_SELECT = ("id, enterprise_id, member_id, amount_uc, parts, created_at_us, revoked_at_us, "
                      "returned_uc")


def _allocation_from_row(r: Sequence[Any]) -> QuotaAllocation:
    return QuotaAllocation(r[0], r[1], r[2], r[3], _parts(r[4]), r[5], r[6], r[7])


def _stored_event(row: Any) -> StoredEvent:
    quantities = tuple(tuple(q) for q in orjson.loads(row.quantities)) if row.quantities else ()
    event = UsageEvent(
        id=EventId(row.id), account_id=AccountId(row.account_id), timestamp_us=row.ts_us,
        model=row.model, input_tokens=row.input_tokens, output_tokens=row.output_tokens,
        cached_input_tokens=row.cached_input_tokens, cache_write_tokens=row.cache_write_tokens,
        quantities=quantities,
        metadata=orjson.loads(row.metadata) if row.metadata else {},
        fingerprint=row.fingerprint,
    )
    charge = Charge(
        event_id=EventId(row.id), account_id=AccountId(row.account_id), status="charged",
        cost_uc=row.cost_uc, allocations=_parts(row.allocations), overage_uc=row.overage_uc,
        price_version=row.price_version, timestamp_us=row.ts_us,
        hold_id=HoldId(row.hold_id) if row.hold_id else None,
    )
    return StoredEvent(event, charge, row.seq)


class SqlTransaction:
    """The :class:`~creditmeter.store.base.Transaction` on one SQLAlchemy connection."""

    def __init__(self, conn: Connection, mark: str, lock: bool = False) -> None:
        self.conn = conn
        self._mark = mark
        self._driver: Any = conn.connection.driver_connection
        self._pg = conn.dialect.name == "postgresql"
        self._last_grant_seq: int | None = None
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
        SQLAlchemy's result building (several times the cost of the query itself here).
        Driver errors are mapped like SQLAlchemy's by ``SqlStore.transaction``."""
        cursor = self._driver.cursor()
        try:
            cursor.execute(sql, params)
            rows: list[Any] = cursor.fetchall()
            return rows
        finally:
            cursor.close()

    # -- accounts ----------------------------------------------------------------------------

    def get_account(self, account_id: str) -> tuple[Account, int] | None:
        rows = self._fetch(f"SELECT {_ACCOUNT_SELECT} FROM accounts WHERE id = {self._mark}", (account_id,))
        return (_account_from_row(rows[0]), rows[0][4]) if rows else None

    def insert_account(self, account: Account) -> None:
        self.conn.execute(accounts.insert().values(
            id=account.id, name=account.name, kind=account.kind.value,
            created_at_us=account.created_at_us, overage_uc=0))

    def list_accounts(self) -> list[tuple[Account, int]]:
        rows = self._fetch(f"SELECT {_ACCOUNT_SELECT} FROM accounts ORDER BY id", ())
        return [(_account_from_row(r), r[4]) for r in rows]

    # -- books -------------------------------------------------------------------------------

    def load_books(self, account_ids: Iterable[str],
                   cache: MutableMapping[AccountId, Book] | None = None) -> dict[AccountId, Book]:
        """Load each account's grants (with counters), open holds and overage.

        With ``cache``, a book loaded before is reused when the account's stored version is
        still the one it was loaded at (every write bumps it), so a long import does not
        reload the same books batch after batch. On the hot path: plain driver SQL.
        """
        ids = sorted(set(account_ids))
        books: dict[AccountId, Book] = {}
        if cache is not None:
            stale = []
            for chunk in _chunks(ids):
                marks = ", ".join([self._mark] * len(chunk))
                for aid, version in self._fetch(
                        f"SELECT id, version FROM accounts WHERE id IN ({marks}){self._lock}",
                        tuple(chunk)):
                    book = cache.get(aid)
                    if book is not None and book.version == version and not book.has_changes:
                        books[aid] = book
                    else:
                        stale.append(aid)
            ids = stale
        found: dict[str, tuple[Any, ...]] = {}
        grant_rows: dict[str, list[tuple[Grant, Counters]]] = {}
        hold_rows: dict[str, list[Hold]] = {}
        kinds = _GRANT_KINDS
        for chunk in _chunks(ids):
            marks = ", ".join([self._mark] * len(chunk))
            params = tuple(chunk)
            # The account rows first (locking them in a write), then their grants and holds.
            account_rows, grant_list, hold_list = self._fetch_all([
                (f"SELECT id, name, kind, created_at_us, overage_uc, version, overage_since_us "
                 f"FROM accounts WHERE id IN ({marks}){self._lock}", params),
                (f"SELECT {_GRANT_SELECT} FROM grants WHERE account_id IN ({marks})", params),
                (f"SELECT {_HOLD_SELECT} FROM holds WHERE account_id IN ({marks}) AND status = {self._mark}",
                 (*params, HoldStatus.OPEN.value))])
            for row in account_rows:
                found[row[0]] = tuple(row)
                grant_rows[row[0]] = []
                hold_rows[row[0]] = []
            for r in grant_list:
                grant_rows[r[1]].append((
                    Grant(r[0], r[1], kinds[r[2]], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11]),
                    Counters(r[12], r[13], r[14])))
            for row in hold_list:
                hold_rows[row[1]].append(_hold_from_row(row))
        for aid, (_, name, kind, created, overage, version, since) in found.items():
            book = Book(Account(AccountId(aid), name, AccountKind(kind), created), overage,
                        grant_rows[aid], hold_rows[aid], version, since)
            books[AccountId(aid)] = book
            if cache is not None:
                cache[AccountId(aid)] = book
        return books

    def persist(self, books: Iterable[Book], recorded_at_us: int,
                grant_fps: dict[GrantId, str] | None = None,
                hold_fps: dict[HoldId, str] | None = None) -> None:
        """Write everything the books' transitions produced.

        PostgreSQL: large appends go by COPY, and the other writes are sent together in one
        pipeline (one round trip rather than one per statement).
        """
        conn = self.conn
        m = self._mark
        event_rows: list[tuple[Any, ...]] = []
        entry_rows: list[tuple[Any, ...]] = []
        closing_rows: list[tuple[Any, ...]] = []
        counter_rows: list[tuple[int, int, int, int]] = []
        overage_rows: list[tuple[int, int | None, int, str, int]] = []
        void_rows: list[tuple[Any, ...]] = []
        new_hold_rows: list[tuple[Any, ...]] = []
        ended_hold_rows: list[tuple[Any, ...]] = []
        days: dict[tuple[str, int], list[int]] = {}
        for book in books:
            for grant in book.new_grants:
                conn.execute(grants.insert().values(
                    seq=grant.seq, id=grant.id, account_id=grant.account_id, kind=grant.kind.value,
                    amount_uc=grant.amount_uc, priority=grant.priority,
                    effective_at_us=grant.effective_at_us, expires_at_us=grant.expires_at_us,
                    name=grant.name, source=grant.source, created_at_us=grant.created_at_us,
                    request_fp=(grant_fps or {}).get(grant.id, "")))
            void_rows += [(grant.voided_at_us, grant.id) for grant in book.voided]
            new_hold_rows += [(hold.id, hold.account_id, hold.amount_uc, _parts_json(hold.parts),
                               hold.created_at_us, hold.expires_at_us, hold.status.value,
                               (hold_fps or {}).get(hold.id, "")) for hold in book.new_holds]
            ended_hold_rows += [(hold.status.value, hold.settled_event_id, recorded_at_us, hold.id)
                                for hold in book.ended_holds]
            for event, charge in book.charges:
                event_rows.append((
                    event.id, event.account_id, charge.timestamp_us, event.model,
                    event.input_tokens, event.output_tokens, event.cached_input_tokens,
                    event.cache_write_tokens,
                    orjson.dumps(event.quantities).decode() if event.quantities else None,
                    orjson.dumps(event.metadata).decode() if event.metadata else None,
                    charge.cost_uc, charge.overage_uc,
                    orjson.dumps([[p.grant_id, p.amount_uc] for p in charge.allocations]).decode(),
                    charge.price_version, charge.hold_id, event.fingerprint, recorded_at_us))
                key = (event.account_id, charge.timestamp_us - charge.timestamp_us % DAY_US)
                day = days.get(key)
                if day is None:
                    days[key] = [charge.cost_uc, 1]
                else:
                    day[0] += charge.cost_uc
                    day[1] += 1
            for e in book.entries:
                row = (e.account_id, e.grant_id, e.kind.value, e.amount_uc, e.at_us, e.hold_id,
                       e.note[:255], recorded_at_us)
                (closing_rows if e.kind in _CLOSING else entry_rows).append(row)
            if book.changed:
                counters = book.counters
                for grant in book.grants:
                    if grant.id in book.changed:
                        c = counters[grant.id]
                        counter_rows.append((c.used_uc, c.held_uc, c.closed_uc, grant.seq))
            if book.has_changes:
                overage_rows.append((book.overage_uc, book.overage_since_us, book.version + 1,
                                     book.account.id, book.version))
                book.version += 1
                book.reset_changes()
        for row in closing_rows:
            # A closing entry after the first corrects it: it points at the first one.
            first = conn.exec_driver_sql(
                f"SELECT MIN(seq) FROM entries WHERE grant_id = {m} AND kind IN ('expire', 'void')",
                (row[1],)).scalar()
            conn.exec_driver_sql(
                f"INSERT INTO entries ({', '.join(_ENTRY_COLUMNS)}, corrects) "
                f"VALUES ({', '.join([m] * (len(_ENTRY_COLUMNS) + 1))})", (*row, first))
        # The writes, in order: (statement, rows) each run for every row.
        writes: list[tuple[str, list[Any]]] = [
            (f"UPDATE grants SET voided_at_us = {m} WHERE id = {m}", void_rows),
            (_insert_sql(holds, _HOLD_INSERT_COLUMNS, m), new_hold_rows),
            (f"UPDATE holds SET status = {m}, settled_event_id = {m}, ended_at_us = {m} WHERE id = {m}",
             ended_hold_rows),
        ]
        for table, columns, rows in ((events, _EVENT_COLUMNS, event_rows),
                                     (entries, _ENTRY_COLUMNS, entry_rows)):
            if self._pg and len(rows) >= 50:
                self._copy(table, columns, rows)  # COPY cannot run inside a pipeline: first
            else:
                writes.append((_insert_sql(table, columns, m), rows))
        day_rows = [(a, d, c, n) for (a, d), (c, n) in days.items()]  # one row per key: no clash
        upsert = ("INSERT INTO usage_days (account_id, day_us, cost_uc, events) VALUES {values} "
                  "ON CONFLICT (account_id, day_us) DO UPDATE SET "
                  "cost_uc = usage_days.cost_uc + excluded.cost_uc, "
                  "events = usage_days.events + excluded.events")
        if self._pg:  # one statement per 1,000 rows
            for start in range(0, len(day_rows), 1000):
                day_chunk = day_rows[start:start + 1000]
                writes.append((upsert.format(values=", ".join(["(%s, %s, %s, %s)"] * len(day_chunk))),
                               [tuple(x for row in day_chunk for x in row)]))
        else:
            writes.append((upsert.format(values=f"({m}, {m}, {m}, {m})"), day_rows))
        if not self._pg:
            for sql, rows in writes:
                if rows:
                    conn.exec_driver_sql(sql, rows)
            if counter_rows:
                conn.exec_driver_sql(
                    f"UPDATE grants SET used_uc = {m}, held_uc = {m}, closed_uc = {m} WHERE seq = {m}",
                    counter_rows)
            updated = conn.exec_driver_sql(
                f"UPDATE accounts SET overage_uc = {m}, overage_since_us = {m}, version = {m} "
                f"WHERE id = {m} AND version = {m}", overage_rows).rowcount if overage_rows else 0
        else:
            for start in range(0, len(counter_rows), 1000):
                chunk = counter_rows[start:start + 1000]
                writes.append((
                    "UPDATE grants AS g SET used_uc = v.u, held_uc = v.h, closed_uc = v.c FROM (VALUES "
                    + ", ".join(["(%s::bigint, %s::bigint, %s::bigint, %s::bigint)"] * len(chunk))
                    + ") AS v(u, h, c, seq) WHERE g.seq = v.seq", [tuple(x for r in chunk for x in r)]))
            checks = []
            for start in range(0, len(overage_rows), 1000):
                chunk_o = overage_rows[start:start + 1000]
                checks.append(len(writes))
                writes.append((
                    "UPDATE accounts AS a SET overage_uc = v.o, overage_since_us = v.s, version = v.nv "
                    "FROM (VALUES "
                    + ", ".join(["(%s::bigint, %s::bigint, %s::bigint, %s, %s::bigint)"] * len(chunk_o))
                    + ") AS v(o, s, nv, id, ov) WHERE a.id = v.id AND a.version = v.ov",
                    [tuple(x for r in chunk_o for x in r)]))
            counts = self._pipeline(writes)
            updated = sum(counts[i] for i in checks)
        # Optimistic check: each book must still be at the version it was loaded at.
        if updated != len(overage_rows):
            raise StaleWrite(f"{len(overage_rows) - updated} account(s) changed meanwhile")

    def _copy(self, table: sa.Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Append rows with COPY (PostgreSQL): several times faster than INSERTs for many rows."""
        with self._driver.cursor() as cursor, cursor.copy(
                f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _pipeline(self, writes: list[tuple[str, list[Any]]]) -> list[int]:
        """Run the writes in one pipeline (PostgreSQL); the rows each statement changed."""
        cursors = []
        try:
            with self._driver.pipeline():
                for sql, rows in writes:
                    cursor = self._driver.cursor()
                    cursors.append(cursor)
                    if len(rows) == 1:
                        cursor.execute(sql, rows[0])
                    elif rows:
                        cursor.executemany(sql, rows)
            return [cursor.rowcount for cursor in cursors]
        finally:
            for cursor in cursors:
                cursor.close()

    def next_grant_seq(self) -> int:
        if self.conn.dialect.name == "postgresql":
            return int(self.conn.exec_driver_sql(
                "SELECT nextval(pg_get_serial_sequence('grants', 'seq'))").scalar_one())
        # SQLite: the write transaction holds the database lock, so max + 1 is ours (and the
        # next one after it, for several grants in one transaction).
        if self._last_grant_seq is None:
            self._last_grant_seq = self.conn.execute(sa.select(sa.func.max(grants.c.seq))).scalar() or 0
        self._last_grant_seq += 1
        return self._last_grant_seq

    # -- lookups -----------------------------------------------------------------------------

    def get_grant(self, grant_id: str) -> GrantRow | None:
        row = self.conn.execute(sa.select(grants).where(grants.c.id == grant_id)).first()
        if row is None:
            return None
        return GrantRow(_grant_from_row(row), row.used_uc, row.held_uc, row.closed_uc, row.request_fp)

    def grant_rows(self, account_ids: Sequence[str] | None) -> list[GrantRow]:
        query = sa.select(grants).order_by(grants.c.seq)
        if account_ids is not None:
            query = query.where(grants.c.account_id.in_(list(account_ids)))
        return [GrantRow(_grant_from_row(r), r.used_uc, r.held_uc, r.closed_uc, r.request_fp)
                for r in self.conn.execute(query)]

    def get_hold(self, hold_id: str) -> tuple[Hold, str] | None:
        rows = self._fetch(f"SELECT {_HOLD_SELECT}, request_fp FROM holds WHERE id = {self._mark}",
                           (hold_id,))
        return (_hold_from_row(rows[0]), rows[0][8]) if rows else None

    def find_events(self, event_ids: Sequence[str]) -> dict[str, StoredEvent]:
        """The stored events among ``event_ids`` (usually none: a cheap index probe first)."""
        known: list[str] = []
        for chunk in _chunks(list(event_ids)):
            marks = ", ".join([self._mark] * len(chunk))
            known += [row[0] for row in self.conn.exec_driver_sql(
                f"SELECT id FROM events WHERE id IN ({marks})", tuple(chunk))]
        found: dict[str, StoredEvent] = {}
        for chunk in _chunks(known):
            for row in self.conn.execute(sa.select(events).where(events.c.id.in_(chunk))):
                found[row.id] = _stored_event(row)
        return found

    def list_events(self, account_ids: Sequence[str], from_us: int | None, to_us: int | None,
                    model: str | None, limit: int | None, before: tuple[int, int] | None = None,
                    max_seq: int | None = None) -> Iterator[StoredEvent]:
        """Accounts' events, newest first (timestamp, then recording order), ``from_us <= ts <
        to_us``; ``before`` = (ts, seq) continues a page, ``max_seq`` hides later recordings."""
        query = sa.select(events).where(*self._event_filter(account_ids, from_us, to_us, model))
        if before is not None:
            query = query.where(sa.tuple_(events.c.ts_us, events.c.seq) < sa.tuple_(*before))
        if max_seq is not None:
            query = query.where(events.c.seq <= max_seq)
        query = query.order_by(events.c.ts_us.desc(), events.c.seq.desc())
        if limit is not None:
            query = query.limit(limit)
        for row in self.conn.execute(query):
            yield _stored_event(row)

    @staticmethod
    def _event_filter(account_ids: Sequence[str], from_us: int | None, to_us: int | None,
                      model: str | None) -> list[Any]:
        where: list[Any] = [events.c.account_id == account_ids[0] if len(account_ids) == 1
                            else events.c.account_id.in_(account_ids)]
        if from_us is not None:
            where.append(events.c.ts_us >= from_us)
        if to_us is not None:
            where.append(events.c.ts_us < to_us)
        if model is not None:
            where.append(events.c.model == model)
        return where

    def last_event_seq(self) -> int:
        return int(self._fetch("SELECT max(seq) FROM events", ())[0][0] or 0)

    def used_between(self, account_id: str, from_us: int, to_us: int) -> int:
        """Credits charged (µc) for events with ``from_us <= ts < to_us``: whole days from the
        daily rollup, the part-days at either end from the events (so at most two days of them)."""
        m = self._mark
        first_day = -(-from_us // DAY_US) * DAY_US
        last_day = to_us // DAY_US * DAY_US
        events_sql = (f"SELECT sum(cost_uc) FROM events WHERE account_id = {m} AND ts_us >= {m} "
                      f"AND ts_us < {m}")
        if first_day >= last_day:
            return int(self._fetch(events_sql, (account_id, from_us, to_us))[0][0] or 0)
        head, days, tail = self._fetch_all([
            (events_sql, (account_id, from_us, first_day)),
            (f"SELECT sum(cost_uc) FROM usage_days WHERE account_id = {m} AND day_us >= {m} "
             f"AND day_us < {m}", (account_id, first_day, last_day)),
            (events_sql, (account_id, last_day, to_us))])
        return sum(int(rows[0][0] or 0) for rows in (head, days, tail))

    def usage_summary(self, account_ids: Sequence[str], from_us: int | None, to_us: int | None,
                      model: str | None, group_by: str) -> list[SummaryRow]:
        """Requests, tokens and credits per UTC day (``day``) or per model (``model``)."""
        key = (events.c.ts_us - events.c.ts_us % DAY_US if group_by == "day"
               else sa.func.coalesce(events.c.model, ""))
        query = (sa.select(key.label("key"), sa.func.count(), sa.func.sum(events.c.input_tokens),
                           sa.func.sum(events.c.output_tokens), sa.func.sum(events.c.cached_input_tokens),
                           sa.func.sum(events.c.cache_write_tokens), sa.func.sum(events.c.cost_uc))
                 .where(*self._event_filter(account_ids, from_us, to_us, model))
                 .group_by(key).order_by(key))
        return [SummaryRow(r[0], *(int(v) for v in r[1:])) for r in self.conn.execute(query)]

    # -- keys and members --------------------------------------------------------------------

    def insert_key(self, key: ApiKey, key_digest: str) -> None:
        self.conn.execute(api_keys.insert().values(
            id=key.id, hash=key_digest, prefix=key.prefix, role=key.role.value,
            account_id=key.account_id, name=key.name, created_at_us=key.created_at_us))

    def find_key(self, key_digest: str) -> tuple[ApiKey, str] | None:
        rows = self._fetch(f"SELECT {_KEY_SELECT} FROM api_keys WHERE hash = {self._mark}", (key_digest,))
        return (_key_from_row(rows[0]), rows[0][1]) if rows else None

    def get_key(self, key_id: str) -> ApiKey | None:
        rows = self._fetch(f"SELECT {_KEY_SELECT} FROM api_keys WHERE id = {self._mark}", (key_id,))
        return _key_from_row(rows[0]) if rows else None

    def list_keys(self, account_id: str | None) -> list[ApiKey]:
        if account_id is None:
            rows = self._fetch(f"SELECT {_KEY_SELECT} FROM api_keys ORDER BY created_at_us, id", ())
        else:
            rows = self._fetch(f"SELECT {_KEY_SELECT} FROM api_keys WHERE account_id = {self._mark} "
                               "ORDER BY created_at_us, id", (account_id,))
        return [_key_from_row(r) for r in rows]

    def revoke_key(self, key_id: str, at_us: int) -> None:
        self.conn.execute(api_keys.update().where(api_keys.c.id == key_id,
                                                  api_keys.c.revoked_at_us.is_(None))
                          .values(revoked_at_us=at_us))

    def administered(self, account_id: str) -> list[str]:
        """The enterprises ``account_id`` is an admin of."""
        return [r[0] for r in self._fetch(
            f"SELECT enterprise_id FROM members WHERE account_id = {self._mark} AND role = {self._mark}",
            (account_id, MemberRole.ADMIN.value))]

    def member_role(self, enterprise_id: str, account_id: str) -> MemberRole | None:
        role = self.conn.execute(sa.select(members.c.role).where(
            members.c.enterprise_id == enterprise_id, members.c.account_id == account_id)).scalar()
        return MemberRole(role) if role else None

    # -- plans and subscriptions -------------------------------------------------------------

    def insert_plan_catalog(self, catalog: PlanCatalog, loaded_at_us: int, source: str) -> int:
        result = self.conn.execute(plan_catalogs.insert().values(
            loaded_at_us=loaded_at_us, source=source[:255],
            catalog=orjson.dumps(catalog.to_dict()).decode()).returning(plan_catalogs.c.version))
        return int(result.scalar_one())

    def latest_plan_catalog(self) -> tuple[int, PlanCatalog] | None:
        rows = self._fetch("SELECT version, catalog FROM plan_catalogs ORDER BY version DESC LIMIT 1", ())
        return (int(rows[0][0]), parse_plans(orjson.loads(rows[0][1]))) if rows else None

    def insert_subscription(self, sub: Subscription, request_fp: str) -> None:
        self.conn.execute(subscriptions.insert().values(
            id=sub.id, account_id=sub.account_id, plan_id=sub.plan.id,
            plan=orjson.dumps(sub.plan.to_dict()).decode(), seats=sub.seats, anchor_us=sub.anchor_us,
            created_at_us=sub.created_at_us, next_period=sub.next_period,
            next_start_us=sub.next_start_us(), cancel_at_us=sub.cancel_at_us,
            cancelled_at_us=sub.cancelled_at_us, request_fp=request_fp))

    def update_subscription(self, sub: Subscription) -> None:
        self.conn.execute(subscriptions.update().where(subscriptions.c.id == sub.id).values(
            next_period=sub.next_period, next_start_us=sub.next_start_us(),
            cancel_at_us=sub.cancel_at_us, cancelled_at_us=sub.cancelled_at_us))

    def get_subscription(self, subscription_id: str) -> tuple[Subscription, str] | None:
        rows = self._fetch(f"SELECT {_SUBSCRIPTION_SELECT}, request_fp FROM subscriptions "
                           f"WHERE id = {self._mark}", (subscription_id,))
        return (_subscription_from_row(rows[0]), rows[0][9]) if rows else None

    def list_subscriptions(self, account_id: str) -> list[Subscription]:
        rows = self._fetch(f"SELECT {_SUBSCRIPTION_SELECT} FROM subscriptions "
                           f"WHERE account_id = {self._mark} ORDER BY anchor_us, id", (account_id,))
        return [_subscription_from_row(r) for r in rows]

    def subscriptions_due(self, at_us: int) -> list[tuple[str, str]]:
        """(account, subscription) of every subscription with a period to grant by ``at_us``."""
        rows = self.conn.execute(sa.select(subscriptions.c.account_id, subscriptions.c.id)
                                 .where(subscriptions.c.next_start_us <= at_us)
                                 .order_by(subscriptions.c.account_id, subscriptions.c.id))
        return [(r[0], r[1]) for r in rows]

    # -- enterprises -------------------------------------------------------------------------

    def upsert_member(self, member: Member) -> None:
        m = self._mark
        updated = self.conn.exec_driver_sql(
            f"UPDATE members SET role = {m} WHERE enterprise_id = {m} AND account_id = {m}",
            (member.role.value, member.enterprise_id, member.account_id)).rowcount
        if not updated:
            self.conn.execute(members.insert().values(
                enterprise_id=member.enterprise_id, account_id=member.account_id, role=member.role.value,
                added_at_us=member.added_at_us))

    def delete_member(self, enterprise_id: str, account_id: str) -> bool:
        return bool(self.conn.execute(members.delete().where(
            members.c.enterprise_id == enterprise_id, members.c.account_id == account_id)).rowcount)

    def list_members(self, enterprise_id: str) -> list[Member]:
        rows = self._fetch(f"SELECT enterprise_id, account_id, role, added_at_us FROM members "
                           f"WHERE enterprise_id = {self._mark} ORDER BY account_id", (enterprise_id,))
        return [Member(r[0], r[1], MemberRole(r[2]), r[3]) for r in rows]

    def insert_allocation(self, allocation: QuotaAllocation, request_fp: str) -> None:
        self.conn.execute(allocations.insert().values(
            id=allocation.id, enterprise_id=allocation.enterprise_id, member_id=allocation.member_id,
            amount_uc=allocation.amount_uc, parts=_parts_json(allocation.parts),
            created_at_us=allocation.created_at_us, request_fp=request_fp))

    def revoke_allocation(self, allocation_id: str, at_us: int, returned_uc: int) -> None:
        self.conn.execute(allocations.update().where(allocations.c.id == allocation_id).values(
            revoked_at_us=at_us, returned_uc=returned_uc))

    def get_allocation(self, allocation_id: str) -> tuple[QuotaAllocation, str] | None:
        rows = self._fetch(f"SELECT {_ALLOCATION_SELECT}, request_fp FROM allocations "
                           f"WHERE id = {self._mark}", (allocation_id,))
        return (_allocation_from_row(rows[0]), rows[0][8]) if rows else None

    def list_allocations(self, enterprise_id: str) -> list[QuotaAllocation]:
        rows = self._fetch(f"SELECT {_ALLOCATION_SELECT} FROM allocations "
                           f"WHERE enterprise_id = {self._mark} ORDER BY created_at_us, id", (enterprise_id,))
        return [_allocation_from_row(r) for r in rows]

    # -- prices ------------------------------------------------------------------------------

    def price_versions(self) -> list[PriceVersion]:
        rows = self.conn.execute(sa.select(price_versions).order_by(price_versions.c.version))
        return [PriceVersion(r.version, r.effective_at_us, parse_catalog(orjson.loads(r.catalog)))
                for r in rows]

    def latest_price_version(self) -> int:
        return int(self._fetch("SELECT max(version) FROM price_versions", ())[0][0] or 0)

    def insert_price_version(self, catalog: Catalog, effective_at_us: int, loaded_at_us: int,
                             source: str) -> int:
        result = self.conn.execute(price_versions.insert().values(
            effective_at_us=effective_at_us, loaded_at_us=loaded_at_us, source=source[:255],
            catalog=orjson.dumps(catalog.to_dict()).decode()).returning(price_versions.c.version))
        return int(result.scalar_one())

    # -- tick and reconcile ------------------------------------------------------------------

    def accounts_to_tick(self, at_us: int) -> list[str]:
        """Accounts with a hold past its ttl, an unrecorded expiry/void, or unpaid overage."""
        q_holds = sa.select(holds.c.account_id).where(
            holds.c.status == HoldStatus.OPEN.value, holds.c.expires_at_us <= at_us)
        terminal = sa.or_(grants.c.expires_at_us <= at_us, grants.c.voided_at_us <= at_us)
        q_grants = sa.select(grants.c.account_id).where(
            terminal,
            grants.c.amount_uc - grants.c.used_uc - grants.c.held_uc - grants.c.closed_uc != 0)
        q_overage = sa.select(accounts.c.id).where(accounts.c.overage_uc > 0)
        union = sa.union(q_holds, q_grants, q_overage).subquery()
        return sorted(self.conn.execute(sa.select(union.c[0])).scalars())

    def ledger_totals(self, account_ids: Sequence[str] | None) -> LedgerTotals:
        def scoped(query: Any, column: Any) -> Any:
            return query if account_ids is None else query.where(column.in_(list(account_ids)))

        owners = {gid: aid for gid, aid in self.conn.execute(
            scoped(sa.select(grants.c.id, grants.c.account_id), grants.c.account_id))}
        strays: list[str] = []

        def owned(what: str, gid: str, aid: str) -> None:
            if owners.get(gid) != aid:
                strays.append(f"{what} on grant {gid!r} of account {owners.get(gid)!r}, not {aid!r}")

        entry_sums: dict[tuple[str, str], int] = {}
        payoffs: dict[str, int] = {}
        first_close: dict[str, int] = {}
        q = scoped(sa.select(entries.c.account_id, entries.c.grant_id, entries.c.kind,
                             sa.func.sum(entries.c.amount_uc), sa.func.min(entries.c.at_us))
                   .group_by(entries.c.account_id, entries.c.grant_id, entries.c.kind),
                   entries.c.account_id)
        for aid, gid, kind, total, first_at in self.conn.execute(q):
            if gid is not None:
                owned(f"{kind} entries", gid, aid)
            entry_sums[(gid, kind)] = entry_sums.get((gid, kind), 0) + int(total)
            if kind == EntryKind.PAYOFF.value:
                payoffs[aid] = payoffs.get(aid, 0) + int(total)
            if kind == EntryKind.EXPIRE.value:
                first_close[gid] = int(first_at)
        allocated: dict[str, int] = {}
        event_overage: dict[str, int] = {}
        bad_events: list[str] = []
        settles: dict[str, int] = {}
        q = scoped(sa.select(events.c.id, events.c.account_id, events.c.cost_uc,
                             events.c.overage_uc, events.c.allocations, events.c.hold_id),
                   events.c.account_id)
        for eid, aid, cost, overage, parts_text, hold_id in self.conn.execution_options(
                yield_per=10_000).execute(q):
            total = overage
            ok = overage >= 0
            for gid, amount in orjson.loads(parts_text):
                allocated[gid] = allocated.get(gid, 0) + amount
                total += amount
                ok = ok and amount > 0
                if owners.get(gid) != aid:
                    owned(f"event {eid!r}", gid, aid)
            if total != cost or not ok:
                bad_events.append(eid)
            event_overage[aid] = event_overage.get(aid, 0) + overage
            if hold_id is not None:
                settles[hold_id] = settles.get(hold_id, 0) + 1
        open_parts: dict[str, int] = {}
        bad_holds: list[str] = []
        q = scoped(sa.select(holds.c.id, holds.c.account_id, holds.c.amount_uc, holds.c.parts,
                             holds.c.status), holds.c.account_id)
        for hid, aid, amount, parts_text, status in self.conn.execute(q):
            parts = orjson.loads(parts_text)
            if sum(a for _, a in parts) != amount or settles.get(hid, 0) > 1:
                bad_holds.append(hid)
            for gid, a in parts:
                owned(f"hold {hid!r}", gid, aid)
                if status == HoldStatus.OPEN.value:
                    open_parts[gid] = open_parts.get(gid, 0) + a
        for hid, count in settles.items():
            if count > 1 and hid not in bad_holds:
                bad_holds.append(hid)
        return LedgerTotals(entry_sums, allocated, open_parts, event_overage, payoffs,
                            bad_events, bad_holds, strays, first_close, self._bad_days(account_ids))

    def _bad_days(self, account_ids: Sequence[str] | None) -> list[str]:
        """(account, day) rollups that differ from the events they sum."""
        day = events.c.ts_us - events.c.ts_us % DAY_US
        q = sa.select(events.c.account_id, day, sa.func.sum(events.c.cost_uc), sa.func.count()).group_by(
            events.c.account_id, day)
        r = sa.select(usage_days.c.account_id, usage_days.c.day_us, usage_days.c.cost_uc, usage_days.c.events)
        if account_ids is not None:
            q = q.where(events.c.account_id.in_(list(account_ids)))
            r = r.where(usage_days.c.account_id.in_(list(account_ids)))
        derived = {(a, int(d)): (int(c), int(n)) for a, d, c, n in self.conn.execute(q)}
        stored = {(a, int(d)): (int(c), int(n)) for a, d, c, n in self.conn.execute(r)}
        return [f"{a} {d}" for a, d in sorted(set(derived) | set(stored))
                if derived.get((a, d)) != stored.get((a, d))]
