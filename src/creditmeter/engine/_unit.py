"""The unit of work every engine command runs in, and the checks commands share.

A command runs in one transaction: ``_write`` retries it whole when other writers changed the same
accounts first, ``_read`` reads. Inside it, a command loads the books of the accounts it touches
(``_book``), prices with the cached catalog versions (``price_book``) and checks its arguments with
the checks here, so every area refuses the same bad input in the same words.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson

from creditmeter.alert_rules import AlertRule
from creditmeter.alerts import Alert
from creditmeter.domain import AccountId, Balance, GrantId, HoldId, Package, Period, UsageEvent
from creditmeter.errors import InputError, NotFound, Unavailable, let_frames_go
from creditmeter.events import MAX_TOKENS
from creditmeter.ids import check_id
from creditmeter.ledger import Book
from creditmeter.money import MAX_UC
from creditmeter.pricing import Catalog, PriceBook, PriceVersion, rate
from creditmeter.store.base import LostConnection, Store, Transaction, Transient
from creditmeter.subscriptions import current_subscription
from creditmeter.terms import Running, Terms, owed_now, provide_since
from creditmeter.timeutil import DAY_S, MAX_US, MIN_US, format_instant, month_bounds

T = TypeVar("T")
X = TypeVar("X")
E = TypeVar("E", bound=enum.StrEnum)


@dataclass(frozen=True, slots=True)
class Settings:
    """Engine settings.

    Attributes:
      lateness_window_s: how old an event's timestamp may be (default 7 days).
      max_future_s: how far ahead of now an event's timestamp may be (5 minutes).
      default_hold_ttl_s: a hold's ttl when none is given (10 minutes).
      book_cache_size: how many accounts' books batch ingestion keeps between batches.
      write_attempts: how often a write is tried when other writers changed the same accounts.
      alert_rules: the alert rules every account is watched with (besides its plan's).
    """

    lateness_window_s: int = 7 * DAY_S
    max_future_s: int = 300
    default_hold_ttl_s: int = 600
    book_cache_size: int = 20_000
    write_attempts: int = 5
    alert_rules: tuple[AlertRule, ...] = ()


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


class EngineBase:
    """What every area of the engine shares: the store, the settings, the caches of prices and
    books, and the transactions commands run in."""

    def __init__(self, store: Store, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or Settings()
        self._prices: PriceBook | None = None
        self._prices_version = -1
        # Books kept between batches; each is reused only while its account's stored version
        # is unchanged (see Transaction.load_books).
        self._books = _BookCache(self.settings.book_cache_size)

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
                    break  # the last keeps its traceback: it is the cause of the error raised
                let_frames_go(exc)  # kept past this attempt: not its frames (see errors)
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

    def _book(self, tx: Transaction, account_id: str, at_us: int, *, write: bool = True) -> Book:
        """The account's book (locked in a write) brought to ``at_us`` (see :meth:`_bring`)."""
        book = tx.load_books([account_id], lapsed_by_us=at_us).get(AccountId(account_id))
        if book is None:
            raise NotFound("account", account_id, "account_id")
        self._bring(tx, book, at_us, write=write)
        return book

    def _bring(self, tx: Transaction, book: Book, at_us: int, *, write: bool = True) -> None:
        """Bring a loaded book to ``at_us``: what its terms owe first (a rollover counts what
        holds held at its period's end), then holds past their ttl end and overage is paid."""
        self._provide(tx, book, at_us, write=write)
        book.advance(at_us)
        if write:
            self._mark(book, at_us)

    def _mark(self, book: Book, at_us: int) -> None:
        """Note what ``book`` stands at before the command changes it (see ``engine.alerting``)."""

    def _charged(self, tx: Transaction, book: Book, before_uc: int, at_us: int) -> None:
        """After a charge of a batch that took the available credits from ``before_uc``: what it
        alone raises (see ``engine.alerting``)."""

    def _persist(self, tx: Transaction, books: Iterable[Book], at_us: int,
                 grant_fps: dict[GrantId, str] | None = None,
                 hold_fps: dict[HoldId, str] | None = None, *, undo_taken: bool = False,
                 last: bool = False) -> None:
        """Write what the books' transitions produced, with the alerts their changes raise;
        ``undo_taken``: see ``Transaction.persist`` (only a command that charges again in the
        same transaction on ``EventTaken`` asks for it). ``last``: the command writes nothing
        after it, so (no alert to write either) the write may commit the transaction."""
        books = list(books)
        alerts = self._raise_alerts(tx, books, at_us)
        tx.persist(books, at_us, grant_fps, hold_fps, undo_taken=undo_taken, commit=last and not alerts)
        for alert in alerts:  # only once the changes are written: an undone attempt raises nothing
            tx.insert_alert(alert, at_us)

    def _raise_alerts(self, tx: Transaction, books: list[Book], at_us: int) -> list[Alert]:
        """The alerts the changes to ``books`` raise (see ``engine.alerting``)."""
        return []

    @staticmethod
    def _provide(tx: Transaction, book: Book, at_us: int, *, write: bool = True) -> None:
        """Make what the account's terms owe it at ``at_us`` (the rollovers of periods over, the
        packages of the periods running), written with the command's other changes; a read
        derives them the same way and writes nothing."""
        if book.terms is None:
            return
        seq = tx.next_grant_seq if write else itertools.count(1 << 62).__next__
        if book.overage_uc and book.overage_since_us is not None:  # each period since paid it
            provide_since(book, book.overage_since_us, at_us, at_us, seq)
        owed_now(book, at_us, seq)

    @staticmethod
    def _refresh_terms(tx: Transaction, book: Book, **own: object) -> None:
        """Rewrite the account's terms from its subscriptions (and its own ``own_limits`` or
        ``own_policy`` when given), in the same transaction as the change they come from."""
        old: Terms = book.terms or Terms()
        subs = tuple(Running(s.id, s.plan, s.seats or 1, s.anchor_us, s.ends_at_us)
                     for s in tx.list_subscriptions(book.account.id) if s.recurring or s.plan.recurs)
        terms = replace(old, subscriptions=subs, **own)  # type: ignore[arg-type]
        if terms.to_json() != old.to_json():
            tx.set_terms(book, terms)

    def _balance(self, tx: Transaction, account_id: str, at_us: int) -> Balance:
        """The account's balance at ``at_us`` with its running subscription and the period the
        figures of consumption cover (the subscription's, else the calendar month)."""
        book = self._book(tx, account_id, at_us, write=False)
        balance = book.balance(at_us)
        sub = current_subscription(tx.list_subscriptions(account_id), at_us)
        index = sub.index_at(at_us) if sub is not None and sub.recurring else None
        if sub is not None and index is not None:
            (start, end), basis = sub.period(index), "subscription"
        else:
            (start, end), basis = month_bounds(at_us), "calendar_month"
        period = Period(start, end, tx.used_between(account_id, start, end), basis)
        return replace(balance, period=period, subscription=sub, **self._terms_figures(tx, book, at_us))

    def _terms_figures(self, tx: Transaction, book: Book, at_us: int) -> dict[str, Any]:
        """The balance's allowances, limits and policy (see ``engine.limits``)."""
        return {}
    def _package(self, tx: Transaction, account_id: str, grant_id: GrantId, at_us: int) -> Package:
        book = self._book(tx, account_id, at_us)
        grant = book.grant(grant_id)
        assert grant is not None
        return book.package(grant, at_us)

    def _lookup(self, fetch: Callable[[Transaction], T | None], what: str, ident: str, field: str) -> T:
        """One stored object by id, or ``NotFound`` naming ``field``."""
        check_id(ident, field)
        with self._read() as tx:
            found = fetch(tx)
        if found is None:
            raise NotFound(what, ident, field)
        return found


def _read_locked(tx: Transaction, fetch: Callable[[], tuple[X, object] | None],
                 accounts: Callable[[X], list[str]],
                 missing: tuple[str, str, str], at_us: int) -> tuple[X, dict[AccountId, Book]]:
    """The object ``fetch`` reads, as it stands once the accounts it names are locked: read it,
    lock (load, to be brought to ``at_us``) those accounts, read it again, so a write that got
    there first is seen. A missing object is ``NotFound(*missing)`` (what, id, field)."""
    found = fetch()
    if found is None:
        raise NotFound(*missing)
    books = tx.load_books(accounts(found[0]), lapsed_by_us=at_us)
    found = fetch()
    assert found is not None
    return found[0], books


def _version_at(prices: PriceBook, at_us: int) -> PriceVersion:
    version = prices.at(at_us)
    if version is None:
        raise InputError("timestamp", f"no price catalog is effective at {format_instant(at_us)}")
    return version


def _rate_event(catalog: Catalog, event: UsageEvent, at_us: int) -> int:
    """What ``event`` costs with ``catalog``: every kind of token it states, its service tier,
    and ``at_us``, its time (which decides any off-peak window)."""
    return rate(catalog, event.model, event.input_tokens, event.output_tokens,
                event.cached_input_tokens, event.cache_write_tokens, event.quantities,
                reasoning_tokens=event.reasoning_tokens,
                cache_write_1h_tokens=event.cache_write_1h_tokens,
                service_tier=event.service_tier, at_us=at_us)


def _one_of(kind: type[E], value: str, field: str) -> E:
    """``value`` as a member of the enum ``kind``, or an error naming ``field`` and the choices."""
    try:
        return kind(value)
    except ValueError:
        raise InputError(field, f"must be one of {', '.join(k.value for k in kind)}") from None


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


def _check_request_tokens(input_tokens: int, max_output_tokens: int) -> None:
    """A chat request's token counts, as an estimate of its cost takes them."""
    for name, value in (("input_tokens", input_tokens), ("max_output_tokens", max_output_tokens)):
        if type(value) is not int or not 0 <= value <= MAX_TOKENS:
            raise InputError(name, f"must be a whole number ≥ 0, got {value!r}")


def _request_fp(*parts: object) -> str:
    return hashlib.blake2b(orjson.dumps(parts), digest_size=16).hexdigest()


def _first(found: tuple[T, str] | None) -> T | None:
    """The object of a ``(object, request fingerprint)`` lookup."""
    return None if found is None else found[0]
