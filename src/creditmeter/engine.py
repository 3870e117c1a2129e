"""The engine: the one place that runs a command.

Each command opens one transaction, loads what it needs into books, runs the pure transitions
(``ledger``, ``burndown``, ``pricing``), writes what they produced and commits — or raises one of
``creditmeter.errors`` and writes nothing. Time is always an argument (``at_us``): the engine
never reads a clock.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

import orjson

from creditmeter import invariants
from creditmeter.domain import (
    Account,
    AccountId,
    AccountKind,
    Balance,
    Charge,
    EventId,
    Grant,
    GrantId,
    GrantKind,
    GrantStatus,
    Hold,
    HoldId,
    HoldStatus,
    Package,
    PageMark,
    Period,
    Refused,
    Rejected,
    StoredEvent,
    SummaryRow,
    UsageEvent,
)
from creditmeter.enterprise import Member, QuotaAllocation, allocation_grant_id, source_of
from creditmeter.errors import Conflict, CreditmeterError, InputError, NotFound, Unavailable
from creditmeter.events import MAX_TOKENS, check_id, fingerprint, parse_event
from creditmeter.keys import ApiKey, MemberRole, Principal, Role, digest, new_secret, same_digest
from creditmeter.ledger import Book
from creditmeter.money import MAX_UC, format_credits
from creditmeter.plans import MAX_SEATS, PlanCatalog, PlanKind, default_plans, grant_expiry
from creditmeter.pricing import Catalog, PriceBook, PriceVersion, rate
from creditmeter.store.base import (
    LostConnection,
    Store,
    Transaction,
    Transient,
)
from creditmeter.store.sql import SqlStore
from creditmeter.subscriptions import (
    MAX_SUBSCRIPTION_ID,
    Subscription,
    SubscriptionStatus,
    current_subscription,
    trial_grant_id,
)
from creditmeter.timeutil import DAY_S, MAX_US, MIN_US, US_PER_S, format_instant, month_bounds

MAX_HOLD_TTL_S = 7 * DAY_S
SETTLE_ID_PREFIX = "hold:"  # default event id of a settle; producers' event ids may not use it
# Package ids the engine derives itself (each unique by construction); nobody else may use them.
RESERVED_GRANT_PREFIXES = ("trial:", "sub:", "order:", "alloc:")
MAX_PAGE = 1_000
GROUPS = ("day", "model")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    """Engine settings.

    Attributes:
      lateness_window_s: how old an event's timestamp may be (default 7 days).
      max_future_s: how far ahead of now an event's timestamp may be (5 minutes).
      default_hold_ttl_s: a hold's ttl when none is given (10 minutes).
      book_cache_size: how many accounts' books batch ingestion keeps between batches.
      write_attempts: how often a write is tried when other writers changed the same accounts.
    """

    lateness_window_s: int = 7 * DAY_S
    max_future_s: int = 300
    default_hold_ttl_s: int = 600
    book_cache_size: int = 20_000
    write_attempts: int = 5


@dataclass(frozen=True, slots=True)
class TickReport:
    """What a tick did: accounts visited, holds timed out, ledger entries written, subscriptions
    renewed."""

    accounts: int
    holds_expired: int
    entries: int
    renewed: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    """A request's measured usage, for settling a hold."""

    model: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    quantities: tuple[tuple[str, int], ...] = ()
    metadata: Mapping[str, object] | None = None


def _request_fp(*parts: object) -> str:
    return hashlib.blake2b(orjson.dumps(parts), digest_size=16).hexdigest()


class Engine:
    """Credits operations over a :class:`~creditmeter.store.base.Store`."""

    def __init__(self, store: Store, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or Settings()
        self._prices: PriceBook | None = None
        self._prices_version = -1
        # Books kept between batches; each is reused only while its account's stored version
        # is unchanged (see Transaction.load_books).
        self._books = _BookCache(self.settings.book_cache_size)

    @property
    def database(self) -> str:
        """The kind of database (``sqlite``, ``postgresql``), for people and health checks."""
        return self.store.url.split("://", 1)[0].split("+", 1)[0]

    @property
    def database_url(self) -> str:
        return self.store.url

    @property
    def local_reads(self) -> bool:
        """Whether reads are local file reads that never wait on a lock (SQLite in WAL mode):
        an event loop may run them itself rather than hand them to a thread."""
        return self.store.url.startswith("sqlite")

    def upgrade_schema(self) -> str:
        """Create or upgrade the database schema; answers the revision it is at now
        (``Unavailable`` if the database cannot be reached)."""
        try:
            self.store.upgrade()
            return self.store.revision() or ""
        except Transient as exc:
            raise Unavailable(f"the database is unreachable now ({exc})") from exc

    def close(self) -> None:
        """Give back the store's connections."""
        self.store.close()

    def _write(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in one write transaction; retry it whole when another writer got there
        first (a bounded number of times, with jitter), else fail with :class:`Unavailable`."""
        attempts = self.settings.write_attempts
        last: Transient | None = None
        for attempt in range(1, attempts + 1):
            try:
                with self.store.transaction(write=True) as tx:
                    return work(tx)
            except Transient as exc:
                self._books.clear()
                last = exc
                if attempt == attempts:
                    break
                time.sleep(random.uniform(0, 0.002 * 2**attempt))
            except BaseException:
                self._books.clear()  # books may hold changes that were never written
                raise
        why = ("the database is unreachable" if isinstance(last, LostConnection)
               else "other writers kept changing the same accounts")
        raise Unavailable(f"the write did not go through after {attempts} attempts ({why}: {last}); "
                          "retrying it with the same ids is safe") from last

    @contextmanager
    def _read(self) -> Iterator[Transaction]:
        """A read transaction; a database that went away is ``Unavailable`` to the caller."""
        try:
            with self.store.transaction() as tx:
                yield tx
        except Transient as exc:
            raise Unavailable(f"the database is unreachable now ({exc}); try again") from exc

    # -- accounts ----------------------------------------------------------------------------

    def create_account(self, account_id: str, at_us: int, name: str | None = None,
                       kind: str = "user") -> Account:
        """Create an account; the same call again returns it (a different one conflicts)."""
        check_id(account_id, "id")
        _check_instant(at_us, "at")
        try:
            account_kind = AccountKind(kind)
        except ValueError:
            raise InputError("kind", f"must be one of {', '.join(k.value for k in AccountKind)}") from None
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 255):
            raise InputError("name", "must be a string of 1-255 characters")
        account = Account(AccountId(account_id), name or account_id, account_kind, at_us)

        def work(tx: Transaction) -> Account:
            existing = tx.get_account(account_id)
            if existing:
                old = existing[0]
                if old.kind is account_kind and (name is None or old.name == name):
                    return old
                raise Conflict(f"account {account_id!r} already exists with other details")
            tx.insert_account(account)
            return account

        return self._write(work)

    def account(self, account_id: str) -> tuple[Account, int] | None:
        """An account and its overage (µc), or None."""
        check_id(account_id, "account_id")
        with self._read() as tx:
            return tx.get_account(account_id)

    def ping(self) -> None:
        """Reach the database (raises ``Unavailable`` when it cannot be reached)."""
        with self._read() as tx:
            tx.latest_price_version()

    def accounts(self) -> list[tuple[Account, int]]:
        with self._read() as tx:
            return tx.list_accounts()

    # -- prices ------------------------------------------------------------------------------

    def load_prices(self, catalog: Catalog, effective_at_us: int, at_us: int,
                    source: str = "") -> PriceVersion:
        """Add a catalog version effective from ``effective_at_us``."""
        _check_instant(effective_at_us, "effective")
        _check_instant(at_us, "at")
        version = self._write(lambda tx: tx.insert_price_version(catalog, effective_at_us, at_us, source))
        return PriceVersion(version, effective_at_us, catalog)

    def price_book(self, tx: Transaction | None = None) -> PriceBook:
        """Every catalog version (cached; reloaded when another process added one)."""
        if tx is None:
            with self._read() as own:
                return self.price_book(own)
        latest = tx.latest_price_version()
        if self._prices is None or latest != self._prices_version:
            self._prices = PriceBook(tx.price_versions())
            self._prices_version = latest
        return self._prices

    def estimate(self, model: str, input_tokens: int, max_output_tokens: int, at_us: int) -> int:
        """What a chat request may cost at most (SPEC §6): its input tokens at the input price
        plus its max output tokens at the output price, with the prices effective at ``at_us``."""
        _check_instant(at_us, "at")
        version = _version_at(self.price_book(), at_us)
        for name, value in (("input_tokens", input_tokens), ("max_output_tokens", max_output_tokens)):
            if type(value) is not int or not 0 <= value <= MAX_TOKENS:
                raise InputError(name, f"must be a whole number ≥ 0, got {value!r}")
        return rate(version.catalog, model, input_tokens, max_output_tokens, 0, 0)

    # -- grants ------------------------------------------------------------------------------

    def add_grant(self, account_id: str, amount_uc: int, kind: str, at_us: int, *,
                  expires_at_us: int | None = None, effective_at_us: int | None = None,
                  priority: int | None = None, name: str | None = None,
                  grant_id: str | None = None, source: str = "manual") -> Package:
        """Put a credit package on an account. With ``grant_id``, the same call is idempotent
        (a retry answers the same package, even after the time checks would refuse it anew)."""
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        try:
            grant_kind = GrantKind(kind)
        except ValueError:
            raise InputError("kind", f"must be one of {', '.join(k.value for k in GrantKind)}") from None
        _check_amount(amount_uc)
        for field, value in (("expires", expires_at_us), ("effective", effective_at_us)):
            if value is not None:
                _check_instant(value, field)
        prio = grant_kind.default_priority if priority is None else priority
        if type(prio) is not int or not 0 <= prio <= 100:
            raise InputError("priority", "must be a whole number from 0 to 100")
        if name is not None and (not isinstance(name, str) or len(name) > 255):
            raise InputError("name", "must be a string of at most 255 characters")
        gid = check_id(grant_id, "id") if grant_id is not None else f"grt_{uuid.uuid4().hex}"
        if gid.startswith(RESERVED_GRANT_PREFIXES):
            raise InputError("id", f"ids starting with {', '.join(RESERVED_GRANT_PREFIXES)} are kept for "
                             "trials, subscriptions, purchases and enterprise quota")
        label = name or f"{grant_kind.value.capitalize()} credits"
        # The body as given: a defaulted effective time is not part of it, so a retry matches.
        request_fp = _request_fp(account_id, amount_uc, grant_kind.value, effective_at_us,
                                 expires_at_us, prio, label)
        effective = at_us if effective_at_us is None else effective_at_us

        def work(tx: Transaction) -> Package:
            book = self._book(tx, account_id, at_us)  # locked first: then nothing changes under us
            existing = tx.get_grant(gid)
            if existing is not None:
                if existing.request_fp != request_fp:
                    raise Conflict(f"grant id {gid!r} was already used for another grant")
                return self._package(tx, existing.grant.account_id, existing.grant.id, at_us)
            if expires_at_us is not None:
                if expires_at_us <= effective:
                    raise InputError("expires",
                                     f"must be after the effective time {format_instant(effective)}")
                if expires_at_us <= at_us:
                    raise InputError("expires", "is in the past")
            grant = Grant(GrantId(gid), AccountId(account_id), grant_kind, amount_uc, prio, effective,
                          expires_at_us, label, source, tx.next_grant_seq(), at_us)
            book.add_grant(grant, at_us)
            package = book.package(book.grant(grant.id) or grant, at_us)
            tx.persist([book], at_us, grant_fps={grant.id: request_fp})
            return package

        return self._write(work)

    def void_grant(self, grant_id: str, at_us: int) -> Package:
        """Void (refund) a grant: its remaining credits are removed; what was used stays."""
        check_id(grant_id, "grant_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> Package:
            row = tx.get_grant(grant_id)
            if row is None:
                raise NotFound("grant", grant_id, "grant_id")
            book = self._book(tx, row.grant.account_id, at_us)
            grant = book.grant(row.grant.id)
            assert grant is not None
            if grant.voided_at_us is None:
                if book.package(grant, at_us).status is GrantStatus.EXPIRED:
                    raise Conflict(f"grant {grant_id!r} has already expired; nothing remains to void")
                grant = book.void(grant, at_us)
            package = book.package(grant, at_us)
            tx.persist([book], at_us)
            return package

        return self._write(work)

    # -- usage -------------------------------------------------------------------------------

    def record(self, event: UsageEvent | dict[str, object], at_us: int) -> Charge:
        """Charge one event; a rejected event raises its error (nothing is written)."""
        result = self.record_batch([event], at_us)[0]
        if isinstance(result, Rejected):
            raise result.error
        return result

    def record_batch(self, items: Sequence[UsageEvent | dict[str, object]],
                     at_us: int) -> list[Charge | Rejected]:
        """Charge a batch: a result per event, in order, all in one transaction.

        Events one by one or in batches of any size give the same results.
        """
        _check_instant(at_us, "at")
        early: dict[int, Rejected] = {}
        parsed: list[tuple[int, UsageEvent]] = []
        for index, item in enumerate(items):
            try:
                event = item if isinstance(item, UsageEvent) else parse_event(item)
                if event.id.startswith(SETTLE_ID_PREFIX):
                    raise InputError("id", f"ids starting with {SETTLE_ID_PREFIX!r} are kept for "
                                     "the settlements of holds")
                parsed.append((index, event))
            except CreditmeterError as exc:
                event_id = item.get("id") if isinstance(item, dict) else getattr(item, "id", None)
                early[index] = Rejected(event_id if isinstance(event_id, str) else None, exc)

        def work(tx: Transaction) -> list[Charge | Rejected]:
            results: list[Charge | Rejected | None] = [None] * len(items)
            for index, rejected in early.items():
                results[index] = rejected
            if parsed:
                self._charge_events(tx, parsed, results, at_us)
            assert all(r is not None for r in results)
            return results  # type: ignore[return-value]

        if not parsed:
            return [early[i] for i in range(len(items))]
        return self._write(work)

    def _charge_events(self, tx: Transaction, parsed: list[tuple[int, UsageEvent]],
                       results: list[Charge | Rejected | None], at_us: int) -> None:
        prices = self.price_book(tx)
        stored = tx.find_events([e.id for _, e in parsed])
        books = tx.load_books({e.account_id for _, e in parsed if e.id not in stored}, self._books)
        advanced: set[str] = set()
        seen: dict[str, tuple[str, Charge]] = {k: (v.event.fingerprint, v.charge)
                                               for k, v in stored.items()}
        oldest = at_us - self.settings.lateness_window_s * US_PER_S
        newest = at_us + self.settings.max_future_s * US_PER_S
        for index, event in parsed:
            prior = seen.get(event.id)
            if prior is not None:
                results[index] = _duplicate(event, *prior)
                continue
            book = books.get(event.account_id)
            if book is None:
                results[index] = Rejected(event.id, NotFound("account", event.account_id, "account_id"))
                continue
            ts = at_us if event.timestamp_us is None else event.timestamp_us
            try:
                version = self._check_time_and_price(prices, ts, oldest, newest)
                cost = rate(version.catalog, event.model, event.input_tokens, event.output_tokens,
                            event.cached_input_tokens, event.cache_write_tokens, event.quantities)
                _check_overage_room(book, cost)
            except CreditmeterError as exc:
                results[index] = Rejected(event.id, exc)
                continue
            if event.account_id not in advanced:
                book.advance(at_us)
                advanced.add(event.account_id)
            charge = book.charge(event, cost, version.version, ts, at_us)
            results[index] = charge
            seen[event.id] = (event.fingerprint, charge)
        tx.persist(books.values(), at_us)

    def _check_time_and_price(self, prices: PriceBook, ts: int, oldest: int,
                              newest: int) -> PriceVersion:
        if ts < oldest:
            raise InputError("timestamp", f"{format_instant(ts)} is older than the lateness window "
                             f"({self.settings.lateness_window_s // DAY_S} days)")
        if ts > newest:
            raise InputError("timestamp", f"{format_instant(ts)} is more than "
                             f"{self.settings.max_future_s // 60} minutes in the future")
        return _version_at(prices, ts)

    def usage(self, account_id: str, *, from_us: int | None = None, to_us: int | None = None,
              model: str | None = None, limit: int | None = None,
              member: str | None = None) -> Iterator[StoredEvent]:
        """An account's charged events, newest first, streamed from one read transaction.

        The account is checked at once (an unknown one raises here, not on first iteration).
        ``member`` (on an enterprise account) lists that member's usage instead.
        """
        ids = self._usage_accounts(account_id, member)
        return self._stream_usage(ids, from_us, to_us, model, limit)

    def _usage_accounts(self, account_id: str, member: str | None) -> list[str]:
        check_id(account_id, "account_id")
        if member is not None:
            check_id(member, "member")
        with self._read() as tx:
            found = tx.get_account(account_id)
            if found is None:
                raise NotFound("account", account_id, "account_id")
            if member is None:
                return [account_id]
            if found[0].kind is not AccountKind.ENTERPRISE:
                raise InputError("member", "only an enterprise account's usage is filtered by member")
            if tx.member_role(account_id, member) is None:
                raise InputError("member", f"{member!r} is not a member of {account_id!r}")
            return [member]

    def _stream_usage(self, account_ids: list[str], from_us: int | None, to_us: int | None,
                      model: str | None, limit: int | None) -> Iterator[StoredEvent]:
        with self._read() as tx:
            yield from tx.list_events(account_ids, from_us, to_us, model, limit)

    def usage_page(self, account_id: str, *, from_us: int | None = None, to_us: int | None = None,
                   model: str | None = None, member: str | None = None, limit: int = 100,
                   after: PageMark | None = None) -> tuple[list[StoredEvent], PageMark | None]:
        """One page of usage, newest first, and where the next one starts (None at the end).

        A mark pins the events that existed when the first page was read: paging on while new
        events arrive neither repeats nor skips one.
        """
        if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
            raise InputError("limit", f"must be a whole number from 1 to {MAX_PAGE}")
        before, max_seq = ((after.ts_us, after.seq), after.max_seq) if after is not None else (None, None)
        ids = self._usage_accounts(account_id, member)
        with self._read() as tx:
            if max_seq is None:
                max_seq = tx.last_event_seq()
            page = list(tx.list_events(ids, from_us, to_us, model, limit + 1, before, max_seq))
        more = len(page) > limit
        page = page[:limit]
        return page, PageMark(page[-1].charge.timestamp_us, page[-1].seq, max_seq) if more else None

    def usage_summary(self, account_id: str, group_by: str, *, from_us: int | None = None,
                      to_us: int | None = None, model: str | None = None,
                      member: str | None = None) -> list[SummaryRow]:
        """Requests, tokens and credits per UTC day or per model."""
        if group_by not in GROUPS:
            raise InputError("group_by", f"must be one of {', '.join(GROUPS)}")
        ids = self._usage_accounts(account_id, member)
        with self._read() as tx:
            return tx.usage_summary(ids, from_us, to_us, model, group_by)

    # -- holds -------------------------------------------------------------------------------

    def reserve(self, account_id: str, amount_uc: int, at_us: int, *, ttl_s: int | None = None,
                hold_id: str | None = None) -> Hold | Refused:
        """Hold credits for a request in flight; refused (a value) when they are not there."""
        _check_amount(amount_uc)
        return self._reserve(account_id, lambda tx: amount_uc, at_us, ttl_s, hold_id)

    def reserve_estimate(self, account_id: str, model: str, input_tokens: int, max_output_tokens: int,
                         at_us: int, *, ttl_s: int | None = None,
                         hold_id: str | None = None) -> tuple[Hold | Refused, int]:
        """Hold what a chat request may cost at most (:meth:`estimate`), priced in the same
        transaction; answers the hold (or the refusal) and the estimate."""
        for name, value in (("input_tokens", input_tokens), ("max_output_tokens", max_output_tokens)):
            if type(value) is not int or not 0 <= value <= MAX_TOKENS:
                raise InputError(name, f"must be a whole number ≥ 0, got {value!r}")
        estimate = 0

        def amount(tx: Transaction) -> int:
            nonlocal estimate
            version = _version_at(self.price_book(tx), at_us)
            estimate = rate(version.catalog, model, input_tokens, max_output_tokens, 0, 0)
            return estimate

        result = self._reserve(account_id, amount, at_us, ttl_s, hold_id)
        return result, estimate

    def _reserve(self, account_id: str, amount: Callable[[Transaction], int], at_us: int,
                 ttl_s: int | None, hold_id: str | None) -> Hold | Refused:
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        ttl = self.settings.default_hold_ttl_s if ttl_s is None else ttl_s
        if type(ttl) is not int or not 0 < ttl <= MAX_HOLD_TTL_S:
            raise InputError("ttl", f"must be a whole number of seconds from 1 to {MAX_HOLD_TTL_S}")
        hid = check_id(hold_id, "id") if hold_id is not None else f"hld_{uuid.uuid4().hex}"

        def work(tx: Transaction) -> Hold | Refused:
            book = self._book(tx, account_id, at_us)  # locked first: then nothing changes under us
            amount_uc = amount(tx)
            request_fp = _request_fp(account_id, amount_uc, ttl)
            existing = tx.get_hold(hid)
            if existing is not None:
                if existing[1] != request_fp:
                    raise Conflict(f"hold id {hid!r} was already used for another reservation")
                return existing[0]
            result = book.reserve(HoldId(hid), amount_uc, ttl, at_us)
            tx.persist([book], at_us, hold_fps={HoldId(hid): request_fp})
            return result

        return self._write(work)

    def settle(self, hold_id: str, usage: Usage, at_us: int, *,
               event_id: str | None = None) -> Charge:
        """Charge a request's actual usage from its hold first; the rest of the hold is released.

        Exactly once: settling again with the same usage answers the original charge
        (duplicate); any other second settle is a conflict. The usage is priced with the catalog
        in effect when the hold was made. A hold whose ttl passed is charged like a plain usage
        event, and is then settled all the same.
        """
        return self.settle_with_available(hold_id, usage, at_us, event_id=event_id)[0]

    def settle_with_available(self, hold_id: str, usage: Usage, at_us: int, *,
                              event_id: str | None = None) -> tuple[Charge, int]:
        """:meth:`settle`, answering also the account's available credits just after it."""
        check_id(hold_id, "hold_id")
        _check_instant(at_us, "at")
        eid = check_id(event_id, "id") if event_id is not None else f"{SETTLE_ID_PREFIX}{hold_id}"

        def work(tx: Transaction) -> tuple[Charge, int]:
            hold, book = self._locked_hold(tx, hold_id, at_us)
            event = _settle_event(eid, hold, usage)
            stored = tx.find_events([eid]).get(eid)
            if stored is not None:
                result = _duplicate(event, stored.event.fingerprint, stored.charge)
                if isinstance(result, Rejected):
                    raise result.error
                return result, book.available_uc(at_us)
            if hold.settled_event_id is not None:
                raise Conflict(f"hold {hold_id!r} was already settled by event {hold.settled_event_id!r}")
            if hold.status is HoldStatus.RELEASED:
                raise Conflict(f"hold {hold_id!r} was released; record the usage as an event instead")
            # Priced as at the hold: the request began then, under the prices it was reserved
            # at (a catalog loaded while it ran cannot change, or unprice, its charge).
            version = _version_at(self.price_book(tx), hold.created_at_us)
            cost = rate(version.catalog, event.model, event.input_tokens, event.output_tokens,
                        event.cached_input_tokens, event.cache_write_tokens, event.quantities)
            _check_overage_room(book, cost)
            open_hold = book.holds.get(hold.id)
            if open_hold is not None:
                book.end_hold(open_hold, at_us, HoldStatus.SETTLED, event.id)
            else:
                # The ttl passed: the hold stays expired, but it is settled by this event.
                book.settle_lapsed_hold(hold, event.id)
            charge = book.charge(event, cost, version.version, at_us, at_us, hold=open_hold)
            if open_hold is None:  # charged afresh, but still tied to its hold
                charge = charge._replace(hold_id=hold.id)
                book.charges[-1] = (event, charge)
            available = book.available_uc(at_us)
            tx.persist([book], at_us)
            return charge, available

        return self._write(work)

    def release(self, hold_id: str, at_us: int) -> Hold:
        """Give a hold's credits back. Idempotent; a settled hold cannot be released."""
        check_id(hold_id, "hold_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> Hold:
            hold, book = self._locked_hold(tx, hold_id, at_us)
            if hold.settled_event_id is not None:
                raise Conflict(f"hold {hold_id!r} was already settled by event {hold.settled_event_id!r}")
            if hold.status is not HoldStatus.OPEN:
                return hold
            open_hold = book.holds.get(hold.id)
            ended = (book.end_hold(open_hold, at_us, HoldStatus.RELEASED) if open_hold
                     else next(h for h in book.ended_holds if h.id == hold.id))
            tx.persist([book], at_us)
            return ended

        return self._write(work)

    # -- plans, subscriptions, purchases ------------------------------------------------------

    def load_plans(self, catalog: PlanCatalog, at_us: int, source: str = "") -> int:
        """Make ``catalog`` the plan catalog (a new version; running subscriptions keep their
        terms)."""
        _check_instant(at_us, "at")
        return self._write(lambda tx: tx.insert_plan_catalog(catalog, at_us, source))

    def plans(self) -> PlanCatalog:
        """The plan catalog loaded last, or the shipped default while none was loaded."""
        with self._read() as tx:
            latest = tx.latest_plan_catalog()
        return latest[1] if latest else default_plans()

    def subscribe(self, account_id: str, plan_id: str, at_us: int, *,
                  subscription_id: str | None = None, seats: int | None = None) -> Subscription:
        """Subscribe an account to a trial, subscription or enterprise plan from ``at_us``, and
        grant its first period. The same id again with the same details answers the same
        subscription. A trial is granted once per account, ever; an account has one running
        subscription at a time."""
        check_id(account_id, "account_id")
        check_id(plan_id, "plan")
        _check_instant(at_us, "at")
        sid = check_id(subscription_id, "id") if subscription_id is not None else f"sub_{uuid.uuid4().hex}"
        if len(sid) > MAX_SUBSCRIPTION_ID:
            raise InputError("id", f"must be at most {MAX_SUBSCRIPTION_ID} characters")
        plan = self.plans().get(plan_id)
        if not plan.kind.recurring and plan.kind is not PlanKind.TRIAL:
            raise InputError("plan", f"{plan_id!r} is a one-off {plan.kind.value} pack: buy it as a purchase")
        if seats is not None and plan.kind is not PlanKind.ENTERPRISE:
            raise InputError("seats", "only enterprise plans have seats")
        if plan.kind is PlanKind.ENTERPRISE:
            seats = plan.seats_default or 1 if seats is None else seats
            if type(seats) is not int or not 1 <= seats <= MAX_SEATS:
                raise InputError("seats", f"must be a whole number from 1 to {MAX_SEATS}")
            if plan.credits_uc * seats > MAX_UC:
                raise InputError("seats", "seats × credits per seat is over 10^12 credits")
        request_fp = _request_fp(account_id, plan.to_dict(), seats)
        sub = Subscription(sid, AccountId(account_id), plan, seats, at_us, at_us, 0, None, None)

        def work(tx: Transaction) -> Subscription:
            book = self._book(tx, account_id, at_us)  # locked first: then nothing changes under us
            existing = tx.get_subscription(sid)
            if existing is not None:
                if existing[1] != request_fp:
                    raise Conflict(f"subscription id {sid!r} was already used for another subscription")
                return existing[0]
            enterprise = book.account.kind is AccountKind.ENTERPRISE
            if enterprise != (plan.kind is PlanKind.ENTERPRISE):
                raise InputError("plan", f"{plan_id!r} is not for {book.account.kind.value} accounts")
            if plan.kind is PlanKind.TRIAL:
                if tx.get_grant(trial_grant_id(account_id)) is not None:
                    raise Conflict(f"account {account_id!r} already had its trial")
            else:
                for other in tx.list_subscriptions(account_id):
                    if other.recurring and other.status(at_us) is not SubscriptionStatus.EXPIRED:
                        raise Conflict(f"account {account_id!r} already has subscription {other.id!r} "
                                       f"({other.status(at_us).value}); cancel it first")
            tx.insert_subscription(sub, request_fp)
            return self._grant_due(tx, book, sub, at_us)

        return self._write(work)

    def _grant_due(self, tx: Transaction, book: Book, sub: Subscription, at_us: int) -> Subscription:
        """Grant every period of ``sub`` due by ``at_us`` and record how far it got."""
        due = sub.due(at_us)
        if not due:
            return sub
        for index in due:
            grant = sub.grant(index, tx.next_grant_seq(), at_us)
            if book.grant(grant.id) is None:
                book.add_grant(grant, at_us)
        book.advance(at_us)
        tx.persist([book], at_us)
        sub = replace(sub, next_period=due.stop)
        tx.update_subscription(sub)
        return sub

    def cancel_subscription(self, subscription_id: str, at_us: int) -> Subscription:
        """Cancel at the end of the period running at ``at_us`` (nothing is renewed after it).
        Cancelling again changes nothing; an ended subscription cannot be cancelled."""
        check_id(subscription_id, "subscription_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> Subscription:
            sub, _ = _read_locked(tx, lambda: tx.get_subscription(subscription_id),
                                  lambda found: [found.account_id],
                                  ("subscription", subscription_id, "subscription_id"))
            if not sub.recurring:
                raise Conflict(f"subscription {subscription_id!r} is a trial: it ends by itself")
            if sub.status(at_us) is SubscriptionStatus.EXPIRED:
                raise Conflict(f"subscription {subscription_id!r} has already ended")
            if sub.cancel_at_us is not None:
                return sub  # cancelling again changes nothing
            index = sub.index_at(at_us)
            end = sub.period(0 if index is None else index)[1]
            sub = replace(sub, cancel_at_us=end, cancelled_at_us=at_us)
            tx.update_subscription(sub)
            return sub

        return self._write(work)

    def subscriptions(self, account_id: str) -> list[Subscription]:
        """An account's subscriptions, oldest first (the trial included)."""
        check_id(account_id, "account_id")
        with self._read() as tx:
            if tx.get_account(account_id) is None:
                raise NotFound("account", account_id, "account_id")
            return tx.list_subscriptions(account_id)

    def get_subscription(self, subscription_id: str) -> Subscription:
        return self._lookup(lambda tx: _first(tx.get_subscription(subscription_id)), "subscription",
                            subscription_id, "subscription_id")

    def _lookup(self, fetch: Callable[[Transaction], T | None], what: str, ident: str, field: str) -> T:
        """One stored object by id, or ``NotFound`` naming ``field``."""
        check_id(ident, field)
        with self._read() as tx:
            found = fetch(tx)
        if found is None:
            raise NotFound(what, ident, field)
        return found

    def renew(self, at_us: int) -> int:
        """Grant every subscription period due by ``at_us``; returns how many subscriptions
        were renewed. Idempotent: each period's grant id is unique, so running it twice, late, or
        from two processes at once grants nothing twice. One that fails does not stop the others;
        the failures are raised (``Unavailable``) once all were tried."""
        renewed, failed = self._renew(at_us)
        _raise_failed(failed)
        return renewed

    def _renew(self, at_us: int) -> tuple[int, list[str]]:
        _check_instant(at_us, "at")
        with self._read() as tx:
            due = tx.subscriptions_due(at_us)
        renewed = 0
        failed: list[str] = []
        for account_id, sid in due:
            def work(tx: Transaction, sid: str = sid, account_id: str = account_id) -> bool:
                book = self._book(tx, account_id, at_us)  # locks the account first
                found = tx.get_subscription(sid)
                if found is None or not found[0].due(at_us):
                    return False  # another process got there first
                self._grant_due(tx, book, found[0], at_us)
                return True

            try:
                renewed += self._write(work)
            except CreditmeterError as exc:  # one subscription's trouble does not stop the others
                failed.append(f"{sid}: {exc}")
        return renewed, failed

    def purchase(self, account_id: str, pack_id: str, at_us: int, *,
                 order_id: str | None = None) -> Package:
        """Buy a one-off pack (add-on or resource package): a grant of its credits valid its
        days from ``at_us``. Idempotent by order id (what a payment webhook retries with)."""
        check_id(account_id, "account_id")
        check_id(pack_id, "pack")
        _check_instant(at_us, "at")
        oid = check_id(order_id, "id") if order_id is not None else f"ord_{uuid.uuid4().hex}"
        if len(oid) > 240:
            raise InputError("id", "must be at most 240 characters")
        try:
            plan = self.plans().get(pack_id)
        except NotFound:
            raise NotFound("pack", pack_id, "pack") from None
        if plan.kind not in (PlanKind.ADDON, PlanKind.PACKAGE):
            raise InputError("pack", f"{pack_id!r} is a {plan.kind.value} plan, not a pack: subscribe to it")
        gid = GrantId(f"order:{oid}")
        source = f"purchase:{pack_id}"[:255]

        def work(tx: Transaction) -> Package:
            book = self._book(tx, account_id, at_us)  # locked first: then nothing changes under us
            existing = tx.get_grant(gid)
            if existing is not None:
                if existing.grant.account_id != account_id or existing.grant.source != source:
                    raise Conflict(f"order id {oid!r} was already used for another purchase")
                return self._package(tx, existing.grant.account_id, gid, at_us)
            if book.account.kind is AccountKind.ENTERPRISE:
                raise InputError("pack", "packs are bought by user accounts; enterprises subscribe")
            grant = Grant(gid, AccountId(account_id), plan.grant_kind, plan.credits_uc, plan.priority, at_us,
                          grant_expiry(plan, at_us), plan.name, source, tx.next_grant_seq(), at_us)
            book.add_grant(grant, at_us)
            package = book.package(book.grant(gid) or grant, at_us)
            tx.persist([book], at_us)
            return package

        return self._write(work)

    # -- enterprises --------------------------------------------------------------------------

    def _enterprise(self, tx: Transaction, enterprise_id: str) -> Account:
        found = tx.get_account(enterprise_id)
        if found is None or found[0].kind is not AccountKind.ENTERPRISE:
            raise NotFound("enterprise", enterprise_id, "enterprise_id")
        return found[0]

    def add_member(self, enterprise_id: str, account_id: str, at_us: int,
                   role: str = "member") -> Member:
        """Make a user account a member (or admin) of an enterprise; again changes the role."""
        check_id(enterprise_id, "enterprise_id")
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        try:
            member_role = MemberRole(role)
        except ValueError:
            raise InputError("role", f"must be one of {', '.join(r.value for r in MemberRole)}") from None

        def work(tx: Transaction) -> Member:
            self._enterprise(tx, enterprise_id)
            found = tx.get_account(account_id)
            if found is None:
                raise NotFound("account", account_id, "account_id")
            if found[0].kind is not AccountKind.USER:
                raise InputError("account_id", "members are user accounts")
            member = Member(enterprise_id, account_id, member_role, at_us)
            tx.upsert_member(member)
            return next(m for m in tx.list_members(enterprise_id) if m.account_id == account_id)

        return self._write(work)

    def remove_member(self, enterprise_id: str, account_id: str, at_us: int) -> None:
        """Remove a member. The quota already added stays theirs until revoked or expired."""
        check_id(enterprise_id, "enterprise_id")
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> None:
            self._enterprise(tx, enterprise_id)
            self._book(tx, enterprise_id, at_us)  # serialised with the enterprise's allocations
            if not tx.delete_member(enterprise_id, account_id):
                raise NotFound("member", account_id, "account_id")

        self._write(work)

    def allocate(self, enterprise_id: str, member_id: str, amount_uc: int, at_us: int, *,
                 expires_at_us: int | None = None, allocation_id: str | None = None) -> Package:
        """Add quota to a member (SPEC §8): ``amount_uc`` moves out of the pool, in burn-down
        order, from pool grants valid until at least ``expires_at_us``, into a new ``enterprise``
        grant on the member expiring then. Without ``expires_at_us`` the quota lasts as long as
        the pool credits it came from (the earliest expiry among them). Idempotent by id."""
        check_id(enterprise_id, "enterprise_id")
        check_id(member_id, "account_id")
        _check_instant(at_us, "at")
        _check_amount(amount_uc)
        if expires_at_us is not None:
            _check_instant(expires_at_us, "expires")
            if expires_at_us <= at_us:
                raise InputError("expires", "is in the past")
        key = check_id(allocation_id, "id") if allocation_id is not None else uuid.uuid4().hex
        # The member's grant id lives in the allocations' own namespace, per enterprise: an
        # admin's id can never take (or reveal) another tenant's package id.
        aid = allocation_grant_id(enterprise_id, key)
        request_fp = _request_fp(enterprise_id, member_id, amount_uc, expires_at_us)

        def existing(tx: Transaction) -> Package | None:
            found = tx.get_allocation(aid)
            if found is None:
                return None
            if found[1] != request_fp:
                raise Conflict(f"allocation id {aid!r} was already used for another allocation")
            return self._package(tx, member_id, GrantId(aid), at_us)

        def work(tx: Transaction) -> Package:
            enterprise = self._enterprise(tx, enterprise_id)
            done = existing(tx)  # a retry answers what the first call made
            if done is not None:
                return done
            # Not a member (existing or not: an admin learns nothing about other accounts).
            if tx.member_role(enterprise_id, member_id) is None:
                raise InputError("account_id", f"{member_id!r} is not a member of {enterprise_id!r}")
            books = tx.load_books([enterprise_id, member_id])  # both locked, in id order
            pool, member = books[AccountId(enterprise_id)], books[AccountId(member_id)]
            done = existing(tx)  # made meanwhile, by a call that held the lock first
            if done is not None:
                return done
            if tx.member_role(enterprise_id, member_id) is None:  # again, under the lock
                raise InputError("account_id", f"{member_id!r} is not a member of {enterprise_id!r}")
            pool.advance(at_us)
            member.advance(at_us)
            until = expires_at_us
            if until is None:  # as long as the pool credits last: the earliest drawn grant's expiry
                parts = pool.allocate_out(amount_uc, 0, at_us, aid)  # from any usable pool grant
                if parts is None:
                    raise InputError("amount", f"the pool of {enterprise_id!r} has only "
                                     f"{format_credits(pool.available_uc(at_us))} credits available")
                ends = [g.expires_at_us for g in pool.grants
                        if g.expires_at_us is not None and any(p.grant_id == g.id for p in parts)]
                until = min(ends) if ends else None
            else:
                parts = pool.allocate_out(amount_uc, until, at_us, aid)
                if parts is None:
                    lasting = sum(amount for gid, amount in pool.drawable(at_us)
                                  if _lasts_until(pool.grant(gid), until))
                    raise InputError("amount", f"the pool of {enterprise_id!r} has only "
                                     f"{format_credits(lasting)} credits valid until "
                                     f"{format_instant(until)}")
            grant = Grant(GrantId(aid), AccountId(member_id), GrantKind.ENTERPRISE, amount_uc,
                          GrantKind.ENTERPRISE.default_priority, at_us, until,
                          f"{enterprise.name} quota"[:255], source_of(enterprise_id), tx.next_grant_seq(),
                          at_us)
            member.add_grant(grant, at_us)
            tx.persist([pool, member], at_us)
            tx.insert_allocation(QuotaAllocation(aid, enterprise_id, member_id, amount_uc, tuple(parts),
                                                 at_us), request_fp)
            return member.package(member.grant(grant.id) or grant, at_us)

        return self._write(work)

    def revoke_allocation(self, allocation_id: str, at_us: int) -> QuotaAllocation:
        """Revoke quota: what the member has not used (nor holds) is voided on the member's grant
        and returned to the pool grants it came from. Revoking again changes nothing."""
        check_id(allocation_id, "grant_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> QuotaAllocation:
            allocation, books = _read_locked(tx, lambda: tx.get_allocation(allocation_id),
                                             lambda found: [found.enterprise_id, found.member_id],
                                             ("allocation", allocation_id, "grant_id"))
            if allocation.revoked_at_us is not None:
                return allocation
            pool, member = books[AccountId(allocation.enterprise_id)], books[AccountId(allocation.member_id)]
            pool.advance(at_us)
            member.advance(at_us)
            grant = member.grant(GrantId(allocation.id))
            assert grant is not None
            unused = 0
            package = member.package(grant, at_us)
            if package.held_uc:
                raise Conflict(f"{format_credits(package.held_uc)} credits of this quota are held by "
                               "requests in flight; revoke once they are settled or released")
            if package.status not in (GrantStatus.EXPIRED, GrantStatus.VOIDED):  # else: nothing left
                unused = package.remaining_uc
                member.void(grant, at_us)
            if unused:
                pool.return_in(allocation.parts, unused, at_us, allocation.id)
                pool.pay_overage(at_us)
            tx.persist([pool, member], at_us)
            tx.revoke_allocation(allocation.id, at_us, unused)
            return replace(allocation, revoked_at_us=at_us, returned_uc=unused)

        return self._write(work)

    def allocation(self, allocation_id: str) -> QuotaAllocation:
        return self._lookup(lambda tx: _first(tx.get_allocation(allocation_id)), "allocation",
                            allocation_id, "allocation_id")

    def enterprise(self, enterprise_id: str, at_us: int) -> EnterpriseView:
        """An enterprise's pool, members and allocations, and each member's quota figures."""
        check_id(enterprise_id, "enterprise_id")
        _check_instant(at_us, "at")
        with self._read() as tx:
            account = self._enterprise(tx, enterprise_id)
            pool = self._book(tx, enterprise_id, at_us).balance(at_us)
            members = tx.list_members(enterprise_id)
            allocations = tx.list_allocations(enterprise_id)
            books = tx.load_books([m.account_id for m in members] + [a.member_id for a in allocations])
        source = source_of(enterprise_id)
        quota: dict[str, list[Package]] = {}
        for member_id, book in books.items():
            book.advance(at_us)
            quota[member_id] = [book.package(g, at_us) for g in book.grants if g.source == source]
        return EnterpriseView(account, pool, members, allocations, quota)

    # -- keys --------------------------------------------------------------------------------

    def create_key(self, account_id: str | None, at_us: int, name: str | None = None) -> tuple[ApiKey, str]:
        """A new key for an account (or, with ``account_id=None``, an operator key).

        Returns the stored key and its secret; the secret is not kept and cannot be shown again.
        """
        if account_id is not None:
            check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        if name is not None and (not isinstance(name, str) or len(name) > 255):
            raise InputError("name", "must be a string of at most 255 characters")
        secret = new_secret()
        role = Role.ACCOUNT if account_id else Role.OPERATOR
        key = ApiKey(f"key_{uuid.uuid4().hex[:16]}", secret[:10], role, account_id, name or "", at_us, None)

        def work(tx: Transaction) -> ApiKey:
            if account_id is not None and tx.get_account(account_id) is None:
                raise NotFound("account", account_id, "account_id")
            tx.insert_key(key, digest(secret))
            return key

        return self._write(work), secret

    def keys(self, account_id: str | None = None) -> list[ApiKey]:
        """Stored keys (never their secrets): an account's, or every key."""
        with self._read() as tx:
            if account_id is not None and tx.get_account(account_id) is None:
                raise NotFound("account", account_id, "account_id")
            return tx.list_keys(account_id)

    def get_key(self, key_id: str) -> ApiKey:
        return self._lookup(lambda tx: tx.get_key(key_id), "key", key_id, "key_id")

    def revoke_key(self, key_id: str, at_us: int) -> ApiKey:
        """Revoke a key; it stops working at once. Revoking again changes nothing."""
        check_id(key_id, "key_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> ApiKey:
            if tx.get_key(key_id) is None:
                raise NotFound("key", key_id, "key_id")
            tx.revoke_key(key_id, at_us)
            key = tx.get_key(key_id)
            assert key is not None
            return key

        return self._write(work)

    def authenticate(self, secret: str) -> Principal | None:
        """The caller a presented key stands for; None for an unknown or revoked key."""
        if not secret.startswith("cm_") or len(secret) > 255:
            return None
        presented = digest(secret)
        with self._read() as tx:
            found = tx.find_key(presented)
            if found is None or not same_digest(found[1], presented) or found[0].revoked_at_us is not None:
                return None
            key = found[0]
            admin_of = frozenset(tx.administered(key.account_id)) if key.account_id else frozenset()
        return Principal(key.role, key.account_id, key.id, admin_of)

    # -- views -------------------------------------------------------------------------------

    def balance(self, account_id: str, at_us: int) -> Balance:
        """The account's credits as they stand at ``at_us`` (nothing is written)."""
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        with self._read() as tx:
            balance = self._book(tx, account_id, at_us).balance(at_us)
            sub = current_subscription(tx.list_subscriptions(account_id), at_us)
            index = sub.index_at(at_us) if sub is not None and sub.recurring else None
            if sub is not None and index is not None:
                (start, end), basis = sub.period(index), "subscription"
            else:
                (start, end), basis = month_bounds(at_us), "calendar_month"
            period = Period(start, end, tx.used_between(account_id, start, end), basis)
            return replace(balance, period=period, subscription=sub)

    def _locked_hold(self, tx: Transaction, hold_id: str, at_us: int) -> tuple[Hold, Book]:
        """The hold as it stands once its account is locked (read again after the lock, so a
        concurrent settle or release is seen), and the account's book."""
        hold, books = _read_locked(tx, lambda: tx.get_hold(hold_id), lambda found: [found.account_id],
                                   ("hold", hold_id, "hold_id"))
        book = books[hold.account_id]
        book.advance(at_us)
        return hold, book

    def _book(self, tx: Transaction, account_id: str, at_us: int) -> Book:
        book = tx.load_books([account_id]).get(AccountId(account_id))
        if book is None:
            raise NotFound("account", account_id, "account_id")
        book.advance(at_us)
        return book

    def _package(self, tx: Transaction, account_id: str, grant_id: GrantId, at_us: int) -> Package:
        book = self._book(tx, account_id, at_us)
        grant = book.grant(grant_id)
        assert grant is not None
        return book.package(grant, at_us)

    # -- maintenance -------------------------------------------------------------------------

    def tick(self, at_us: int) -> TickReport:
        """Grant subscription renewals due, then time out holds, pay overage from new credits
        and record expiries. Idempotent: running it twice, late, or at once from two processes
        does nothing twice."""
        _check_instant(at_us, "at")
        renewed, failed = self._renew(at_us)

        def work(tx: Transaction) -> TickReport:
            books = tx.load_books(tx.accounts_to_tick(at_us))
            expired = 0
            entries = 0
            for book in books.values():
                book.advance(at_us)
                book.sweep(at_us)
                expired += sum(1 for h in book.ended_holds if h.status is HoldStatus.EXPIRED)
                entries += len(book.entries)
            tx.persist(books.values(), at_us)
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


X = TypeVar("X")


def open_engine(url: str = "sqlite:///creditmeter.db", settings: Settings | None = None) -> Engine:
    """An engine on the database at ``url`` (SQLite files get their schema on first use)."""
    return Engine(SqlStore(url), settings)


def _read_locked(tx: Transaction, fetch: Callable[[], tuple[X, object] | None],
                 accounts: Callable[[X], list[str]],
                 missing: tuple[str, str, str]) -> tuple[X, dict[AccountId, Book]]:
    """The object ``fetch`` reads, as it stands once the accounts it names are locked: read it,
    lock (load) those accounts, read it again, so a write that got there first is seen. A missing
    object is ``NotFound(*missing)`` (what, id, field)."""
    found = fetch()
    if found is None:
        raise NotFound(*missing)
    books = tx.load_books(accounts(found[0]))
    found = fetch()
    assert found is not None
    return found[0], books


def _version_at(prices: PriceBook, at_us: int) -> PriceVersion:
    version = prices.at(at_us)
    if version is None:
        raise InputError("timestamp", f"no price catalog is effective at {format_instant(at_us)}")
    return version


def _check_instant(value: object, field: str) -> None:
    if type(value) is not int or not MIN_US <= value <= MAX_US:
        raise InputError(field, f"must be an instant (whole µs since the epoch, 0..{MAX_US}), "
                         f"got {value!r}")


def _check_amount(amount_uc: object) -> None:
    if type(amount_uc) is not int or not 0 < amount_uc <= MAX_UC:
        raise InputError("amount", "must be a whole number of µc, greater than zero and at most "
                         "10^12 credits")


def _check_overage_room(book: Book, cost_uc: int) -> None:
    """An account's overage is bounded like any amount; an event that could pass it is refused."""
    if book.overage_uc + cost_uc > MAX_UC:
        raise InputError("event", "would take the account's overage past 10^12 credits")


@dataclass(frozen=True, slots=True)
class EnterpriseView:
    """An enterprise at an instant: its pool, members, allocations and each member's quota
    packages (the grants its allocations put on them)."""

    account: Account
    pool: Balance
    members: list[Member]
    allocations: list[QuotaAllocation]
    quota: dict[str, list[Package]]


def _raise_failed(failed: list[str]) -> None:
    if failed:
        raise Unavailable(f"{len(failed)} renewal(s) did not go through (the rest of the work did; "
                          f"run it again): {'; '.join(failed[:3])}")


def _first(found: tuple[T, str] | None) -> T | None:
    """The object of a ``(object, request fingerprint)`` lookup."""
    return None if found is None else found[0]


def _lasts_until(grant: Grant | None, until_us: int) -> bool:
    return grant is not None and (grant.expires_at_us is None or grant.expires_at_us >= until_us)


class _BookCache(OrderedDict[AccountId, Book]):
    """A bounded map of books, least recently stored dropped first."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: AccountId, value: Book) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def _settle_event(event_id: str, hold: Hold, usage: Usage) -> UsageEvent:
    tokens = [usage.input_tokens, usage.output_tokens, usage.cached_input_tokens,
              usage.cache_write_tokens]
    for name, value in zip(("input_tokens", "output_tokens", "cached_input_tokens",
                            "cache_write_tokens"), tokens, strict=True):
        if type(value) is not int or value < 0:
            raise InputError(name, f"must be a whole number ≥ 0, got {value!r}")
    for name, value in usage.quantities:
        if not isinstance(name, str) or not name or len(name) > 255:
            raise InputError("quantities", "feature names must be strings of 1-255 characters")
        if type(value) is not int or not 0 <= value <= MAX_TOKENS:
            raise InputError(f"quantities.{name}", f"must be a whole number ≥ 0, got {value!r}")
    if usage.model is None and not usage.quantities:
        raise InputError("model", "is required (or quantities of priced features)")
    metadata = dict(usage.metadata or {})
    return UsageEvent(
        id=EventId(event_id), account_id=hold.account_id, timestamp_us=None, model=usage.model,
        input_tokens=tokens[0], output_tokens=tokens[1], cached_input_tokens=tokens[2],
        cache_write_tokens=tokens[3], quantities=usage.quantities, metadata=metadata,
        fingerprint=fingerprint(hold.account_id, None, usage.model, tokens, usage.quantities,
                                {**metadata, "hold_id": hold.id}),
    )


def _duplicate(event: UsageEvent, original_fp: str, original: Charge) -> Charge | Rejected:
    if event.fingerprint != original_fp:
        return Rejected(event.id, Conflict(
            "id: this event id was already used for an event with a different body"))
    return original._replace(status="duplicate")


