"""Holds: credits reserved for a request in flight, then settled with its usage or released."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from creditmeter.allowances import LimitStatus
from creditmeter.domain import Charge, EventId, Hold, HoldId, HoldStatus, Refused, Rejected, UsageEvent
from creditmeter.engine._unit import (
    EngineBase,
    _check_amount,
    _check_instant,
    _check_overage_room,
    _check_request_tokens,
    _rate_event,
    _request_fp,
    _version_at,
)
from creditmeter.engine.alerting import limit_alert, limit_usage_alerts, merged_rules
from creditmeter.engine.limits import admit
from creditmeter.engine.usage import SETTLE_ID_PREFIX, _duplicate
from creditmeter.errors import Conflict, InputError, NotFound
from creditmeter.events import MAX_TOKENS, TOKEN_FIELDS, fingerprint, parse_service_tier
from creditmeter.ids import check_id, check_new_id
from creditmeter.ledger import Book
from creditmeter.pricing import estimate
from creditmeter.store.base import Transaction
from creditmeter.timeutil import DAY_S

MAX_HOLD_TTL_S = 7 * DAY_S
MAX_KEY_ID = 64


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
    reasoning_tokens: int = 0  # not also in output_tokens
    cache_write_1h_tokens: int = 0  # not also in cache_write_tokens
    service_tier: str | None = None  # "priority", "flex"; None: standard


class HoldCommands(EngineBase):
    """Reserve, settle (exactly once) and release holds."""

    def reserve(self, account_id: str, amount_uc: int, at_us: int, *, ttl_s: int | None = None,
                hold_id: str | None = None, key_id: str | None = None) -> Hold | Refused:
        """Hold credits for a request in flight; refused (a value) when they are not there (or
        past what the account's policy lets it run into overage), or when the hold would pass
        one of the account's limits (``Refused.limit`` names it). ``key_id``: the key the
        request came with (its limits count the hold)."""
        _check_amount(amount_uc)
        return self._reserve(account_id, lambda tx: amount_uc, at_us, ttl_s, hold_id, key_id)

    def reserve_estimate(self, account_id: str, model: str, input_tokens: int, max_output_tokens: int,
                         at_us: int, *, ttl_s: int | None = None, hold_id: str | None = None,
                         service_tier: str | None = None, key_id: str | None = None,
                         fallback: bool = False) -> tuple[Hold | Refused, int]:
        """Hold what a chat request may cost at most (:meth:`estimate`) on ``service_tier``,
        priced in the same transaction; answers the hold (or the refusal) and the estimate.

        ``fallback``: ``model`` is the model the account's policy falls back to once its credits
        ran out (a refusal names it in ``Refused.fallback_model``); the hold is made whatever the
        credits, up to the policy's daily cap, and what they do not cover becomes overage."""
        _check_request_tokens(input_tokens, max_output_tokens)
        most = 0

        def amount(tx: Transaction) -> int:
            nonlocal most
            version = _version_at(self.price_book(tx), at_us)
            most = estimate(version.catalog, model, input_tokens, max_output_tokens,
                            service_tier=service_tier)
            return most

        result = self._reserve(account_id, amount, at_us, ttl_s, hold_id, key_id,
                               model if fallback else None)
        return result, most

    def _reserve(self, account_id: str, amount: Callable[[Transaction], int], at_us: int,
                 ttl_s: int | None, hold_id: str | None, key_id: str | None = None,
                 fallback_model: str | None = None) -> Hold | Refused:
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        ttl = self.settings.default_hold_ttl_s if ttl_s is None else ttl_s
        if type(ttl) is not int or not 0 < ttl <= MAX_HOLD_TTL_S:
            raise InputError("ttl", f"must be a whole number of seconds from 1 to {MAX_HOLD_TTL_S}")
        hid = check_new_id(hold_id, "id") if hold_id is not None else f"hld_{uuid.uuid4().hex}"
        if key_id is not None and len(check_id(key_id, "key_id")) > MAX_KEY_ID:
            raise InputError("key_id", f"must be at most {MAX_KEY_ID} characters")

        def work(tx: Transaction) -> Hold | Refused:
            tx.look_ahead(hold_id=hid)  # read with the book, once it is locked
            book = self._book(tx, account_id, at_us)  # locked first: then nothing changes under us
            amount_uc = amount(tx)
            request_fp = _request_fp(account_id, amount_uc, ttl)
            existing = tx.get_hold(hid)
            if existing is not None:
                if existing[1] != request_fp:
                    raise Conflict(f"hold id {hid!r} was already used for another reservation")
                return existing[0]
            checked: list[tuple[LimitStatus, int]] = []
            refused, short_ok, fallback = admit(tx, book, amount_uc, at_us, key_id, fallback_model, checked)
            if refused is None:  # the limits a hold takes past a watched percent of them
                rules = merged_rules(self.settings.alert_rules, book.terms, at_us)
                for status, adding in checked:
                    for reached in limit_usage_alerts(tx, account_id, rules, status, adding, at_us):
                        tx.insert_alert(reached, at_us)
            alert = None if refused is None or refused.limit is None else limit_alert(
                tx, account_id, refused.limit, at_us)
            if alert is not None:
                tx.insert_alert(alert, at_us)
            result = refused or book.reserve(HoldId(hid), amount_uc, ttl, at_us, short_ok=short_ok,
                                             key_id=key_id, fallback=fallback)
            self._persist(tx, [book], at_us, hold_fps={HoldId(hid): request_fp}, last=True)
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
            tx.look_ahead(event_id=eid, price_version=True)  # read with the book, once locked
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
            # Priced with the catalog of the hold: the request began then, under the prices it
            # was reserved at (a catalog loaded while it ran cannot change, or unprice, its
            # charge). Its time, which decides an off-peak window, is when it ended: now.
            version = _version_at(self.price_book(tx), hold.created_at_us)
            cost = _rate_event(version.catalog, event, at_us)
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
            self._persist(tx, [book], at_us, last=True)
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
            self._persist(tx, [book], at_us, last=True)
            return ended

        return self._write(work)

    def _locked_hold(self, tx: Transaction, hold_id: str, at_us: int) -> tuple[Hold, Book]:
        """The hold as it stands once its account is locked (read after the lock, so a
        concurrent settle or release is seen), and the account's book. The account is found
        from the hold by the statements that lock and load it: no lookup of its own first."""
        tx.look_ahead(hold_id=hold_id)  # read once the account is locked, with its book
        book = tx.load_book_of_hold(hold_id, lapsed_by_us=at_us)
        found = tx.get_hold(hold_id)
        if book is None or found is None:
            raise NotFound("hold", hold_id, "hold_id")
        hold = found[0]
        book.take_hold(hold)  # loaded with only the holds past their ttl: this one too, if open
        self._bring(tx, book, at_us)
        return hold, book


def _settle_event(event_id: str, hold: Hold, usage: Usage) -> UsageEvent:
    tokens = [usage.input_tokens, usage.output_tokens, usage.cached_input_tokens,
              usage.cache_write_tokens]
    for name, value in (*zip(TOKEN_FIELDS[:4], tokens, strict=True),
                        ("reasoning_tokens", usage.reasoning_tokens),
                        ("cache_write_1h_tokens", usage.cache_write_1h_tokens)):
        if type(value) is not int or not 0 <= value <= MAX_TOKENS:
            raise InputError(name, f"must be a whole number from 0 to {MAX_TOKENS}, got {value!r}")
    tier = parse_service_tier(usage.service_tier)
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
                                {**metadata, "hold_id": hold.id}, usage.reasoning_tokens,
                                usage.cache_write_1h_tokens, tier),
        reasoning_tokens=usage.reasoning_tokens, cache_write_1h_tokens=usage.cache_write_1h_tokens,
        service_tier=tier,
    )
