"""Work done on the clock's behalf: the periodic tick, and checking the ledger's invariants."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from creditmeter import invariants
from creditmeter.domain import HoldStatus
from creditmeter.engine._unit import _check_instant
from creditmeter.engine.alerting import AlertCommands
from creditmeter.engine.billing import _raise_failed
from creditmeter.store.base import Transaction


@dataclass(frozen=True, slots=True)
class TickReport:
    """What a tick did: accounts visited, holds timed out, ledger entries written, subscriptions
    renewed."""

    accounts: int
    holds_expired: int
    entries: int
    renewed: int = 0


class Maintenance(AlertCommands):
    """Renewals, hold timeouts, overage payment and expiries, all at one instant (a tick renews
    subscriptions first, hence the base); the invariants check."""

    def tick(self, at_us: int) -> TickReport:
        """Grant subscription renewals due, then time out holds, pay overage from new credits
        and record expiries. Idempotent: running it twice, late, or at once from two processes
        does nothing twice."""
        _check_instant(at_us, "at")
        renewed, failed = self._renew(at_us)

        def work(tx: Transaction) -> TickReport:
            books = tx.load_books(tx.accounts_to_tick(at_us), lapsed_by_us=at_us)
            expired = 0
            entries = 0
            for book in books.values():
                self._bring(tx, book, at_us)  # rollovers of periods over, packages of new ones
                book.sweep(at_us)
                expired += sum(1 for h in book.ended_holds if h.status is HoldStatus.EXPIRED)
                entries += len(book.entries)
            self._persist(tx, books.values(), at_us)
            self._time_alerts(tx, books, at_us)
            return TickReport(len(books), expired, entries, renewed)

        report = self._write(work)
        _raise_failed(failed)
        return report

    def check_invariants(self, account_ids: Iterable[str] | None = None) -> list[str]:
        """Every invariant of the ledger; an empty list when all hold."""
        ids = None if account_ids is None else list(account_ids)
        with self._read() as tx:
            accounts = [(a.id, overage) for a, overage in tx.list_accounts()
                        if ids is None or a.id in ids]
            return invariants.check(tx.grant_rows(ids), accounts, tx.ledger_totals(ids))
