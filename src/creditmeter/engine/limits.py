"""Limits on consumption and what a request meets when credits run out: setting them, reading
them, and admitting a hold under them (in the account's lock, with the credits check).

A limit counts, over its window, the credits charged for usage in its scope (whatever paid:
packages or overage) plus what open holds in its scope hold. A hold that would take it past the
limit is refused (``limit_reached``), naming the limit and when enough frees up; usage that
already happened is always recorded, past a limit too, and counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson

from creditmeter.allowances import (
    AllowanceStatus,
    LimitRule,
    LimitStatus,
    OutOfCredits,
    Scope,
    WhenOut,
    parse_limit,
    parse_out_of_credits,
)
from creditmeter.burndown import allocate
from creditmeter.domain import Refused
from creditmeter.engine._unit import EngineBase, _check_instant, _one_of
from creditmeter.enterprise import source_of
from creditmeter.errors import Conflict, InputError, NotFound
from creditmeter.ids import check_id, check_new_id
from creditmeter.ledger import Book
from creditmeter.money import format_credits
from creditmeter.store.base import Transaction
from creditmeter.terms import Terms
from creditmeter.timeutil import DAY_US, MAX_US

SOURCES = ("operator", "owner", "admin")


class LimitCommands(EngineBase):
    """Limits per account, key and enterprise member; the account's policy when credits run out."""

    def set_limit(self, account_id: str, window: str, credits: object, at_us: int, *,
                  scope: str = "account", key_id: str | None = None, enterprise_id: str | None = None,
                  limit_id: str | None = None, calendar: str | None = None,
                  source: str = "operator") -> LimitRule:
        """Set (or replace, by id) a limit on the account's consumption: all of it (``account``),
        what one of its keys spends (``key``), or what an enterprise's quota pays of a member's
        usage (``member``). Credits are a decimal string or number."""
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        kind = _one_of(Scope, scope, "scope")
        if key_id is not None:
            check_id(key_id, "key_id")
        if enterprise_id is not None:
            check_id(enterprise_id, "enterprise_id")
        lid = check_new_id(limit_id, "id", 64) if limit_id is not None else f"lim_{uuid.uuid4().hex[:12]}"
        if lid.startswith("plan-"):
            raise InputError("id", "ids starting with 'plan-' are the plan's limits")
        if source not in SOURCES:
            raise InputError("source", f"must be one of {', '.join(SOURCES)}")
        if (key_id is not None) != (kind is Scope.KEY):
            raise InputError("key_id", "is given for a limit of scope key, and only then")
        if (enterprise_id is not None) != (kind is Scope.MEMBER):
            raise InputError("enterprise_id", "is given for a limit of scope member, and only then")
        body: dict[str, object] = {"window": window, "credits": credits}
        if calendar is not None:
            body["calendar"] = calendar
        rule = parse_limit(body, "limit", lid, source=source, scope=kind, key_id=key_id,
                           enterprise_id=enterprise_id)

        def work(tx: Transaction) -> LimitRule:
            book = self._book(tx, account_id, at_us)
            if kind is Scope.KEY:
                key = tx.get_key(key_id or "")
                if key is None or key.account_id != account_id:
                    raise NotFound("key", key_id or "", "key_id")
            if kind is Scope.MEMBER:
                if tx.member_role(enterprise_id or "", account_id) is None:
                    raise InputError("enterprise_id", f"{account_id!r} is not a member of {enterprise_id!r}")
            terms: Terms = book.terms or Terms()
            previous = next((r for r in terms.own_limits if r.id == lid), None)
            if previous is not None and source != "operator" and _setter(previous) != _setter(rule):
                raise Conflict(f"limit {lid!r} was set by the {previous.source}: only they or the "
                               "operator may change it (choose another id)")
            own = tuple(r for r in terms.own_limits if r.id != lid) + (rule,)
            if len(own) > 50:
                raise Conflict("an account has at most 50 limits of its own")
            self._refresh_terms(tx, book, own_limits=own)
            self._persist(tx, [book], at_us)
            return rule

        return self._write(work)

    def remove_limit(self, account_id: str, limit_id: str, at_us: int, *, source: str = "operator",
                     enterprise_id: str | None = None) -> LimitRule:
        """Remove one of the account's own limits (a plan's limits go with the plan: a conflict).
        ``source`` ``owner`` or ``admin`` (of ``enterprise_id``) removes only a limit it set."""
        check_id(account_id, "account_id")
        check_id(limit_id, "limit_id")
        _check_instant(at_us, "at")
        if source not in SOURCES:
            raise InputError("source", f"must be one of {', '.join(SOURCES)}")

        def work(tx: Transaction) -> LimitRule:
            book = self._book(tx, account_id, at_us)
            terms: Terms = book.terms or Terms()
            found = [r for r in terms.own_limits if r.id == limit_id]
            if not found and any(r.id == limit_id for r in terms.limits(at_us)):
                raise Conflict(f"limit {limit_id!r} is the plan's: it goes with the plan and cannot be "
                               "removed on its own")
            if not found:
                raise NotFound("limit", limit_id, "limit_id")
            if source != "operator" and _setter(found[0]) != (source, enterprise_id):
                raise Conflict(f"limit {limit_id!r} was set by the {found[0].source}: only they or the "
                               "operator may remove it")
            self._refresh_terms(tx, book, own_limits=tuple(r for r in terms.own_limits if r.id != limit_id))
            self._persist(tx, [book], at_us)
            return found[0]

        return self._write(work)

    def limits(self, account_id: str, at_us: int) -> list[LimitStatus]:
        """Every limit in force on the account at ``at_us`` with its used, held and reset time."""
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        with self._read() as tx:
            book = self._book(tx, account_id, at_us, write=False)
            return [limit_status(tx, book, rule, at_us) for rule in _rules(book, at_us)]

    def set_out_of_credits(self, account_id: str, policy: object, at_us: int) -> OutOfCredits:
        """Override the plan's policy when credits run out (``block``, ``{overage: CAP}``,
        ``{fallback: MODEL, daily_cap: N}``); None goes back to the plan's."""
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        parsed = None if policy is None else parse_out_of_credits(policy, "when_out_of_credits")

        def work(tx: Transaction) -> OutOfCredits:
            book = self._book(tx, account_id, at_us)
            self._refresh_terms(tx, book, own_policy=parsed)
            self._persist(tx, [book], at_us)
            return (book.terms or Terms()).policy(at_us)

        return self._write(work)

    def _terms_figures(self, tx: Transaction, book: Book, at_us: int) -> dict[str, Any]:
        terms: Terms = book.terms or Terms()
        return {"allowances": tuple(allowance_statuses(book, at_us)),
                "limits": tuple(limit_status(tx, book, rule, at_us) for rule in terms.limits(at_us)),
                "when_out": terms.policy(at_us)}

    def out_of_credits(self, account_id: str, at_us: int) -> OutOfCredits:
        """The policy in force on the account at ``at_us``."""
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        with self._read() as tx:
            book = self._book(tx, account_id, at_us, write=False)
        return (book.terms or Terms()).policy(at_us)


def allowance_statuses(book: Book, at_us: int) -> Iterable[AllowanceStatus]:
    """Each recurring allowance running at ``at_us`` with its period's package (the book has
    them: ``_book`` provides them)."""
    terms: Terms | None = book.terms
    if terms is None:
        return
    for schedule in terms.schedules:
        period = schedule.period(at_us)
        grant = None if period is None else book.grant(schedule.grant_id(period[0]))
        if period is not None and grant is not None:
            yield AllowanceStatus(schedule.allowance, schedule.main, period[0], period[1],
                                  book.package(grant, at_us))


def _setter(rule: LimitRule) -> tuple[str, str | None]:
    """Who set ``rule``: its source, and for an enterprise admin the enterprise."""
    return rule.source, rule.enterprise_id if rule.source == "admin" else None


def _rules(book: Book, at_us: int) -> tuple[LimitRule, ...]:
    terms: Terms | None = book.terms
    return () if terms is None else terms.limits(at_us)


def _quota_grants(book: Book, enterprise_id: str | None) -> frozenset[str]:
    source = source_of(enterprise_id or "")
    return frozenset(g.id for g in book.grants if g.source == source)


def _counted(tx: Transaction, book: Book, rule: LimitRule, start: int,
             end: int | None) -> list[tuple[int, int]]:
    """(time, credits that count) of each usage in the window, oldest first."""
    aid = book.account.id
    if rule.scope is Scope.KEY:
        return [(ts, cost) for ts, cost, _ in tx.window_usage(aid, start, end, key_id=rule.key_id)]
    rows = tx.window_usage(aid, start, end)
    if rule.scope is Scope.ACCOUNT:
        return [(ts, cost) for ts, cost, _ in rows]
    quota = _quota_grants(book, rule.enterprise_id)
    return [(ts, sum(a for g, a in orjson.loads(parts) if g in quota)) for ts, _, parts in rows]


def open_holds_uc(tx: Transaction, book: Book, key_id: str | None = None) -> int:
    """What the account's open holds (made with ``key_id``, when given) hold in all: as stored
    (an indexed sum), with what the book changed since (holds made, and ended)."""
    changed = book.holds_change
    change = sum(changed.values()) if key_id is None else changed.get(key_id, 0)
    return tx.open_holds_uc(book.account.id, key_id) + change


def _held(tx: Transaction, book: Book, rule: LimitRule) -> int:
    if rule.scope is Scope.ACCOUNT:
        return open_holds_uc(tx, book)
    if rule.scope is Scope.KEY:
        return open_holds_uc(tx, book, rule.key_id) if rule.key_id is not None else 0
    # What a member's quota holds: the open holds' parts on its grants, in their counters.
    quota = _quota_grants(book, rule.enterprise_id)
    return sum(book.counters[g.id].held_uc for g in book.grants if g.id in quota)


def limit_status(tx: Transaction, book: Book, rule: LimitRule, at_us: int,
                 adding_uc: int = 0) -> LimitStatus:
    """``rule`` at ``at_us``; with ``adding_uc``, also when enough frees up to add that much."""
    start, end = rule.window.bounds(at_us)
    step = None if rule.window.every is None or not rule.window.rolling else rule.window.every.fixed_us
    if rule.scope is Scope.ACCOUNT and step is None:
        used = tx.used_between(book.account.id, start, MAX_US + 1 if end is None else end)
        rows: list[tuple[int, int]] = []
    else:
        rows = _counted(tx, book, rule, start, end)
        used = sum(cost for _, cost in rows)
    held = _held(tx, book, rule)
    resets = end
    if step is not None:
        resets = next((ts + step for ts, cost in rows if cost > 0), None)
    frees = None
    if adding_uc:
        need = used + held + adding_uc - rule.credits_uc
        frees = resets if step is None else _frees_at(rows, need, step)
        if held + adding_uc > rule.credits_uc:
            frees = None
        elif step is None and end is not None:
            frees = _next_window_frees(tx, book, rule, end, held + adding_uc)
    return LimitStatus(rule, used, held, start, resets, frees)


def _next_window_frees(tx: Transaction, book: Book, rule: LimitRule, end: int, adding_uc: int) -> int | None:
    """When a calendar window ending at ``end`` has room for ``adding_uc``: at ``end``, unless
    usage already timestamped into the next window (an event may be a little ahead) fills it;
    then at the next window's end (nothing is timestamped further ahead)."""
    next_end = rule.window.bounds(end)[1]
    assert next_end is not None
    ahead = (tx.used_between(book.account.id, end, next_end) if rule.scope is Scope.ACCOUNT
             else sum(cost for _, cost in _counted(tx, book, rule, end, next_end)))
    return end if ahead + adding_uc <= rule.credits_uc else next_end


def _frees_at(rows: Iterable[tuple[int, int]], need: int, step: int) -> int | None:
    """When usage leaving a rolling window has freed ``need``: the oldest first."""
    freed = 0
    for ts, cost in rows:
        freed += cost
        if freed >= need:
            return ts + step
    return None


def admit(tx: Transaction, book: Book, amount_uc: int, at_us: int, key_id: str | None,
          fallback_model: str | None,
          checked: list[tuple[LimitStatus, int]] | None = None) -> tuple[Refused | None, bool, bool]:
    """Whether a hold of ``amount_uc`` may be made now: (the refusal, else None; whether it may
    hold more than the credits available; whether it is a hold for the fallback model). Limits
    first (they bound consumption whatever pays), then credits under the account's policy.
    ``checked`` gets each limit the hold counts in, as it stood, with what the hold adds to it."""
    for rule in _rules(book, at_us):
        adding = _adding(book, rule, amount_uc, at_us, key_id)
        if adding <= 0:
            continue
        status = limit_status(tx, book, rule, at_us, adding)
        if checked is not None:
            checked.append((status, adding))
        if status.used_uc + status.held_uc + adding > rule.credits_uc:
            return Refused(book.account.id, amount_uc, book.available_uc(at_us), book.overage_uc,
                           f"limit reached: {rule.describe()}", limit=status), False, False
    terms: Terms = book.terms or Terms()
    policy = terms.policy(at_us)
    if (fallback_model is not None and policy.mode is WhenOut.FALLBACK
            and policy.fallback_model == fallback_model):
        return _fallback(tx, book, policy, amount_uc, at_us), True, True
    refused = book.refusal(amount_uc, at_us)
    if refused is None:
        return None, False, False
    if policy.mode is WhenOut.OVERAGE:
        uncovered = amount_uc - max(0, min(amount_uc, book.available_uc(at_us)))
        # What open holds hold beyond the credits they took (their overage to be).
        held_uncovered = open_holds_uc(tx, book) - book.held_uc()
        if book.overage_uc + held_uncovered + uncovered <= policy.overage_cap_uc:
            return None, True, False
        cap = format_credits(policy.overage_cap_uc)
        return replace(refused, reason=f"the overage cap of {cap} credits is reached "
                                       f"({refused.reason})"), False, False
    if policy.mode is WhenOut.FALLBACK and policy.fallback_model != fallback_model:
        return replace(refused, fallback_model=policy.fallback_model), False, False
    return refused, False, False


def _fallback(tx: Transaction, book: Book, policy: OutOfCredits, amount_uc: int,
              at_us: int) -> Refused | None:
    """A hold for the fallback model: whatever the credits, up to the policy's daily cap of
    fallback holds a UTC day (counted under the account's lock)."""
    if policy.daily_cap is not None:
        day = at_us // DAY_US * DAY_US
        if tx.fallback_holds_since(book.account.id, day, day + DAY_US) >= policy.daily_cap:
            return Refused(book.account.id, amount_uc, book.available_uc(at_us), book.overage_uc,
                           f"the fallback to {policy.fallback_model} is used up for today "
                           f"({policy.daily_cap} requests a day)")
    return None


def _adding(book: Book, rule: LimitRule, amount_uc: int, at_us: int, key_id: str | None) -> int:
    """What a hold of ``amount_uc`` adds to ``rule``'s count."""
    if rule.scope is Scope.ACCOUNT:
        return amount_uc
    if rule.scope is Scope.KEY:
        return amount_uc if key_id is not None and key_id == rule.key_id else 0
    quota = _quota_grants(book, rule.enterprise_id)
    parts, _ = allocate(book.drawable(at_us), amount_uc)
    return sum(p.amount_uc for p in parts if p.grant_id in quota)
