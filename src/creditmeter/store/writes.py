"""The write side of a SQL transaction: the books a command changed (``persist``), and the small
writes every database runs alike (accounts, keys, members, allocations, plans, subscriptions,
prices).

``persist`` collects the books' rows once (``changes``), writes what both databases write
alike, hands the rest to the dialect's writer, and then checks that no other writer changed
those accounts meanwhile. On PostgreSQL, a write of events that finds one of their ids taken by
another transaction is undone whole and raises ``EventTaken`` (the transaction goes on).
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import sqlalchemy as sa

from creditmeter.domain import Account, GrantId, HoldId
from creditmeter.enterprise import Member, QuotaAllocation
from creditmeter.keys import ApiKey
from creditmeter.ledger import Book
from creditmeter.plans import PlanCatalog
from creditmeter.pricing import Catalog
from creditmeter.store import postgres_writer, sqlite_writer
from creditmeter.store.base import StaleWrite
from creditmeter.store.changes import Changes, Row, collect
from creditmeter.store.driver import DriverTransaction
from creditmeter.store.rows import ENTRY_COLUMNS, GRANT_INSERT_COLUMNS, insert_sql, parts_json
from creditmeter.store.schema import (
    accounts,
    allocations,
    api_keys,
    grants,
    members,
    plan_catalogs,
    price_versions,
    subscriptions,
)
from creditmeter.subscriptions import Subscription
from creditmeter.terms import Terms

GRANT_SEQS_AT_ONCE = 16


class Writes(DriverTransaction):
    """What a transaction writes."""

    # -- books -------------------------------------------------------------------------------

    def persist(self, books: Iterable[Book], recorded_at_us: int,
                grant_fps: dict[GrantId, str] | None = None,
                hold_fps: dict[HoldId, str] | None = None, *, undo_taken: bool = False,
                commit: bool = False) -> None:
        """Write everything the books' transitions produced. If another transaction stored one
        of the events' ids first: with ``undo_taken``, ``EventTaken`` with nothing of it written
        and the transaction still open (for a caller that charges again in it; PostgreSQL pays a
        savepoint for it); else the transaction fails (``StaleWrite``, retried whole).

        ``commit``: nothing more is written in this transaction; on PostgreSQL the write of one
        book commits it, in the same round trip (the lock is let go a round trip sooner)."""
        self._forget_answers()
        changes = collect(books, recorded_at_us, grant_fps, hold_fps)
        if self._pg and changes.events and undo_taken:
            # Events of other accounts may carry the same ids: their writers hold other locks.
            with postgres_writer.undone_if_event_taken(self._driver, changes):
                self._write_changes(changes)
        else:
            self._write_changes(changes, commit)

    def _write_changes(self, changes: Changes, commit: bool = False) -> None:
        if changes.grants:  # one statement for them all (allowances make many in a batch)
            self.conn.exec_driver_sql(insert_sql(grants, GRANT_INSERT_COLUMNS, self._mark), changes.grants)
        self._insert_closings(changes.closings)
        if self._pg:
            updated = postgres_writer.write(self._driver, self._mark, changes, commit)
        else:
            updated = sqlite_writer.write(self.conn, self._mark, changes)
        # Optimistic check: each book must still be at the version it was loaded at.
        if updated != len(changes.versions):
            raise StaleWrite(f"{len(changes.versions) - updated} account(s) changed meanwhile")

    def _insert_closings(self, rows: list[Row]) -> None:
        """A closing entry after the first corrects it: it points at the first one."""
        m = self._mark
        for row in rows:
            first = self.conn.exec_driver_sql(
                f"SELECT MIN(seq) FROM entries WHERE grant_id = {m} AND kind IN ('expire', 'void')",
                (row[1],)).scalar()
            self.conn.exec_driver_sql(
                f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}, corrects) "
                f"VALUES ({', '.join([m] * (len(ENTRY_COLUMNS) + 1))})", (*row, first))

    def next_grant_seq(self) -> int:
        if self._pg:
            # Taken a few at a time (terms make many packages in one batch): a value left unused
            # when the transaction ends is a gap, and seq only orders. The order of an account's
            # grants holds because every write locks its accounts before it takes a number.
            if not self._grant_seqs:
                rows = self._fetch("SELECT nextval(pg_get_serial_sequence('grants', 'seq')) "
                                   f"FROM generate_series(1, {GRANT_SEQS_AT_ONCE})", ())
                self._grant_seqs = sorted((int(r[0]) for r in rows), reverse=True)
            return self._grant_seqs.pop()
        # SQLite: the write transaction holds the database lock, so max + 1 is ours (and the
        # next one after it, for several grants in one transaction).
        if self._last_grant_seq is None:
            self._last_grant_seq = self.conn.execute(sa.select(sa.func.max(grants.c.seq))).scalar() or 0
        self._last_grant_seq += 1
        return self._last_grant_seq

    # -- accounts, keys and members ----------------------------------------------------------

    def insert_account(self, account: Account) -> None:
        self.conn.execute(accounts.insert().values(
            id=account.id, name=account.name, kind=account.kind.value,
            created_at_us=account.created_at_us, overage_uc=0))

    def insert_key(self, key: ApiKey, key_digest: str) -> None:
        self.conn.execute(api_keys.insert().values(
            id=key.id, hash=key_digest, prefix=key.prefix, role=key.role.value,
            account_id=key.account_id, name=key.name, created_at_us=key.created_at_us))

    def revoke_key(self, key_id: str, at_us: int) -> None:
        self.conn.execute(api_keys.update().where(api_keys.c.id == key_id,
                                                  api_keys.c.revoked_at_us.is_(None))
                          .values(revoked_at_us=at_us))

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

    def insert_allocation(self, allocation: QuotaAllocation, request_fp: str) -> None:
        self.conn.execute(allocations.insert().values(
            id=allocation.id, enterprise_id=allocation.enterprise_id, member_id=allocation.member_id,
            amount_uc=allocation.amount_uc, parts=parts_json(allocation.parts),
            created_at_us=allocation.created_at_us, request_fp=request_fp))

    def revoke_allocation(self, allocation_id: str, at_us: int, returned_uc: int) -> None:
        self.conn.execute(allocations.update().where(allocations.c.id == allocation_id).values(
            revoked_at_us=at_us, returned_uc=returned_uc))

    # -- plans, subscriptions and prices -----------------------------------------------------

    def insert_plan_catalog(self, catalog: PlanCatalog, loaded_at_us: int, source: str) -> int:
        result = self.conn.execute(plan_catalogs.insert().values(
            loaded_at_us=loaded_at_us, source=source[:255],
            catalog=orjson.dumps(catalog.to_dict()).decode()).returning(plan_catalogs.c.version))
        return int(result.scalar_one())

    def insert_subscription(self, sub: Subscription, request_fp: str) -> None:
        self.conn.execute(subscriptions.insert().values(
            id=sub.id, account_id=sub.account_id, plan_id=sub.plan.id,
            plan=orjson.dumps(sub.plan.to_dict()).decode(), seats=sub.seats, anchor_us=sub.anchor_us,
            created_at_us=sub.created_at_us, next_period=sub.next_period,
            next_start_us=sub.next_start_us(), cancel_at_us=sub.cancel_at_us,
            cancelled_at_us=sub.cancelled_at_us, request_fp=request_fp))

    def set_terms(self, book: Book, terms: Terms) -> None:
        """Keep ``terms`` on the book's account (and on the book), as a write to the book: the
        account moves to its next version, so no process reuses a book loaded before."""
        result = self.conn.execute(accounts.update().where(
            accounts.c.id == book.account.id, accounts.c.version == book.version).values(
            terms=terms.to_json(), version=book.version + 1))
        if result.rowcount != 1:
            raise StaleWrite("the account changed meanwhile")
        book.version += 1
        book.terms = terms
        book.provided.clear()
        book.settled.clear()
        book.quiet.clear()

    def update_subscription(self, sub: Subscription) -> None:
        self.conn.execute(subscriptions.update().where(subscriptions.c.id == sub.id).values(
            next_period=sub.next_period, next_start_us=sub.next_start_us(),
            cancel_at_us=sub.cancel_at_us, cancelled_at_us=sub.cancelled_at_us))

    def lock_price_versions(self) -> None:
        """Hold other catalog loads off until this transaction ends (on SQLite writers already
        take turns), so "is this the first catalog?" stays true until it is written."""
        if self._pg:
            self.conn.exec_driver_sql("LOCK TABLE price_versions IN SHARE ROW EXCLUSIVE MODE")

    def insert_price_version(self, catalog: Catalog, effective_at_us: int, loaded_at_us: int,
                             source: str) -> int:
        result = self.conn.execute(price_versions.insert().values(
            effective_at_us=effective_at_us, loaded_at_us=loaded_at_us, source=source[:255],
            catalog=orjson.dumps(catalog.to_dict()).decode()).returning(price_versions.c.version))
        return int(result.scalar_one())
