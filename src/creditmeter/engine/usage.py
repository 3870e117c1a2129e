"""Usage events: charging them exactly once, and reading back what was charged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from creditmeter.domain import (
    AccountId,
    AccountKind,
    Charge,
    PageMark,
    Rejected,
    StoredEvent,
    SummaryRow,
    UsageEvent,
)
from creditmeter.engine._unit import (
    EngineBase,
    _check_instant,
    _check_overage_room,
    _rate_event,
    _version_at,
)
from creditmeter.enterprise import enterprise_share, share_summary
from creditmeter.errors import Conflict, CreditmeterError, InputError, NotFound, let_frames_go
from creditmeter.events import check_id, check_something_used, checked, parse_event
from creditmeter.ids import check_text
from creditmeter.ledger import Book
from creditmeter.pricing import PriceBook, PriceVersion
from creditmeter.store.base import EventTaken, Transaction
from creditmeter.terms import owed_at
from creditmeter.timeutil import DAY_S, US_PER_S, format_instant

SETTLE_ID_PREFIX = "hold:"  # default event id of a settle; producers' event ids may not use it
MAX_PAGE = 1_000
GROUPS = ("day", "model")


class UsageCommands(EngineBase):
    """Record events one by one or in batches; list, page and sum them up."""

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
                event = checked(item) if isinstance(item, UsageEvent) else parse_event(item)
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
        """Charge the events not stored yet; the others answer duplicate (or conflict).

        The accounts are locked before looking for the events, so that look and the write are
        serialised with every other writer of those accounts. An event of the same id naming
        another account may still be stored meanwhile: then nothing of this attempt was written
        (``EventTaken``), and the events are looked for and charged again, in this transaction,
        until none of them is taken (each round finds at least one more stored).
        """
        prices = self.price_book(tx)
        accounts = {e.account_id for _, e in parsed}
        taken: EventTaken | None = None
        found = 0
        while True:
            books = tx.load_books(accounts, self._books, at_us)  # locks them
            stored = tx.find_events([e.id for _, e in parsed])
            if taken is not None and len(stored) <= found:
                raise taken  # nothing more is visible to this transaction: start it over
            found = len(stored)
            try:
                self._charge_new(tx, prices, parsed, stored, books, results, at_us)
                return
            except EventTaken as exc:
                taken = exc
                let_frames_go(exc)  # kept past this round: not its frames (see errors)
                for account_id in accounts:  # their books hold changes that were never written
                    self._books.pop(AccountId(account_id), None)

    def _charge_new(self, tx: Transaction, prices: PriceBook, parsed: list[tuple[int, UsageEvent]],
                    stored: dict[str, StoredEvent], books: dict[AccountId, Book],
                    results: list[Charge | Rejected | None], at_us: int) -> None:
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
                cost = _rate_event(version.catalog, event, ts)
                if cost == 0:
                    check_something_used(event)
                _check_overage_room(book, cost)
            except CreditmeterError as exc:
                results[index] = Rejected(event.id, exc)
                continue
            if event.account_id not in advanced:
                self._bring(tx, book, at_us)
                advanced.add(event.account_id)
            topup = None
            if book.terms is not None:  # the rollovers and packages usable at the event's time
                owed_at(book, ts, at_us, tx.next_grant_seq)
                topup = book.terms.own_topup
            before = book.available_uc(at_us) if topup is not None else 0
            charge = book.charge(event, cost, version.version, ts, at_us)
            if topup is not None:  # a top-up is decided charge by charge, as one by one
                self._charged(tx, book, before, at_us)
            results[index] = charge
            seen[event.id] = (event.fingerprint, charge)
        self._persist(tx, books.values(), at_us, undo_taken=True)  # see _charge_events

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
        ``member`` (on an enterprise account) lists that member's usage as far as the
        enterprise paid for it (see :func:`creditmeter.enterprise.enterprise_share`).
        """
        scope = self._usage_scope(account_id, member, model)
        return self._stream_usage(scope, from_us, to_us, model, limit)

    def _usage_scope(self, account_id: str, member: str | None, model: str | None) -> _Scope:
        check_id(account_id, "account_id")
        if model is not None:
            check_text(model, "model")
        if member is not None:
            check_id(member, "member")
        with self._read() as tx:
            found = tx.get_account(account_id)
            if found is None:
                raise NotFound("account", account_id, "account_id")
            if member is None:
                return _Scope(account_id, None)
            if found[0].kind is not AccountKind.ENTERPRISE:
                raise InputError("member", "only an enterprise account's usage is filtered by member")
            if tx.member_role(account_id, member) is None:
                raise InputError("member", f"{member!r} is not a member of {account_id!r}")
            # The enterprise's quota on the member: its allocations' grants (revoked ones too).
            return _Scope(member, frozenset(tx.quota_grant_ids(account_id, member)))

    def _stream_usage(self, scope: _Scope, from_us: int | None, to_us: int | None,
                      model: str | None, limit: int | None) -> Iterator[StoredEvent]:
        if scope.quota is not None and not scope.quota:
            return
        with self._read() as tx:
            for stored in tx.list_events([scope.account_id], from_us, to_us, model, limit,
                                         paid_by=_sorted(scope.quota)):
                shown = scope.show(stored)
                if shown is not None:
                    yield shown

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
        scope = self._usage_scope(account_id, member, model)
        if scope.quota is not None and not scope.quota:
            return [], None
        with self._read() as tx:
            if max_seq is None:
                max_seq = tx.last_event_seq()
            page = list(tx.list_events([scope.account_id], from_us, to_us, model, limit + 1, before,
                                       max_seq, paid_by=_sorted(scope.quota)))
        more = len(page) > limit
        page = page[:limit]
        mark = PageMark(page[-1].charge.timestamp_us, page[-1].seq, max_seq) if more else None
        return [shown for shown in map(scope.show, page) if shown is not None], mark

    def usage_summary(self, account_id: str, group_by: str, *, from_us: int | None = None,
                      to_us: int | None = None, model: str | None = None,
                      member: str | None = None) -> list[SummaryRow]:
        """Requests, tokens and credits per UTC day or per model (for a member of an
        enterprise: of the events the enterprise paid part of, and those parts' credits)."""
        if group_by not in GROUPS:
            raise InputError("group_by", f"must be one of {', '.join(GROUPS)}")
        scope = self._usage_scope(account_id, member, model)
        if scope.quota is None:
            with self._read() as tx:
                return tx.usage_summary([account_id], from_us, to_us, model, group_by)
        return share_summary(self._stream_usage(scope, from_us, to_us, model, None), group_by)


@dataclass(frozen=True, slots=True)
class _Scope:
    """Whose events a usage read lists, and (for an enterprise's view of a member) the
    enterprise's quota packages on them: only what those paid is shown."""

    account_id: str
    quota: frozenset[str] | None

    def show(self, stored: StoredEvent) -> StoredEvent | None:
        return stored if self.quota is None else enterprise_share(stored, self.quota)


def _sorted(quota: frozenset[str] | None) -> list[str] | None:
    return None if quota is None else sorted(quota)


def _duplicate(event: UsageEvent, original_fp: str, original: Charge) -> Charge | Rejected:
    if event.fingerprint != original_fp:
        return Rejected(event.id, Conflict(
            "id: this event id was already used for an event with a different body"))
    return original._replace(status="duplicate")
