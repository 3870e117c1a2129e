"""What recurs on an account, and the packages it makes: each period's allowance, made when
first needed, and each period's rollover, made once the period is over. Pure: no I/O, no clock.

An account's :class:`Terms` are its subscriptions' recurring packages (the plan's own credits
and its allowances), its limits (the plan's and its own) and what happens when its credits run
out. They are kept on the account (as JSON, rewritten in the same transaction as any change to
what they are made from) so a command that loads the account's book has them at no extra cost.

Exact at the boundary without a sweep: the package of the period that contains ``t`` is made by
:func:`provide` in the same transaction as the first write that needs it (a charge at ``t``, a
hold, a grant, ``tick``), and derived the same way, without writing, on read. Its id is derived
from (subscription, allowance, period start), so it is made at most once however many writers
race for it.

Rollover: once a period is over, what its package left unused (capped) moves into a package of
kind ``rollover`` (an ``allocate`` entry out of the period's package, a grant in), lasting the
plan's number of periods; at most once per period (its id is the period package's with ``rol:``
for ``sub:``). A late event whose time falls in the period draws on the period's package first
and then on its rollover (see ``Book.drawable``): the rollover is corrected to what it would have
been had the event come in time, as far as it was not used since.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from creditmeter.alert_rules import AlertRule, AutoTopup, parse_auto_topup
from creditmeter.allowances import (
    BLOCK,
    Allowance,
    LimitRule,
    OutOfCredits,
    parse_limit,
    parse_out_of_credits,
)
from creditmeter.allowances import Scope as LimitScope
from creditmeter.domain import AccountId, Grant, GrantId, GrantKind
from creditmeter.ledger import PERIOD_PREFIX, ROLLOVER_PREFIX, Book, rollover_source
from creditmeter.plans import Plan, stored_plan
from creditmeter.recurrence import Every, period_at
from creditmeter.timeutil import MAX_US, MIN_US, format_instant


@dataclass(frozen=True, slots=True)
class Schedule:
    """One recurring package of a subscription: the plan's own credits (``main``) or one allowance,
    valid from ``anchor_us`` until ``ends_at_us`` (None: until cancelled)."""

    subscription_id: str
    allowance: Allowance
    anchor_us: int
    ends_at_us: int | None
    main: bool

    def period(self, at_us: int) -> tuple[int, int] | None:
        """The period containing ``at_us``, cut to the subscription's life; None outside it."""
        if at_us < self.anchor_us or (self.ends_at_us is not None and at_us >= self.ends_at_us):
            return None
        a = self.allowance
        start, end = period_at(a.every, self.anchor_us, a.calendar, at_us)
        start = max(start, self.anchor_us)
        if self.ends_at_us is not None:
            end = min(end, self.ends_at_us)
        return start, end

    def grant_id(self, start_us: int) -> GrantId:
        """``sub:{subscription}@{start}`` for the plan's credits (as renewals name them),
        ``sub:{subscription}@{start}:{allowance}`` for an allowance (an allowance id has no ``@``,
        and a start always ends in ``Z``: no two of them can be the same)."""
        tag = "" if self.main else f":{self.allowance.id}"
        return GrantId(f"{PERIOD_PREFIX}{self.subscription_id}@{format_instant(start_us)}{tag}")

    def grant(self, period: tuple[int, int], account_id: str, seq: int, at_us: int) -> Grant:
        start, end = period
        a = self.allowance
        show = (lambda us: (format_instant(us) or "")[:10]) if self.main else _when
        label = f"{a.name} — {show(start)} to {show(end)}"
        return Grant(self.grant_id(start), AccountId(account_id), a.kind, a.credits_uc, a.priority, start,
                     end, label[:255], f"subscription:{self.subscription_id}"[:255], seq, at_us)


def _when(us: int) -> str:
    text = format_instant(us) or ""
    return text[:10] if text.endswith("T00:00:00Z") else text[:16].replace("T", " ")


@dataclass(frozen=True, slots=True)
class Running:
    """A subscription as the terms keep it: its plan's terms and when it runs."""

    id: str
    plan: Plan
    seats: int
    anchor_us: int
    ends_at_us: int | None  # a trial's end, or a cancelled subscription's

    def runs_at(self, at_us: int) -> bool:
        return self.anchor_us <= at_us and (self.ends_at_us is None or at_us < self.ends_at_us)


@dataclass(frozen=True)  # not slots: its schedules are cached on it
class Terms:
    """What recurs on an account (see the module docstring).

    Attributes:
      own_limits: limits set on the account (by the operator, a key's owner, an enterprise admin).
      own_policy: the operator's override of the plan's policy when credits run out.
      own_topup: the account's auto top-up (opt-in, set by the operator).
    """

    subscriptions: tuple[Running, ...] = ()
    own_limits: tuple[LimitRule, ...] = ()
    own_policy: OutOfCredits | None = None
    own_topup: AutoTopup | None = None

    @functools.cached_property
    def schedules(self) -> tuple[Schedule, ...]:
        out = []
        for sub in self.subscriptions:
            plan = sub.plan
            if plan.period is not None:  # the plan's own credits, each period (not a trial's)
                main = Allowance("", Every(plan.period.months, "mo"), plan.credits_uc * sub.seats, None,
                                 plan.name, plan.grant_kind, plan.priority, plan.rollover)
                out.append(Schedule(sub.id, main, sub.anchor_us, sub.ends_at_us, True))
            out += [Schedule(sub.id, a, sub.anchor_us, sub.ends_at_us, False) for a in plan.allowances]
        return tuple(out)

    def running(self, at_us: int) -> Running | None:
        """The subscription running at ``at_us`` (a recurring one before a trial)."""
        if len(self.subscriptions) == 1:  # most accounts: no list to make and sort
            only = self.subscriptions[0]
            return only if only.runs_at(at_us) else None
        found = [s for s in self.subscriptions if s.runs_at(at_us)]
        found.sort(key=lambda s: s.plan.period is None)
        return found[0] if found else None

    def limits(self, at_us: int) -> tuple[LimitRule, ...]:
        """The limits in force at ``at_us``: the running plan's, then the account's own."""
        sub = self.running(at_us)
        return (sub.plan.limits if sub is not None else ()) + self.own_limits

    def policy(self, at_us: int) -> OutOfCredits:
        """What happens when credits run out: the account's override, else the running plan's."""
        if self.own_policy is not None:
            return self.own_policy
        sub = self.running(at_us)
        return sub.plan.when_out if sub is not None else BLOCK

    @functools.cached_property
    def may_alert(self) -> bool:
        """Whether a book's figures can raise an alert by these terms: a plan with alert rules,
        or an auto top-up."""
        return self.own_topup is not None or any(sub.plan.alerts for sub in self.subscriptions)

    def alert_rules(self, at_us: int) -> tuple[AlertRule, ...]:
        """The alert rules of the plan running at ``at_us``."""
        sub = self.running(at_us)
        return sub.plan.alerts if sub is not None else ()

    def to_json(self) -> str | None:
        if not (self.subscriptions or self.own_limits or self.own_policy is not None
                or self.own_topup is not None):
            return None
        data: dict[str, Any] = {
            "subscriptions": [{"id": s.id, "plan": s.plan.to_dict(), "seats": s.seats,
                               "anchor_us": s.anchor_us, "ends_at_us": s.ends_at_us}
                              for s in self.subscriptions],
            "limits": [rule.to_dict() for rule in self.own_limits]}
        if self.own_policy is not None:
            data["policy"] = self.own_policy.to_dict()
        if self.own_topup is not None:
            data["topup"] = self.own_topup.to_dict()
        return orjson.dumps(data).decode()


NO_TERMS = Terms()


@functools.lru_cache(maxsize=4_096)
def terms_from_json(text: str | None) -> Terms:
    """The terms kept on an account (cached: many accounts share a plan's)."""
    if not text:
        return NO_TERMS
    data = orjson.loads(text)
    subs = tuple(Running(s["id"], stored_plan(s["plan"]), s["seats"], s["anchor_us"], s["ends_at_us"])
                 for s in data.get("subscriptions", ()))
    limits = tuple(_limit_from(item) for item in data.get("limits", ()))
    policy = parse_out_of_credits(data["policy"], "policy") if "policy" in data else None
    topup = parse_auto_topup(data["topup"], "topup") if "topup" in data else None
    return Terms(subs, limits, policy, topup)


def _limit_from(item: dict[str, Any]) -> LimitRule:
    body = {k: item[k] for k in ("window", "credits", "calendar") if k in item}
    return parse_limit(body, "limit", item["id"], source=item["source"], scope=LimitScope(item["scope"]),
                       key_id=item.get("key_id"), enterprise_id=item.get("enterprise_id"))


# -- the packages terms make -----------------------------------------------------------------------

Seq = Callable[[], int]


def provide(book: Book, at_us: int, now_us: int, next_seq: Seq) -> None:
    """Make the package of each schedule's period containing ``at_us`` if it is not there yet
    (recorded at ``now_us``)."""
    terms: Terms | None = book.terms
    if terms is None or not terms.subscriptions:
        return
    seen = book.provided
    made = False
    for index, schedule in enumerate(terms.schedules):
        known = seen.get(index)
        if known is not None and known[0] <= at_us < known[1]:
            continue
        if _recall(book, index, at_us):  # its package was made, or found, before
            continue
        period = schedule.period(at_us)
        if period is None:
            continue
        gid = schedule.grant_id(period[0])
        if gid not in book.counters:  # all made first, then they pay a debt in burn-down order
            book.add_grant(schedule.grant(period, book.account.id, next_seq(), now_us), now_us, pay=False)
            made = True
        seen[index] = period
        _remember(book, index, period)
    if made:
        book.pay_overage(now_us)


MAX_REMEMBERED = 32


def _recall(book: Book, key: int, at_us: int) -> bool:
    """Whether ``at_us`` falls in a period remembered as having nothing more owed (its package
    made; for rollovers, those of the periods before it made or never owed): then it becomes
    the period last seen, as working it out again would make it, and nothing is done.

    Late and out-of-order events (an import of several days) go back and forth between a few
    periods; without this each switch worked the periods out again on the local calendar."""
    for period in book.settled.get(key, ()):
        if period[0] <= at_us < period[1]:
            book.provided[key] = period
            return True
    return False


def _remember(book: Book, key: int, period: tuple[int, int]) -> None:
    periods = book.settled.setdefault(key, [])
    if period not in periods:
        periods.insert(0, period)
        del periods[MAX_REMEMBERED:]


def owed_at(book: Book, at_us: int, now_us: int, next_seq: Seq) -> None:
    """What an event at ``at_us`` needs first: the rollovers usable then and the packages of its
    periods (:func:`roll_over`, then :func:`provide`). In a stretch of time found before to owe
    nothing more, it only marks that stretch's periods as the last seen, as those would."""
    seen = book.quiet.find(at_us)  # :func:`_quiet`, inline: this runs for every event charged
    if seen is not None:
        book.provided.update(seen)
        return
    roll_over(book, at_us, now_us, next_seq)
    provide(book, at_us, now_us, next_seq)
    _note_quiet(book, at_us)


def owed_now(book: Book, now_us: int, next_seq: Seq) -> None:
    """What the account is owed now: the rollovers of the periods over (counting what holds held
    at each period's end), then, once the holds whose ttl passed gave back, the packages of the
    periods running (so these pay overage after those). Nothing in a stretch of time found
    before to owe nothing more."""
    if _quiet(book, now_us):
        return
    roll_over(book, now_us, now_us, next_seq)
    book.end_lapsed(now_us)
    provide(book, now_us, now_us, next_seq)
    _note_quiet(book, now_us)


def _quiet(book: Book, at_us: int) -> bool:
    """Whether ``at_us`` is in a stretch found before to owe nothing more; then its periods
    become the last seen, as working them out again would make them."""
    seen = book.quiet.find(at_us)
    if seen is None:
        return False
    book.provided.update(seen)
    return True


def _note_quiet(book: Book, at_us: int) -> None:
    """Remember the stretch around ``at_us`` in which every schedule's package is made and its
    rollovers are settled (where their periods meet), with the periods it leaves as last seen."""
    terms: Terms = book.terms
    start, end = MIN_US, MAX_US + 1
    seen: list[tuple[int, tuple[int, int]]] = []
    for index, schedule in enumerate(terms.schedules):
        rolls = schedule.allowance.rollover is not None
        for key in (index, -1 - index) if rolls else (index,):
            period = next((p for p in book.settled.get(key, ()) if p[0] <= at_us < p[1]), None)
            if period is None:
                return
            start, end = max(start, period[0]), min(end, period[1])
            seen.append((key, period))
        if rolls:
            start = max(start, schedule.anchor_us + 1)  # at the very start roll_over does nothing
    book.quiet.add(start, end, tuple(seen))


MAX_OWED_PERIODS = 1_000


def provide_since(book: Book, since_us: int, at_us: int, now_us: int, next_seq: Seq) -> None:
    """While the account owes overage, go through every period boundary from ``since_us`` to
    ``at_us`` in time order, as if the account had been written at each: holds whose ttl passed
    by then end, the periods over roll over, the new periods' packages are made, and the debt is
    paid in burn-down order. So each package (and rollover) paid it at its first instant, whether
    or not anything wrote the account then. Stops once the debt is paid (what is left is made as
    usual); at most ``MAX_OWED_PERIODS`` periods a schedule."""
    terms: Terms | None = book.terms
    if terms is None or since_us >= at_us:
        return
    starts: dict[int, list[tuple[Schedule, tuple[int, int]]]] = {}
    for schedule in terms.schedules:
        cursor = max(since_us, schedule.anchor_us)
        for _ in range(MAX_OWED_PERIODS):
            period = schedule.period(cursor) if cursor <= at_us else None
            if period is None:
                break
            starts.setdefault(period[0], []).append((schedule, period))
            cursor = period[1]
    for start in sorted(starts):
        if not book.overage_uc:
            return
        book.end_lapsed(start)
        for schedule, period in starts[start]:
            previous = schedule.period(period[0] - 1)
            if schedule.allowance.rollover is not None and previous is not None and previous[1] == start:
                _roll(book, schedule, previous, start, now_us, next_seq)
        for schedule, period in starts[start]:  # all made first, then they pay
            if schedule.grant_id(period[0]) not in book.counters:
                book.add_grant(schedule.grant(period, book.account.id, next_seq(), now_us), now_us,
                               pay=False)
        book.pay_overage(now_us)


def roll_over(book: Book, at_us: int, now_us: int, next_seq: Seq) -> None:
    """Make the rollover of every period over by ``at_us`` whose rollover is usable at ``at_us``,
    unless it was made before: what the period's package left unused at its end, capped.
    ``at_us`` is now, or an event's time: a late one's rollovers must be there to draw on; one a
    little ahead of now draws on none of a period not yet over (what it leaves is not known yet).
    What is made is recorded at ``now_us``."""
    terms: Terms | None = book.terms
    if terms is None or not terms.subscriptions:
        return
    seen = book.provided
    for index, schedule in enumerate(terms.schedules):
        rule = schedule.allowance.rollover
        upto = min(at_us, now_us)  # a period is over only once now is past its end
        if rule is None or upto <= schedule.anchor_us:
            continue
        key = -1 - index  # the period whose rollovers were last made (``provided`` keeps both)
        known = seen.get(key)
        if known is not None and known[0] <= upto < known[1]:
            continue
        if _recall(book, key, upto):
            continue
        cursor = min(upto, schedule.ends_at_us or upto)
        current = schedule.period(cursor - 1)
        running = current is not None and current[1] > upto
        if current is not None and running:
            cursor = current[0]  # the period running at ``upto``: nothing to roll over yet
            seen[key] = current
        settled = running
        ended: list[tuple[int, int]] = []
        for _ in range(rule.lasts):
            previous = schedule.period(cursor - 1)
            if previous is None:
                break
            cursor = previous[0]
            ended.append(previous)
        for period in reversed(ended):  # in time order: an older rollover may pay a later debt
            settled = _roll(book, schedule, period, at_us, now_us, next_seq) and settled
        if settled and current is not None:
            _remember(book, key, current)


def _roll(book: Book, schedule: Schedule, period: tuple[int, int], at_us: int, now_us: int,
          next_seq: Seq) -> bool:
    """Make the rollover of ``period`` if it is owed; whether nothing more can be owed for it
    (made now or before, or never owed whatever happens next)."""
    source_id = schedule.grant_id(period[0])
    rid = GrantId(ROLLOVER_PREFIX + source_id[len(PERIOD_PREFIX):])
    if rid in book.counters:
        return True
    if schedule.ends_at_us is not None and period[1] >= schedule.ends_at_us:
        return True  # the subscription's last period: nothing follows it to carry credits into
    rule = schedule.allowance.rollover
    assert rule is not None
    expires = period[1]
    for _ in range(rule.lasts):
        expires = period_at(schedule.allowance.every, schedule.anchor_us, schedule.allowance.calendar,
                            expires)[1]
    if schedule.ends_at_us is not None:
        expires = min(expires, schedule.ends_at_us)
    if expires <= at_us:
        return False  # it would be over already
    if source_id not in book.counters:  # it pays a debt below, after the holds that lapsed before
        book.add_grant(schedule.grant(period, book.account.id, next_seq(), now_us), now_us, pay=False)
    source = book.grant(source_id)
    assert source is not None
    if source.voided_at_us is not None:
        return True
    # Unused at the period's end: holds open then keep what they hold (settled from it, or given
    # back to expire with the period); a hold whose ttl passed before the end gave it back.
    book.end_lapsed(period[1])
    book.pay_overage(now_us)  # a debt that stood while the period ran is paid from it first
    amount = max(0, min(book.residual(source), rule.cap_uc(source.amount_uc)))
    if not amount and not book.counters[source_id].held_uc:
        return False  # asked again while its package has nothing left over
    # With holds open at the end (they keep what they hold, to expire with the period once given
    # back), a rollover of nothing records that the period was rolled over: it is not decided
    # again from what they give back later.
    if amount:
        book.move_out(source_id, amount, now_us, "rollover")
    name = f"Rollover — {source.name}"
    book.add_grant(Grant(rid, book.account.id, GrantKind.ROLLOVER, amount, source.priority, period[1],
                         expires, name[:255], "rollover", next_seq(), now_us), now_us)
    return True


__all__ = ["NO_TERMS", "Running", "Schedule", "Terms", "owed_at", "owed_now", "provide", "provide_since",
           "roll_over", "rollover_source", "terms_from_json"]
