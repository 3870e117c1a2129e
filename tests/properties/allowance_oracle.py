"""A naive oracle for recurring allowances, rollover, limits and what happens when credits run out
(SPEC §12, on the ledger of §4-§6). It shares no code with ``creditmeter``: periods are computed
here with ``datetime`` and ``zoneinfo``, the burn-down order and the overage rules written again.

The rules it implements:

- A subscription's schedules are the plan's monthly credits (calendar months from the
  subscription's start, the day clamped to the month, the time of day kept) and each allowance:
  ``Nh`` / ``Nd`` counted from the start, or on a time zone's calendar (``Nh``: slots of the local
  day from midnight, never past it; ``1d``: local days; ``7d``: local weeks from Monday). The first
  period starts at the subscription's start. Each period's package is the full amount, valid for
  exactly the period, there from the period's start (made earlier when an event is timestamped
  inside it), whoever looks and whenever.
- Time is simulated: at each period boundary ``x``, in this order: holds past their ttl end,
  overage is paid; each period ending at ``x`` rolls over (a ``rollover`` package of what its
  package has left then, capped by ``max_credits`` and ``max_percent`` of its amount, taken out of
  it, effective ``x``, expiring at the end of the ``lasts``-th period after, at the period's
  priority; nothing when nothing is left, and what a hold gives back later expires with the
  period); then each period starting at ``x`` gets its package. Every new package first pays
  overage. So a rollover comes before the next period's package where the two tie.
- Burn-down order: (priority, expiry, effective, creation). A charge at ``ts`` draws, in that order,
  on the grants usable at ``ts``; a period's package is followed by its rollover once there is one
  (a late event corrects the rollover, as far as it was not used since). What nothing covers is
  overage, which the first credits usable since it arose pay (at the later of the debt's start and
  the grant's, then in order); holds past their ttl end at each step.
- Limits count, over their window, the cost of every usage in it (by timestamp; ``rolling`` counts
  ``ts > t - length``, a calendar window ``[start, end)``, ``total`` all) plus the full amount of
  open holds. A hold that would pass one is refused (the first such limit, in the order plan's then
  own); ``frees_at`` is the first instant at which, holds as now, it would fit (None if never).
- Then credits: refused while there is overage, or when available <= 0 or < amount. Under
  ``overage`` with cap C the hold is made anyway while overage + uncovered parts of open holds + its
  own uncovered part <= C; under ``fallback`` it is refused naming the model; a fallback request is
  then made whatever the credits, up to ``daily_cap`` fallback holds a UTC day (those released
  do not count; the cap bounds every fallback hold, covered by credits or not).
- A settle is charged at its time: first from its hold's parts (if the hold is still open), then
  as an event. A settle or release after the hold's ttl finds it expired.
"""

from __future__ import annotations

import calendar
import copy
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

US = 1_000_000
HOUR = 3_600 * US
DAY = 86_400 * US
NEVER = 1 << 62
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def us_of(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def iso(us: int) -> str:
    """ISO 8601 in UTC with ``Z`` (a fraction only when there is one)."""
    moment = utc(us)
    frac = f".{moment.microsecond:06d}" if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def plus_months(anchor: int, n: int) -> int:
    a = utc(anchor)
    year, month0 = divmod(a.year * 12 + a.month - 1 + n, 12)
    day = min(a.day, calendar.monthrange(year, month0 + 1)[1])
    return us_of(a.replace(year=year, month=month0 + 1, day=day))


def local_at(day: date, hour: int, zone: str) -> int:
    return us_of(datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(zone)))


@dataclass(frozen=True)
class Sched:
    """A recurring package: ``amount`` µc every ``count`` ``unit`` (``mo``, ``h``, ``d``), anchored
    at the subscription's start or on ``zone``'s calendar. ``rollover``: (max µc, max %, lasts)."""

    name: str  # "" for the plan's own credits
    amount: int
    count: int
    unit: str
    zone: str | None = None
    priority: int = 50
    kind: str = "subscription"
    rollover: tuple[int | None, int | None, int] | None = None

    def raw_period(self, anchor: int, t: int) -> tuple[int, int]:
        if self.zone is None and self.unit == "mo":
            a, m = utc(anchor), utc(t)
            k = (m.year - a.year) * 12 + m.month - a.month
            while plus_months(anchor, k) > t:
                k -= 1
            return plus_months(anchor, k), plus_months(anchor, k + 1)
        if self.zone is None:
            step = self.count * (HOUR if self.unit == "h" else DAY)
            k = (t - anchor) // step
            return anchor + k * step, anchor + (k + 1) * step
        local = utc(t).astimezone(ZoneInfo(self.zone))
        day = local.date()
        if self.unit == "h":
            slot = local.hour - local.hour % self.count
            end = (local_at(day, slot + self.count, self.zone) if slot + self.count < 24
                   else local_at(day + timedelta(days=1), 0, self.zone))
            return local_at(day, slot, self.zone), end
        assert self.unit == "d" and self.count in (1, 7), self
        first = day - timedelta(days=day.weekday() if self.count == 7 else 0)
        return local_at(first, 0, self.zone), local_at(first + timedelta(days=self.count), 0, self.zone)

    def period(self, anchor: int, t: int) -> tuple[int, int] | None:
        """The period containing ``t``, starting no earlier than the anchor; None before it."""
        if t < anchor:
            return None
        start, end = self.raw_period(anchor, t)
        return max(start, anchor), end

    def cap(self) -> int:
        assert self.rollover is not None
        max_uc, max_pct, _ = self.rollover
        cap = self.amount
        if max_pct is not None:
            cap = min(cap, self.amount * max_pct // 100)
        return cap if max_uc is None else min(cap, max_uc)


@dataclass(frozen=True)
class Limit:
    """``window``: ``total``, ``rolling`` (``length`` µs) or ``calendar`` (one ``zone`` day)."""

    id: str
    window: str
    credits: int
    length: int = 0
    zone: str = "UTC"

    def bounds(self, t: int) -> tuple[int, int | None]:
        if self.window == "total":
            return 0, None
        if self.window == "rolling":
            return t - self.length + 1, None
        day = utc(t).astimezone(ZoneInfo(self.zone)).date()
        return local_at(day, 0, self.zone), local_at(day + timedelta(days=1), 0, self.zone)


@dataclass(frozen=True)
class Policy:
    mode: str = "block"  # block | overage | fallback
    cap: int = 0  # overage cap (µc)
    model: str | None = None
    daily_cap: int | None = None


@dataclass
class G:
    id: str
    kind: str
    amount: int
    priority: int
    effective: int
    expires: int
    seq: int
    used: int = 0
    held: int = 0

    def key(self) -> tuple[int, int, int, bool, int]:
        # On a tie a carried-over package goes before a new one, whichever was made first.
        return (self.priority, self.expires, self.effective, self.kind != "rollover", self.seq)

    def residual(self) -> int:
        return self.amount - self.used - self.held


@dataclass
class H:
    id: str
    amount: int
    parts: list[tuple[str, int]]
    created: int
    expires_at: int
    fallback: bool
    status: str = "open"
    settled: tuple[tuple[int, int], object] | None = None  # (usage, charge) once settled


@dataclass(frozen=True)
class OCharge:
    cost: int
    parts: dict[str, int]
    overage: int


@dataclass(frozen=True)
class ORefused:
    limit: str | None = None  # the limit's id when a limit refused it
    frees_at: int | None = None
    fallback_model: str | None = None


@dataclass(frozen=True)
class OLimit:
    used: int
    held: int
    resets_at: int | None


@dataclass
class World:
    """One account with one subscription, from ``anchor`` on."""

    sub: str
    anchor: int
    scheds: tuple[Sched, ...]
    plan_limits: tuple[Limit, ...]
    plan_policy: Policy
    grants: dict[str, G] = field(default_factory=dict)
    rolled: dict[str, str] = field(default_factory=dict)  # period package -> its rollover
    holds: dict[str, H] = field(default_factory=dict)
    usage: list[tuple[int, int]] = field(default_factory=list)  # (timestamp, cost) of each charge
    own_limits: dict[str, Limit] = field(default_factory=dict)
    own_policy: Policy | None = None
    overage: int = 0
    since: int | None = None
    clock: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        self.clock = self.anchor
        self.provide(self.anchor, self.anchor)

    # -- packages ----------------------------------------------------------------------------

    def package_id(self, s: Sched, start: int, prefix: str = "sub:") -> str:
        return f"{prefix}{self.sub}@{iso(start)}{':' + s.name if s.name else ''}"

    def add(self, g: G, now: int, pay: bool = True) -> None:
        self.seq += 1
        g.seq = self.seq
        self.grants[g.id] = g
        if pay:
            self.pay_overage(now)

    def provide(self, t: int, now: int) -> None:
        """The package of each schedule's period containing ``t`` (made now if not there yet).
        Those that start together pay a debt together: in burn-down order, not as made."""
        for s in self.scheds:
            period = s.period(self.anchor, t)
            if period is not None and self.package_id(s, period[0]) not in self.grants:
                self.add(G(self.package_id(s, period[0]), s.kind, s.amount, s.priority, period[0],
                           period[1], 0), now, pay=False)
        self.pay_overage(now)

    def roll(self, s: Sched, period: tuple[int, int], now: int) -> None:
        assert s.rollover is not None
        source = self.grants[self.package_id(s, period[0])]
        amount = min(source.residual(), s.cap())
        if amount <= 0:
            return
        expires = period[1]
        for _ in range(s.rollover[2]):
            expires = s.raw_period(self.anchor, expires)[1]
        source.used += amount
        rid = self.package_id(s, period[0], "rol:")
        self.rolled[source.id] = rid
        self.add(G(rid, "rollover", amount, s.priority, period[1], expires, 0), now)

    def boundaries(self, after: int, until: int) -> list[int]:
        """Period boundaries in ``(after, until]``."""
        found: set[int] = set()
        for s in self.scheds:
            x = after
            while True:
                x = s.raw_period(self.anchor, max(x, self.anchor))[1]
                if x > until:
                    break
                found.add(x)
        return sorted(found)

    def boundary(self, x: int) -> None:
        self.expire_holds(x)
        self.pay_overage(x)
        for s in self.scheds:
            if s.rollover is not None:
                period = s.period(self.anchor, x - 1)
                if period is not None and period[1] == x:
                    self.roll(s, period, x)
        self.provide(x, x)

    def advance(self, now: int) -> None:
        for x in self.boundaries(self.clock, now):
            self.boundary(x)
        self.expire_holds(now)
        self.pay_overage(now)
        self.clock = max(self.clock, now)

    # -- the ledger underneath ---------------------------------------------------------------

    def usable(self, t: int) -> list[G]:
        return sorted((g for g in self.grants.values() if g.effective <= t < g.expires), key=G.key)

    def drawable(self, t: int) -> list[G]:
        out = []
        for g in self.usable(t):
            out.append(g)
            if g.id in self.rolled:
                out.append(self.grants[self.rolled[g.id]])
        return out

    def available(self, t: int) -> int:
        return sum(g.residual() for g in self.usable(t))

    def draw(self, grants: list[G], amount: int, into: str) -> tuple[dict[str, int], int]:
        parts: dict[str, int] = {}
        for g in grants:
            take = min(g.residual(), amount)
            if take > 0:
                setattr(g, into, getattr(g, into) + take)
                parts[g.id] = parts.get(g.id, 0) + take
                amount -= take
        return parts, amount

    def pay_overage(self, now: int) -> None:
        if self.overage <= 0:
            return
        since = now if self.since is None else self.since
        payers = sorted((max(since, g.effective), g.key(), g) for g in self.grants.values()
                        if g.effective <= now and g.expires > since and g.residual() > 0)
        for _, _, g in payers:
            take = min(g.residual(), self.overage)
            g.used += take
            self.overage -= take
            if not self.overage:
                break
        if not self.overage:
            self.since = None

    def expire_holds(self, now: int) -> None:
        for h in self.holds.values():
            if h.status == "open" and h.expires_at <= now:
                self.end_hold(h, "expired")

    def end_hold(self, h: H, status: str) -> None:
        for gid, amount in h.parts:
            self.grants[gid].held -= amount
        h.status = status

    def charge(self, cost: int, ts: int, now: int, hold: H | None = None) -> OCharge:
        parts: dict[str, int] = {}
        left = cost
        for gid, amount in hold.parts if hold else []:
            take = min(amount, left)
            if take:
                self.grants[gid].used += take
                parts[gid] = parts.get(gid, 0) + take
                left -= take
        more, left = self.draw(self.drawable(ts), left, "used")
        for gid, amount in more.items():
            parts[gid] = parts.get(gid, 0) + amount
        self.usage.append((ts, cost))
        if left:
            if not self.overage:
                self.since = now
            self.overage += left
            self.pay_overage(now)
        return OCharge(cost, parts, left)

    # -- terms -------------------------------------------------------------------------------

    def limits(self) -> list[Limit]:
        return [*self.plan_limits, *self.own_limits.values()]

    def policy(self) -> Policy:
        return self.own_policy if self.own_policy is not None else self.plan_policy

    def limit_status(self, rule: Limit, t: int) -> OLimit:
        start, end = rule.bounds(t)
        rows = sorted((ts, c) for ts, c in self.usage if start <= ts and (end is None or ts < end))
        held = sum(h.amount for h in self.holds.values() if h.status == "open")
        resets = end
        if rule.window == "rolling":
            resets = next((ts + rule.length for ts, c in rows if c > 0), None)
        return OLimit(sum(c for _, c in rows), held, resets)

    def frees_at(self, rule: Limit, t: int, adding: int) -> int | None:
        """The first instant after ``t`` at which the hold would fit, holds as now."""
        held = self.limit_status(rule, t).held
        if held + adding > rule.credits or rule.window == "total":
            return None
        if rule.window == "calendar":  # the next window may hold usage timestamped ahead
            end = rule.bounds(t)[1]
            while end is not None and self.limit_status(rule, end).used + held + adding > rule.credits:
                end = rule.bounds(end)[1]
            return end
        for ts in sorted({ts + rule.length for ts, _ in self.usage if ts + rule.length > t}):
            if self.limit_status(rule, ts).used + held + adding <= rule.credits:
                return ts
        return None

    # -- operations: each answers what the engine should ---------------------------------------

    def record(self, ts: int, cost: int, now: int) -> OCharge:
        self.advance(now)
        self.provide(ts, now)
        return self.charge(cost, ts, now)

    def reserve(self, hid: str, amount: int, ttl_s: int, now: int, fallback: str | None = None,
                ) -> H | ORefused:
        self.advance(now)
        for rule in self.limits():
            status = self.limit_status(rule, now)
            if status.used + status.held + amount > rule.credits:
                return ORefused(rule.id, self.frees_at(rule, now, amount))
        available = self.available(now)
        short_ok = False
        policy = self.policy()
        is_fallback = (fallback is not None and policy.mode == "fallback" and policy.model == fallback)
        if is_fallback:  # a fallback request: whatever the credits, up to its daily cap
            day = now - now % DAY
            made = sum(1 for h in self.holds.values()
                       if h.fallback and day <= h.created < day + DAY and h.status != "released")
            if policy.daily_cap is not None and made >= policy.daily_cap:
                return ORefused()
            short_ok = True
        elif self.overage > 0 or available <= 0 or available < amount:
            if policy.mode == "overage":
                uncovered = sum(h.amount - sum(a for _, a in h.parts) for h in self.holds.values()
                                if h.status == "open")
                if self.overage + uncovered + amount - max(0, min(amount, available)) > policy.cap:
                    return ORefused()
            else:
                return ORefused(fallback_model=policy.model if policy.mode == "fallback" else None)
            short_ok = True
        parts, short = self.draw(self.usable(now), amount, "held")
        assert short == 0 or short_ok
        hold = H(hid, amount, list(parts.items()), now, now + ttl_s * US, is_fallback)
        self.holds[hid] = hold
        return hold

    def settle(self, hid: str, usage: tuple[int, int], cost: int, now: int) -> OCharge | str:
        h = self.holds[hid]
        if h.settled is not None:
            return h.settled[1] if h.settled[0] == usage else "conflict"  # type: ignore[return-value]
        if h.status == "released":
            return "conflict"
        self.advance(now)
        hold = h if h.status == "open" else None
        if hold is not None:
            self.end_hold(h, "settled")
        charge = self.charge(cost, now, now, hold)
        h.settled = (usage, charge)
        self.pay_overage(now)  # what the hold gave back pays a standing debt at once
        return charge

    def release(self, hid: str, now: int) -> str:
        h = self.holds[hid]
        if h.settled is not None:
            return "conflict"
        self.advance(now)
        if h.status == "open":
            self.end_hold(h, "released")
            self.pay_overage(now)
        return h.status

    # -- reads ---------------------------------------------------------------------------------

    def at(self, t: int) -> World:
        """A copy brought to ``t`` (a read writes nothing)."""
        world = copy.deepcopy(self)
        world.advance(t)
        return world

    def packages(self, t: int) -> list[tuple[str, str, int, int, int, int, int, int, int]]:
        """Each package in burn-down order: id, kind, amount, effective, expires, used, held,
        expired, remaining."""
        out = []
        for g in sorted(self.grants.values(), key=G.key):
            gone = g.residual() if t >= g.expires else 0
            out.append((g.id, g.kind, g.amount, g.effective, g.expires, g.used, g.held, gone,
                        g.residual() - gone))
        return out

    def periods(self, t: int) -> dict[str, tuple[int, int]]:
        """The running period of each schedule at ``t``."""
        return {s.name: p for s in self.scheds if (p := s.period(self.anchor, t)) is not None}
