"""A naive oracle for the ledger (SPEC §4-§6): it replays every operation so far, from scratch.

It shares no code with ``creditmeter``. Each query replays the whole log on fresh plain objects,
so it cannot carry a wrong cached counter along. The rules it implements:

- burn-down order: (priority, expires_at with never last, effective_at, creation order);
- a grant is usable at t when not voided and effective_at <= t < expires_at; it can give
  granted - used - held;
- a settle is priced with the catalog in effect when its hold was made;
- a charge draws first from its hold's parts (settle), then from grants usable at the event's
  timestamp, in order; what nothing covers is overage;
- every write (and read) first "advances" the account to now: holds past their ttl end, and
  overage is paid by every grant that was usable at some instant since the debt arose, each at the
  first such instant (the later of the debt's start and the grant's start), earliest instant first,
  then in burn-down order; a charge that leaves overage starts the debt now if there was none;
- a reservation is refused while there is overage, when available <= 0 or available < amount;
  otherwise it holds parts drawn in order from grants usable now;
- at an instant t a grant's granted - used - held is voided once voided, else expired once
  t >= expires_at, else remaining (scheduled before effective_at).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

NEVER = 1 << 62
US_PER_S = 1_000_000


@dataclass
class OGrant:
    id: str
    account: str
    amount: int
    priority: int
    effective: int
    expires: int | None
    seq: int
    voided_at: int | None = None
    used: int = 0
    held: int = 0

    def key(self) -> tuple[int, int, int, int]:
        return (self.priority, NEVER if self.expires is None else self.expires, self.effective, self.seq)

    def usable(self, t: int) -> bool:
        return self.voided_at is None and self.effective <= t and (self.expires is None or t < self.expires)

    def residual(self) -> int:
        return self.amount - self.used - self.held


@dataclass
class OHold:
    id: str
    account: str
    amount: int
    parts: list[tuple[str, int]]
    expires_at: int
    created_at: int  # a settle is priced as at this instant
    status: str = "open"
    settled: bool = False  # a settle charged it (also after its ttl: then it stays "expired")


@dataclass(frozen=True)
class Ev:
    """A usage event as the oracle sees it (``ts`` None = now)."""

    id: str
    account: str
    ts: int | None
    model: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    quantities: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class OCharge:
    status: str
    cost: int
    allocations: tuple[tuple[str, int], ...]
    overage: int
    price_version: int
    timestamp: int


@dataclass(frozen=True)
class OPackage:
    id: str
    used: int
    held: int
    expired: int
    voided: int
    remaining: int
    status: str


@dataclass(frozen=True)
class OBalance:
    available: int
    held: int
    overage: int
    packages: dict[str, OPackage]


@dataclass(frozen=True)
class Price:
    """A catalog version: µc per 1M input/output tokens per model, µc per feature unit."""

    version: int
    effective: int
    models: dict[str, tuple[int, int]]
    features: dict[str, int] = field(default_factory=dict)


class _World:
    def __init__(self, prices: list[Price], lateness_s: int, future_s: int) -> None:
        self.prices = sorted(prices, key=lambda p: (p.effective, p.version))
        self.lateness_us, self.future_us = lateness_s * US_PER_S, future_s * US_PER_S
        self.accounts: set[str] = set()
        self.grants: dict[str, OGrant] = {}
        self.holds: dict[str, OHold] = {}
        self.overage: dict[str, int] = {}
        self.since: dict[str, int | None] = {}
        self.events: dict[str, tuple[object, OCharge]] = {}

    def ordered(self, account: str, t: int) -> list[OGrant]:
        return sorted((g for g in self.grants.values() if g.account == account and g.usable(t)),
                      key=OGrant.key)

    def draw(self, account: str, t: int, amount: int, into: str) -> tuple[list[tuple[str, int]], int]:
        parts = []
        for g in self.ordered(account, t):
            take = min(g.residual(), amount)
            if take > 0:
                setattr(g, into, getattr(g, into) + take)
                parts.append((g.id, take))
                amount -= take
        return parts, amount

    def advance(self, account: str, now: int) -> None:
        for h in self.holds.values():
            if h.account == account and h.status == "open" and h.expires_at <= now:
                self.end_hold(h, "expired")
        debt = self.overage[account]
        if debt <= 0:
            return
        since = now if self.since.get(account) is None else self.since[account]
        payers = []
        for g in self.grants.values():
            end = g.expires if g.voided_at is None else min(g.voided_at, g.expires or NEVER)
            if g.account == account and g.effective <= now and (end is None or end > max(since, g.effective)):
                payers.append((max(since, g.effective), g.key(), g))
        for _, _, g in sorted(payers, key=lambda p: (p[0], p[1])):
            take = min(g.residual(), debt)
            if take > 0:
                g.used += take
                debt -= take
        self.overage[account] = debt
        if debt == 0:
            self.since[account] = None

    def end_hold(self, h: OHold, status: str) -> None:
        for gid, amount in h.parts:
            self.grants[gid].held -= amount
        h.status = status

    def cost(self, ts: int, model: str | None, inp: int, out: int,
             quantities: tuple[tuple[str, int], ...]) -> tuple[int, int] | str:
        version = [p for p in self.prices if p.effective <= ts]
        if not version:
            return "invalid_input"
        price = version[-1]
        total = 0
        if model is None and (inp or out):
            return "invalid_input"
        if model is not None:
            if model not in price.models:
                return "invalid_input"
            p_in, p_out = price.models[model]
            total = -(-(inp * p_in + out * p_out) // 1_000_000)
        for name, qty in quantities:
            if name not in price.features:
                return "invalid_input"
            total += qty * price.features[name]
        return total, price.version

    def charge(self, account: str, cost: int, version: int, ts: int, now: int,
               hold: OHold | None) -> OCharge:
        parts: dict[str, int] = {}
        left = cost
        for gid, amount in hold.parts if hold else []:
            take = min(amount, left)
            if take:
                self.grants[gid].used += take
                parts[gid] = parts.get(gid, 0) + take
                left -= take
        more, left = self.draw(account, ts, left, "used")
        for gid, amount in more:
            parts[gid] = parts.get(gid, 0) + amount
        if left and not self.overage[account]:
            self.since[account] = now
        self.overage[account] += left
        self.advance(account, now)
        return OCharge("charged", cost, tuple(parts.items()), left, version, ts)

    # -- operations: each returns what the engine should answer --------------------------------

    def op_account(self, account: str, now: int) -> None:
        self.accounts.add(account)
        self.overage.setdefault(account, 0)

    def op_grant(self, gid: str, account: str, amount: int, kind: str, now: int,
                 expires: int | None, effective: int | None, priority: int | None) -> str:
        eff = now if effective is None else effective
        if expires is not None and (expires <= eff or expires <= now):
            return "invalid_input"
        prio = (0 if kind == "trial" else 50) if priority is None else priority
        self.advance(account, now)
        self.grants[gid] = OGrant(gid, account, amount, prio, eff, expires, len(self.grants))
        self.advance(account, now)
        return "ok"

    def op_void(self, gid: str, now: int) -> str:
        g = self.grants[gid]
        if g.voided_at is None and g.expires is not None and now >= g.expires:
            return "conflict"
        self.advance(g.account, now)
        if g.voided_at is None:
            g.voided_at = now
        return "ok"

    def op_record(self, events: list[Ev], now: int) -> list[OCharge | str]:
        results: list[OCharge | str] = []
        for e in events:
            if min(e.input_tokens, e.output_tokens, *(q for _, q in e.quantities)) < 0:
                results.append("invalid_input")  # a malformed body is refused before anything else
                continue
            body = (e.account, e.ts, e.model, e.input_tokens, e.output_tokens, e.quantities)
            if e.id in self.events:
                old_body, old = self.events[e.id]
                results.append(replace(old, status="duplicate") if old_body == body else "conflict")
                continue
            if e.account not in self.accounts:
                results.append("not_found")
                continue
            ts = now if e.ts is None else e.ts
            if not now - self.lateness_us <= ts <= now + self.future_us:
                results.append("invalid_input")
                continue
            rated = self.cost(ts, e.model, e.input_tokens, e.output_tokens, e.quantities)
            if isinstance(rated, str):
                results.append(rated)
                continue
            if not (e.input_tokens or e.output_tokens or any(q for _, q in e.quantities)):
                results.append("invalid_input")  # an event that records no usage (no request fees here)
                continue
            self.advance(e.account, now)
            charge = self.charge(e.account, rated[0], rated[1], ts, now, None)
            self.events[e.id] = (body, charge)
            results.append(charge)
        return results

    def op_reserve(self, hid: str, account: str, amount: int, ttl_s: int, now: int) -> str:
        self.advance(account, now)
        available = sum(g.residual() for g in self.ordered(account, now))
        if self.overage[account] > 0 or available <= 0 or available < amount:
            return "refused"
        parts, _ = self.draw(account, now, amount, "held")
        self.holds[hid] = OHold(hid, account, amount, parts, now + ttl_s * US_PER_S, now)
        return "open"

    def op_settle(self, hid: str, model: str | None, inp: int, out: int,
                  quantities: tuple[tuple[str, int], ...], now: int) -> OCharge | str:
        h = self.holds[hid]
        body = ("settle", hid, model, inp, out, quantities)
        if "hold:" + hid in self.events:
            old_body, old = self.events["hold:" + hid]
            return replace(old, status="duplicate") if old_body == body else "conflict"
        if h.settled or h.status == "released":
            return "conflict"
        rated = self.cost(h.created_at, model, inp, out, quantities)
        if isinstance(rated, str):
            return rated
        self.advance(h.account, now)
        hold = None
        if h.status == "open":
            self.end_hold(h, "settled")
            hold = h
        charge = self.charge(h.account, rated[0], rated[1], now, now, hold)
        h.settled = True
        self.events["hold:" + hid] = (body, charge)
        return charge

    def op_release(self, hid: str, now: int) -> str:
        h = self.holds[hid]
        if h.settled:
            return "conflict"
        if h.status == "open":
            self.advance(h.account, now)
            if h.status == "open":
                self.end_hold(h, "released")
        return h.status

    def op_tick(self, now: int) -> None:
        for account in self.accounts:
            self.advance(account, now)

    # -- reads ---------------------------------------------------------------------------------

    def balance(self, account: str, t: int) -> OBalance:
        self.advance(account, t)  # on a copy: reads write nothing
        packages = {}
        for g in sorted((g for g in self.grants.values() if g.account == account), key=OGrant.key):
            r = g.residual()
            expired = voided = remaining = 0
            if g.voided_at is not None and g.voided_at <= t:
                voided, status = r, "voided"
            elif g.expires is not None and t >= g.expires:
                expired, status = r, "expired"
            elif t < g.effective:
                remaining, status = r, "scheduled"
            else:
                remaining, status = r, "active" if r > 0 else "depleted"
            packages[g.id] = OPackage(g.id, g.used, g.held, expired, voided, remaining, status)
        available = sum(p.remaining for p in packages.values() if p.status in ("active", "depleted"))
        held = sum(g.held for g in self.grants.values() if g.account == account)
        return OBalance(available, held, self.overage[account], packages)


class Oracle:
    """The log of operations performed so far; every answer is a replay of the whole log."""

    def __init__(self, prices: list[Price], lateness_s: int = 7 * 86_400, future_s: int = 300) -> None:
        self.prices, self.lateness_s, self.future_s = prices, lateness_s, future_s
        self.log: list[tuple[str, tuple[object, ...]]] = []

    def _replay(self) -> tuple[_World, object]:
        world = _World(self.prices, self.lateness_s, self.future_s)
        result: object = None
        for name, args in self.log:
            result = getattr(world, "op_" + name)(*args)
        return world, result

    def do(self, name: str, *args: object) -> object:
        """Perform an operation (``account``, ``grant``, ``void``, ``record``, ``reserve``,
        ``settle``, ``release``, ``tick``) and answer what the engine should answer."""
        self.log.append((name, args))
        return self._replay()[1]

    def balance(self, account: str, t: int) -> OBalance:
        return self._replay()[0].balance(account, t)

    def hold_parts(self, hid: str) -> list[tuple[str, int]]:
        return list(self._replay()[0].holds[hid].parts)

    def usable_order(self, account: str, t: int) -> list[str]:
        """Grant ids usable at ``t``, in burn-down order (their figures do not matter here)."""
        return [g.id for g in self._replay()[0].ordered(account, t)]

    def residuals_before(self, account: str) -> dict[str, int]:
        """granted - used - held of each grant as the log stands (before the next operation)."""
        return {g.id: g.residual() for g in self._replay()[0].grants.values() if g.account == account}

    def boundaries(self, t: int) -> list[int]:
        """Instants >= ``t`` where a figure changes: a grant takes effect or expires, a hold times out."""
        world = self._replay()[0]
        instants = {h.expires_at for h in world.holds.values() if h.status == "open"}
        for g in world.grants.values():
            instants.update(x for x in (g.effective, g.expires) if x is not None)
        return sorted(x for x in instants if x >= t)
