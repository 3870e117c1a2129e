"""Usage events: charging them exactly once, and reading back what was charged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
from creditmeter.engine._unit import EngineBase, _check_instant, _check_overage_room, _version_at
from creditmeter.errors import Conflict, CreditmeterError, InputError, NotFound
from creditmeter.events import check_id, parse_event
from creditmeter.ledger import Book
from creditmeter.pricing import PriceBook, PriceVersion, rate
from creditmeter.store.base import EventTaken, Transaction
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
            books = tx.load_books(accounts, self._books)  # locks them
            stored = tx.find_events([e.id for _, e in parsed])
            if taken is not None and len(stored) <= found:
                raise taken  # nothing more is visible to this transaction: start it over
            found = len(stored)
            try:
                self._charge_new(tx, prices, parsed, stored, books, results, at_us)
                return
            except EventTaken as exc:
                taken = exc
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


def _duplicate(event: UsageEvent, original_fp: str, original: Charge) -> Charge | Rejected:
    if event.fingerprint != original_fp:
        return Rejected(event.id, Conflict(
            "id: this event id was already used for an event with a different body"))
    return original._replace(status="duplicate")
