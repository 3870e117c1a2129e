"""The read side of a SQL transaction: accounts and their books, events and usage, keys,
members, plans, subscriptions, quota allocations and prices.

The hot paths (books, lookups by id) read through the driver with plain SQL; the others build
their queries with SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from creditmeter.domain import (
    Account,
    AccountId,
    AccountKind,
    Grant,
    Hold,
    HoldStatus,
    StoredEvent,
)
from creditmeter.enterprise import Member, QuotaAllocation
from creditmeter.invariants import GrantRow
from creditmeter.keys import ApiKey, MemberRole
from creditmeter.ledger import Book, Counters
from creditmeter.plans import PlanCatalog, parse_plans
from creditmeter.pricing import PriceVersion, parse_catalog
from creditmeter.store.driver import DriverTransaction
from creditmeter.store.rows import (
    ACCOUNT_SELECT,
    ALLOCATION_SELECT,
    EVENT_SELECT,
    GRANT_KINDS,
    GRANT_SELECT,
    HOLD_SELECT,
    KEY_SELECT,
    SUBSCRIPTION_SELECT,
    EventRow,
    account_from_row,
    allocation_from_row,
    chunks,
    grant_row_from_row,
    hold_from_row,
    key_from_row,
    stored_event,
    subscription_from_row,
)
from creditmeter.store.schema import accounts, events, grants, holds, members, price_versions, subscriptions
from creditmeter.subscriptions import Subscription
from creditmeter.terms import terms_from_json
from creditmeter.timeutil import DAY_US, MAX_US

OPEN = HoldStatus.OPEN.value
ANY_EXPIRY = 2**63 - 1  # past every hold's expiry: a book given every open hold
STREAM_ROWS = 1_000  # events fetched at a time by a listing longer than a page


class Reads(DriverTransaction):
    """What a transaction reads."""

    # -- accounts and books ------------------------------------------------------------------

    def get_account(self, account_id: str) -> tuple[Account, int] | None:
        rows = self._fetch(f"SELECT {ACCOUNT_SELECT} FROM accounts WHERE id = {self._mark}", (account_id,))
        return (account_from_row(rows[0]), rows[0][4]) if rows else None

    def list_accounts(self) -> list[tuple[Account, int]]:
        rows = self._fetch(f"SELECT {ACCOUNT_SELECT} FROM accounts ORDER BY id", ())
        return [(account_from_row(r), r[4]) for r in rows]

    def load_books(self, account_ids: Iterable[str],
                   cache: MutableMapping[AccountId, Book] | None = None,
                   lapsed_by_us: int | None = None) -> dict[AccountId, Book]:
        """Load each account's grants (with counters), overage and the open holds whose ttl
        passed by ``lapsed_by_us`` (None: every open hold), found through the index on the open
        holds' expiry: a command brought to that instant needs no other (see ``Book``).

        With ``cache``, a book loaded before is reused when the account's stored version is
        still the one it was loaded at (every write bumps it), so a long import does not
        reload the same books batch after batch. On the hot path: plain driver SQL.
        """
        ids = sorted(set(account_ids))
        books: dict[AccountId, Book] = {}
        through = MAX_US if lapsed_by_us is None else lapsed_by_us
        if cache is not None:
            ids = self._reuse_books(ids, cache, books, through)
        for chunk in chunks(ids):
            ids_in, params = self._among("id", chunk)
            accounts_in, _ = self._among("account_id", chunk)
            loaded = self._load(ids_in, accounts_in, params, through)
            books.update(loaded)
            if cache is not None:
                cache.update(loaded)
        return books

    def load_book_of_hold(self, hold_id: str, lapsed_by_us: int) -> Book | None:
        """:meth:`load_books` of the account ``hold_id`` was made on (None: no such hold),
        found by the statements that load it (a hold's account never changes): no lookup first."""
        account = f"(SELECT account_id FROM holds WHERE id = {self._mark})"
        books = self._load(f"id = {account}", f"account_id = {account}", (hold_id,), lapsed_by_us)
        return next(iter(books.values()), None)

    def _load(self, ids_in: str, accounts_in: str, params: tuple[Any, ...],
              through: int) -> dict[AccountId, Book]:
        """The books of the accounts ``ids_in`` (a condition on accounts.id) and ``accounts_in``
        (the same on account_id) name, with ``params``; the account rows first (locking them in
        a write), then their grants and holds."""
        found: dict[str, tuple[Any, ...]] = {}
        grant_rows: dict[str, list[tuple[Grant, Counters]]] = {}
        hold_rows: dict[str, list[Hold]] = {}
        kinds = GRANT_KINDS
        account_rows, grant_list, hold_list = self._fetch_all([
            (f"SELECT id, name, kind, created_at_us, overage_uc, version, overage_since_us, terms "
             f"FROM accounts WHERE {ids_in}{self._lock}", params),
            (f"SELECT {GRANT_SELECT} FROM grants WHERE {accounts_in}", params),
            self._lapsed_sql(accounts_in, params, through)])
        for row in account_rows:
            found[row[0]] = tuple(row)
            grant_rows[row[0]] = []
            hold_rows[row[0]] = []
        for r in grant_list:
            grant_rows[r[1]].append((
                Grant(r[0], r[1], kinds[r[2]], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11]),
                Counters(r[12], r[13], r[14])))
        for row in hold_list:
            hold_rows[row[1]].append(hold_from_row(row))
        return {AccountId(aid): Book(Account(AccountId(aid), name, AccountKind(kind), created), overage,
                                     grant_rows[aid], hold_rows[aid], version, since,
                                     terms_from_json(terms) if terms else None, through)
                for aid, (_, name, kind, created, overage, version, since, terms) in found.items()}

    def _lapsed_sql(self, accounts_in: str, params: tuple[Any, ...],
                    through_us: int) -> tuple[str, tuple[Any, ...]]:
        """The open holds of the accounts ``accounts_in`` (a condition on account_id) names whose
        ttl passed by ``through_us`` (the status a literal: the partial index on open holds
        serves it whatever plan the server keeps)."""
        return (f"SELECT {HOLD_SELECT} FROM holds WHERE {accounts_in} AND status = '{OPEN}' "
                f"AND expires_at_us <= {self._mark}",
                (*params, through_us if through_us < MAX_US else ANY_EXPIRY))

    def _reuse_books(self, ids: list[str], cache: MutableMapping[AccountId, Book],
                     books: dict[AccountId, Book], through_us: int) -> list[str]:
        """Put the cached books still at their stored version into ``books``, with the holds
        lapsed since they were loaded; the ids to load."""
        stale = []
        behind: list[Book] = []
        for chunk in chunks(ids):
            among, params = self._among("id", chunk)
            for aid, version in self._fetch(
                    f"SELECT id, version FROM accounts WHERE {among}{self._lock}", params):
                book = cache.get(aid)
                if book is not None and book.version == version and not book.has_changes:
                    books[aid] = book
                    if book.holds_through_us < through_us:
                        behind.append(book)
                else:
                    stale.append(aid)
        for chunk in chunks(behind):
            lapsed: dict[str, list[Hold]] = {}
            among, params = self._among("account_id", [b.account.id for b in chunk])
            for row in self._fetch(*self._lapsed_sql(among, params, through_us)):
                lapsed.setdefault(row[1], []).append(hold_from_row(row))
            for book in chunk:
                for hold in lapsed.get(book.account.id, ()):
                    book.take_hold(hold)
                book.holds_through_us = through_us
        return stale

    def open_holds_uc(self, account_id: str, key_id: str | None = None) -> int:
        """What the account's open holds (those made with ``key_id``, when given) hold in all,
        as stored: summed through the index on open holds."""
        sql = (f"SELECT coalesce(sum(amount_uc), 0) FROM holds WHERE account_id = {self._mark} "
               f"AND status = '{OPEN}'")
        params: tuple[Any, ...] = (account_id,)
        if key_id is not None:
            sql += f" AND key_id = {self._mark}"
            params = (account_id, key_id)
        return int(self._fetch(sql, params)[0][0])

    def accounts_to_tick(self, at_us: int) -> list[str]:
        """Accounts with a hold past its ttl, an unrecorded expiry/void, unpaid overage, or terms."""
        q_holds = sa.select(holds.c.account_id).where(
            holds.c.status == HoldStatus.OPEN.value, holds.c.expires_at_us <= at_us)
        terminal = sa.or_(grants.c.expires_at_us <= at_us, grants.c.voided_at_us <= at_us)
        q_grants = sa.select(grants.c.account_id).where(
            terminal,
            grants.c.amount_uc - grants.c.used_uc - grants.c.held_uc - grants.c.closed_uc != 0)
        q_overage = sa.select(accounts.c.id).where(accounts.c.overage_uc > 0)
        # Accounts whose terms roll credits over: rollovers are made for history (a write or a read
        # already makes or derives them). Packages of new periods need no tick.
        q_terms = sa.select(accounts.c.id).where(accounts.c.terms.like('%"rollover"%'))
        union = sa.union(q_holds, q_grants, q_overage, q_terms).subquery()
        return sorted(self.conn.execute(sa.select(union.c[0])).scalars())

    # -- lookups -----------------------------------------------------------------------------

    def get_grant(self, grant_id: str) -> GrantRow | None:
        row = self.conn.execute(sa.select(grants).where(grants.c.id == grant_id)).first()
        return None if row is None else grant_row_from_row(row)

    def look_ahead(self, *, hold_id: str | None = None, event_id: str | None = None,
                   price_version: bool = False) -> None:
        """Send these lookups with the next load of books: on PostgreSQL in its pipeline, after
        its locks (no round trip of their own); ``get_hold``, ``find_events`` and
        ``latest_price_version`` then answer from them, once."""
        if hold_id is not None:
            self._send_ahead(("hold", hold_id), self._HOLD_BY_ID.format(m=self._mark), (hold_id,))
        if event_id is not None:
            self._send_ahead(("events", (event_id,)), f"SELECT id FROM events WHERE id IN ({self._mark})",
                             (event_id,))
        if price_version:
            self._send_ahead(("price_version",), self._LATEST_PRICES, ())

    _HOLD_BY_ID = f"SELECT {HOLD_SELECT}, request_fp FROM holds WHERE id = {{m}}"
    _LATEST_PRICES = "SELECT max(version) FROM price_versions"

    def get_hold(self, hold_id: str) -> tuple[Hold, str] | None:
        rows = self._answered(("hold", hold_id))
        if rows is None:
            rows = self._fetch(self._HOLD_BY_ID.format(m=self._mark), (hold_id,))
        return (hold_from_row(rows[0]), rows[0][10]) if rows else None

    # -- events and usage --------------------------------------------------------------------

    def find_events(self, event_ids: Sequence[str]) -> dict[str, StoredEvent]:
        """The stored events among ``event_ids`` (usually none: a cheap index probe first)."""
        known: list[str] = []
        for chunk in chunks(list(event_ids)):
            rows = self._answered(("events", tuple(chunk)))
            if rows is None:
                among, params = self._among("id", chunk)
                rows = self._fetch(f"SELECT id FROM events WHERE {among}", params)
            known += [row[0] for row in rows]
        found: dict[str, StoredEvent] = {}
        # Straight from the driver too: a query built with SQLAlchemy leaves cycles behind.
        for chunk in chunks(known):
            among, params = self._among("id", chunk)
            for row in self._fetch(f"SELECT {EVENT_SELECT} FROM events WHERE {among}", params):
                stored = stored_event(EventRow(*row))
                found[stored.event.id] = stored
        return found

    def list_events(self, account_ids: Sequence[str], from_us: int | None, to_us: int | None,
                    model: str | None, limit: int | None, before: tuple[int, int] | None = None,
                    max_seq: int | None = None,
                    paid_by: Sequence[str] | None = None) -> Iterator[StoredEvent]:
        """Accounts' events, newest first (timestamp, then recording order), ``from_us <= ts <
        to_us``; ``before`` = (ts, seq) continues a page, ``max_seq`` hides later recordings.

        ``paid_by`` keeps only the events with a part paid from one of these packages: the
        accounts' index range is read, and each row's stored parts are unpacked in the database
        (JSON functions of each dialect) and their package ids compared exactly."""
        query = sa.select(events).where(*self._event_filter(account_ids, from_us, to_us, model))
        if paid_by is not None:
            query = query.where(self._paid_by(paid_by))
        if before is not None:
            query = query.where(sa.tuple_(events.c.ts_us, events.c.seq) < sa.tuple_(*before))
        if max_seq is not None:
            query = query.where(events.c.seq <= max_seq)
        query = query.order_by(events.c.ts_us.desc(), events.c.seq.desc())
        if limit is not None:
            query = query.limit(limit)
        # Past a page, rows are fetched a batch at a time (on PostgreSQL through a server-side
        # cursor): a listing of any length, an export, holds one batch in memory.
        if limit is None or limit > STREAM_ROWS:
            query = query.execution_options(yield_per=STREAM_ROWS)
        if self._pg:
            # Read in the order of the (account, time, seq) index, never "fetch all, then
            # sort": with statistics missing or stale the planner takes an account's older
            # events for a few rows and sorts them all, for every page. The plan is made when
            # the statement runs (a server-side cursor's too): the setting ends with it.
            self.conn.exec_driver_sql("SET LOCAL enable_sort = off")
        result = self.conn.execute(query)  # failing, it ends the transaction, and the setting with it
        if self._pg:
            self.conn.exec_driver_sql("RESET enable_sort")
        try:
            for row in result:
                yield stored_event(row)
        finally:
            result.close()  # a listing left early closes its cursor

    def _paid_by(self, grant_ids: Sequence[str]) -> Any:
        """An event has a part (``[grant_id, amount]`` in its stored parts) paid by one of these."""
        if self._pg:
            parts: Any = sa.func.jsonb_array_elements(
                sa.cast(events.c.allocations, JSONB)).table_valued("value").alias("part")
            grant_id = parts.c.value.op("->>")(0)
        else:
            parts = sa.func.json_each(events.c.allocations).table_valued("value").alias("part")
            grant_id = sa.func.json_extract(parts.c.value, "$[0]")
        return sa.exists(sa.select(1).select_from(parts).where(grant_id.in_(list(grant_ids))))

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

    def window_usage(self, account_id: str, from_us: int, to_us: int | None, *,
                     key_id: str | None = None) -> list[tuple[int, int, str]]:
        """(time, credits, packages that paid as JSON) of each event with ``from_us <= ts < to_us``
        (no end: all from ``from_us``), oldest first; with ``key_id``, only the settlements of
        holds made with that key. Read through the (account, time) index: bounded by the window."""
        m = self._mark
        end = "" if to_us is None else f" AND e.ts_us < {m}"
        params: tuple[Any, ...] = (account_id, from_us) + (() if to_us is None else (to_us,))
        if key_id is None:
            sql = (f"SELECT e.ts_us, e.cost_uc, e.allocations FROM events e WHERE e.account_id = {m} "
                   f"AND e.ts_us >= {m}{end} ORDER BY e.ts_us")
        else:
            sql = (f"SELECT e.ts_us, e.cost_uc, e.allocations FROM events e JOIN holds h ON h.id = e.hold_id "
                   f"WHERE e.account_id = {m} AND e.ts_us >= {m}{end} AND h.key_id = {m} ORDER BY e.ts_us")
            params = (*params, key_id)
        return [(int(r[0]), int(r[1]), r[2]) for r in self._fetch(sql, params)]

    def fallback_holds_since(self, account_id: str, from_us: int, to_us: int) -> int:
        """How many holds for a fallback model the account made in ``[from_us, to_us)``, but
        those released (the upstream failed: nothing was served)."""
        m = self._mark
        rows = self._fetch(f"SELECT count(*) FROM holds WHERE account_id = {m} AND created_at_us >= {m} "
                           f"AND created_at_us < {m} AND fallback = {m} AND status <> {m}",
                           (account_id, from_us, to_us, True, HoldStatus.RELEASED.value))
        return int(rows[0][0] or 0)

    # -- keys and members --------------------------------------------------------------------

    def find_key(self, key_digest: str) -> tuple[ApiKey, str] | None:
        rows = self._fetch(f"SELECT {KEY_SELECT} FROM api_keys WHERE hash = {self._mark}", (key_digest,))
        return (key_from_row(rows[0]), rows[0][1]) if rows else None

    def get_key(self, key_id: str) -> ApiKey | None:
        rows = self._fetch(f"SELECT {KEY_SELECT} FROM api_keys WHERE id = {self._mark}", (key_id,))
        return key_from_row(rows[0]) if rows else None

    def list_keys(self, account_id: str | None) -> list[ApiKey]:
        if account_id is None:
            rows = self._fetch(f"SELECT {KEY_SELECT} FROM api_keys ORDER BY created_at_us, id", ())
        else:
            rows = self._fetch(f"SELECT {KEY_SELECT} FROM api_keys WHERE account_id = {self._mark} "
                               "ORDER BY created_at_us, id", (account_id,))
        return [key_from_row(r) for r in rows]

    def administered(self, account_id: str) -> list[str]:
        """The enterprises ``account_id`` is an admin of."""
        return [r[0] for r in self._fetch(
            f"SELECT enterprise_id FROM members WHERE account_id = {self._mark} AND role = {self._mark}",
            (account_id, MemberRole.ADMIN.value))]

    def member_role(self, enterprise_id: str, account_id: str) -> MemberRole | None:
        role = self.conn.execute(sa.select(members.c.role).where(
            members.c.enterprise_id == enterprise_id, members.c.account_id == account_id)).scalar()
        return MemberRole(role) if role else None

    def list_members(self, enterprise_id: str) -> list[Member]:
        rows = self._fetch(f"SELECT enterprise_id, account_id, role, added_at_us FROM members "
                           f"WHERE enterprise_id = {self._mark} ORDER BY account_id", (enterprise_id,))
        return [Member(r[0], r[1], MemberRole(r[2]), r[3]) for r in rows]

    def get_allocation(self, allocation_id: str) -> tuple[QuotaAllocation, str] | None:
        rows = self._fetch(f"SELECT {ALLOCATION_SELECT}, request_fp FROM allocations "
                           f"WHERE id = {self._mark}", (allocation_id,))
        return (allocation_from_row(rows[0]), rows[0][8]) if rows else None

    def list_allocations(self, enterprise_id: str) -> list[QuotaAllocation]:
        rows = self._fetch(f"SELECT {ALLOCATION_SELECT} FROM allocations "
                           f"WHERE enterprise_id = {self._mark} ORDER BY created_at_us, id", (enterprise_id,))
        return [allocation_from_row(r) for r in rows]

    def quota_grant_ids(self, enterprise_id: str, member_id: str) -> list[str]:
        """The grants an enterprise's allocations put on a member (revoked ones too), found
        from the member's own grants (index on the account) and the allocations' keys."""
        m = self._mark
        return [r[0] for r in self._fetch(
            f"SELECT g.id FROM grants g JOIN allocations a ON a.id = g.id "
            f"WHERE g.account_id = {m} AND a.enterprise_id = {m} AND a.member_id = {m}",
            (member_id, enterprise_id, member_id))]

    # -- plans, subscriptions and prices -----------------------------------------------------

    def latest_plan_catalog(self) -> tuple[int, PlanCatalog] | None:
        rows = self._fetch("SELECT version, catalog FROM plan_catalogs ORDER BY version DESC LIMIT 1", ())
        return (int(rows[0][0]), parse_plans(orjson.loads(rows[0][1]))) if rows else None

    def get_subscription(self, subscription_id: str) -> tuple[Subscription, str] | None:
        rows = self._fetch(f"SELECT {SUBSCRIPTION_SELECT}, request_fp FROM subscriptions "
                           f"WHERE id = {self._mark}", (subscription_id,))
        return (subscription_from_row(rows[0]), rows[0][9]) if rows else None

    def list_subscriptions(self, account_id: str) -> list[Subscription]:
        rows = self._fetch(f"SELECT {SUBSCRIPTION_SELECT} FROM subscriptions "
                           f"WHERE account_id = {self._mark} ORDER BY anchor_us, id", (account_id,))
        return [subscription_from_row(r) for r in rows]

    def subscriptions_due(self, at_us: int) -> list[tuple[str, str]]:
        """(account, subscription) of every subscription with a period to grant by ``at_us``."""
        rows = self.conn.execute(sa.select(subscriptions.c.account_id, subscriptions.c.id)
                                 .where(subscriptions.c.next_start_us <= at_us)
                                 .order_by(subscriptions.c.account_id, subscriptions.c.id))
        return [(r[0], r[1]) for r in rows]

    def price_versions(self) -> list[PriceVersion]:
        rows = self.conn.execute(sa.select(price_versions).order_by(price_versions.c.version))
        return [PriceVersion(r.version, r.effective_at_us, parse_catalog(orjson.loads(r.catalog)))
                for r in rows]

    def latest_price_version(self) -> int:
        rows = self._answered(("price_version",))
        if rows is None:
            rows = self._fetch(self._LATEST_PRICES, ())
        return int(rows[0][0] or 0)
