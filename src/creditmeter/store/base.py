"""The storage interface the engine uses. Every method runs inside one open transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from creditmeter.domain import Account, AccountId, Charge, GrantId, Hold, HoldId, UsageEvent
from creditmeter.invariants import GrantRow, LedgerTotals
from creditmeter.ledger import Book
from creditmeter.pricing import Catalog, PriceVersion


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A charged event as stored: its body, its charge, and the body's fingerprint."""

    event: UsageEvent
    charge: Charge
    seq: int


class Transient(Exception):
    """A transaction that failed for a passing reason; nothing of it was written.

    Not a creditmeter error: the engine retries a write whole (a bounded number of times, with
    jitter) and then raises ``Unavailable``; a read raises ``Unavailable`` at once.
    """


class StaleWrite(Transient):
    """Another writer changed an account this transaction read, or took a unique key first."""


class LostConnection(Transient):
    """The database went away (restart, shutdown, network) or refused the connection."""


class Transaction(Protocol):
    def get_account(self, account_id: str) -> tuple[Account, int] | None: ...
    def insert_account(self, account: Account) -> None: ...
    def list_accounts(self) -> list[tuple[Account, int]]: ...
    def load_books(self, account_ids: Iterable[str],
                   cache: MutableMapping[AccountId, Book] | None = None) -> dict[AccountId, Book]: ...
    def persist(self, books: Iterable[Book], recorded_at_us: int,
                grant_fps: dict[GrantId, str] | None = None,
                hold_fps: dict[HoldId, str] | None = None) -> None: ...
    def next_grant_seq(self) -> int: ...
    def get_grant(self, grant_id: str) -> GrantRow | None: ...
    def get_hold(self, hold_id: str) -> tuple[Hold, str] | None: ...
    def find_events(self, event_ids: Sequence[str]) -> dict[str, StoredEvent]: ...
    def list_events(self, account_id: str, from_us: int | None, to_us: int | None,
                    model: str | None, limit: int | None) -> Iterator[StoredEvent]: ...
    def price_versions(self) -> list[PriceVersion]: ...
    def latest_price_version(self) -> int: ...
    def insert_price_version(self, catalog: Catalog, effective_at_us: int, loaded_at_us: int,
                             source: str) -> int: ...
    def accounts_to_tick(self, at_us: int) -> list[str]: ...
    def ledger_totals(self, account_ids: Sequence[str] | None) -> LedgerTotals: ...
    def grant_rows(self, account_ids: Sequence[str] | None) -> list[GrantRow]: ...


class Store(Protocol):
    url: str

    def transaction(self, write: bool = False) -> AbstractContextManager[Transaction]: ...
    def upgrade(self) -> None: ...
    def close(self) -> None: ...
