"""What each console page shows, read from the engine: the same calls and figures as the API.

Each function returns the template's context (domain objects and integers of µc; the templates
format them through :mod:`creditmeter.console.display`). Nothing here writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from creditmeter import present
from creditmeter.allowances import BLOCK, Allowance, AllowanceStatus, LimitStatus, WhenOut
from creditmeter.console.chart import SERIES, Chart, daily_chart
from creditmeter.console.display import time_left
from creditmeter.domain import AccountKind, Balance, GrantStatus, Package, Period, StoredEvent, SummaryRow
from creditmeter.engine import Engine, EnterpriseView
from creditmeter.enterprise import QuotaAllocation
from creditmeter.errors import InputError
from creditmeter.timeutil import DAY_US, parse_instant

SOON_US = 7 * DAY_US          # packages expiring within this are highlighted
PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
CHART_DAYS, MAX_CHART_DAYS = 30, 366
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
Bar = tuple[tuple[str, int, int], ...]  # a bar's parts drawn: (part, x‰, width‰)


def parse_day(text: str, field_name: str) -> int:
    """A ``YYYY-MM-DD`` date (as a date input sends it) as its first instant, UTC."""
    if not _DATE.fullmatch(text):
        raise InputError(field_name, f"{text!r} is not a date (YYYY-MM-DD)")
    return parse_instant(text, field_name)


# -- overview ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackageRow:
    """A package as the overview lists it, with its bar (per mille of granted, cumulative)."""

    package: Package
    soon: str | None  # "in 3 days" when its remaining credits expire within 7 days
    bar: Bar


def package_rows(balance: Balance) -> list[PackageRow]:
    now = balance.at_us
    rows = []
    for p in balance.packages:
        expires = p.grant.expires_at_us
        soon = (time_left(expires, now) if expires is not None and p.remaining_uc > 0
                and p.status is GrantStatus.ACTIVE and expires - now <= SOON_US else None)
        rows.append(PackageRow(p, soon, _bar(p)))
    return rows


def _package_parts(p: Package) -> list[tuple[str, int]]:
    return [("used", p.used_uc), ("held", p.held_uc), ("gone", p.expired_uc + p.voided_uc),
            ("remaining", p.remaining_uc)]


def _bar(p: Package) -> Bar:
    return _parts_bar(p.grant.amount_uc, _package_parts(p))


def _parts_bar(whole_uc: int, parts: list[tuple[str, int]]) -> Bar:
    """Each part's place on a bar of 1000 (per mille of ``whole_uc``, cumulative: no gaps)."""
    if whole_uc <= 0:
        return ()
    out, below = [], 0
    for name, uc in parts:
        start = below * 1000 // whole_uc
        below += uc
        width = below * 1000 // whole_uc - start
        if width > 0:
            out.append((name, start, width))
    return tuple(out)


def overview(engine: Engine, account_id: str, now_us: int) -> dict[str, Any]:
    found = engine.account(account_id)
    balance = engine.balance(account_id, now_us)
    assert found is not None  # balance() raised NotFound otherwise
    sub = (present.subscription(balance.subscription, now_us)
           if balance.subscription is not None else None)
    return {"account": found[0], "balance": balance, "subscription": sub, "period": balance.period,
            "rows": package_rows(balance), "soon_days": SOON_US // DAY_US, "terms": terms(balance)}


# -- allowances, limits and the policy when credits run out -----------------------------------


@dataclass(frozen=True, slots=True)
class AllowanceRow:
    """A recurring allowance: the API's figures (``present.allowance``), how often it recurs in
    words, and its period's package as a bar."""

    figures: Mapping[str, Any]
    often: str  # "every day (Asia/Shanghai)", "every 5 hours", "every month"
    bar: Bar
    bar_label: str


@dataclass(frozen=True, slots=True)
class LimitRow:
    """A limit: the API's figures (``present.limit``), what its ``resets_at`` means, and a bar of
    used, held and remaining against the limit."""

    figures: Mapping[str, Any]
    resets: str  # "resets" (a calendar window ends), "frees" (rolling: the oldest usage leaves it), "never"
    bar: Bar
    bar_label: str


@dataclass(frozen=True, slots=True)
class TermsView:
    """The account's allowances and limits, and what happens when its credits run out (the API's
    ``when_out_of_credits``)."""

    allowances: list[AllowanceRow]
    limits: list[LimitRow]
    when_out: Mapping[str, Any]

    @property
    def gone(self) -> bool:
        """Whether a bar has an expired or voided part (the legend names it then)."""
        return any(part == "gone" for row in self.allowances for part, _, _ in row.bar)


def often(allowance: Allowance) -> str:
    zone = f" ({allowance.calendar})" if allowance.calendar else ""
    return f"every {allowance.every.words()}{zone}"


def _label(whole_uc: int, parts: list[tuple[str, int]]) -> str:
    """A bar in words, for those who do not see it, in percent of ``whole_uc`` (past 100 when
    usage went past a limit): ``"40% used, 60% remaining"``."""
    if whole_uc <= 0:
        return ""
    return ", ".join(f"{uc * 100 // whole_uc}% {'expired or voided' if name == 'gone' else name}"
                     for name, uc in parts if uc > 0)


def allowance_row(status: AllowanceStatus) -> AllowanceRow:
    p: Package = status.package
    label = _label(p.grant.amount_uc, _package_parts(p))
    return AllowanceRow(present.allowance(status), often(status.allowance), _bar(p), label)


def limit_row(status: LimitStatus) -> LimitRow:
    window = status.rule.window
    resets = "never" if window.every is None else "frees" if window.rolling else "resets"
    parts = [("used", status.used_uc), ("held", status.held_uc), ("remaining", status.remaining_uc)]
    # Usage already made counts even past the limit: then the bar is all used and held.
    bar = _parts_bar(max(status.rule.credits_uc, status.used_uc + status.held_uc), parts)
    return LimitRow(present.limit(status), resets, bar, _label(status.rule.credits_uc, parts))


def terms(balance: Balance) -> TermsView | None:
    """What the overview's "Allowances and limits" shows; None when the account has neither
    an allowance beyond its plan's own credits, nor a limit, nor a policy other than ``block``
    (then the plan's credits are the packages and the subscription already shown)."""
    policy = balance.when_out or BLOCK
    allowances = any(not a.main for a in balance.allowances)
    if not (allowances or balance.limits or policy.mode is not WhenOut.BLOCK):
        return None
    return TermsView([allowance_row(a) for a in balance.allowances], [limit_row(s) for s in balance.limits],
                     present.when_out(policy))


# -- usage ------------------------------------------------------------------------------------


@dataclass
class Filters:
    """The usage page's filters as the query string gives them (``from``/``to`` are UTC dates,
    both included), and what they mean for the engine."""

    from_day: str = ""
    to_day: str = ""
    model: str = ""
    member: str = ""
    limit: int = PAGE_SIZE
    cursor: str = ""
    all_time: bool = False  # ``range=all``: no dates mean all time, not the current period
    from_us: int | None = None
    to_us: int | None = None  # exclusive: the day after ``to_day``
    basis: str | None = None  # set when no dates were given: what the current period is
    errors: dict[str, str] = field(default_factory=dict)

    def query(self, **changes: str | int) -> str:
        """The query string of these filters (empty ones left out), with ``changes``."""
        values: dict[str, str | int] = {"from": self.from_day, "to": self.to_day, "model": self.model,
                                        "member": self.member, "range": "all" if self.all_time else ""}
        if self.limit != PAGE_SIZE:
            values["limit"] = self.limit
        values.update(changes)
        kept = {k: v for k, v in values.items() if v not in ("", None)}
        return f"?{urlencode(kept)}" if kept else ""


def parse_filters(params: Mapping[str, str]) -> Filters:
    """Read the filters; a bad one is recorded in ``errors`` under its field, not raised."""
    f = Filters(from_day=params.get("from", "").strip(), to_day=params.get("to", "").strip(),
                model=params.get("model", "").strip(), member=params.get("member", "").strip(),
                cursor=params.get("cursor", "").strip())
    chosen = params.get("range", "").strip()
    if chosen not in ("", "all"):
        f.errors["range"] = "must be 'all' (all time) or left out (the current billing period)"
    f.all_time = chosen == "all"
    for name, text in (("from", f.from_day), ("to", f.to_day)):
        if text:
            try:
                start = parse_day(text, name)
            except InputError as exc:
                f.errors[name] = exc.reason
                continue
            if name == "from":
                f.from_us = start
            else:
                f.to_us = start + DAY_US
    if f.from_us is not None and f.to_us is not None and f.to_us <= f.from_us:
        f.errors["to"] = "must be on or after the from date"
    for name, text in (("model", f.model), ("member", f.member)):
        if len(text) > 255:
            f.errors[name] = "must be at most 255 characters"
    limit = params.get("limit", "").strip()
    if limit:
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_PAGE_SIZE:
            f.errors["limit"] = f"must be a whole number from 1 to {MAX_PAGE_SIZE}"
        else:
            f.limit = int(limit)
    return f


def default_to_period(f: Filters, period_of: Callable[[], Period | None]) -> None:
    """Without dates (nor ``range=all``) the filters cover the current billing period: the
    running subscription's, else the UTC calendar month (the API's ``period``, asked for only
    when it is needed)."""
    if f.errors or f.all_time or f.from_day or f.to_day:
        return
    period = period_of()
    assert period is not None  # Engine.balance (and an enterprise's pool) always works it out
    f.from_us, f.to_us, f.basis = period.start_us, period.end_us, period.basis


def engine_filters(f: Filters) -> dict[str, Any]:
    """The keyword arguments of ``Engine.usage`` / ``usage_page`` / ``usage_summary``."""
    return {"from_us": f.from_us, "to_us": f.to_us, "model": f.model or None, "member": f.member or None}


@dataclass(frozen=True, slots=True)
class Payer:
    grant_id: str
    name: str
    amount_uc: int


def usage(engine: Engine, account_id: str, f: Filters, now_us: int) -> dict[str, Any]:
    """The usage page: the filters' options, and (when the filters are good) a page of events,
    the selection's totals and the chart."""
    found = engine.account(account_id)
    assert found is not None
    account = found[0]
    names: dict[str, str] = {}
    members: list[str] = []
    if account.kind is AccountKind.ENTERPRISE:
        view = engine.enterprise(account_id, now_us)
        members = sorted(m.account_id for m in view.members)  # a removed member's usage is theirs
        balance = view.pool
        for packages in view.quota.values():
            names.update((p.grant.id, p.grant.name) for p in packages)
    else:
        balance = engine.balance(account_id, now_us)
    names.update((p.grant.id, p.grant.name) for p in balance.packages)
    context: dict[str, Any] = {"account": account, "filters": f, "members": members,
                               "models": [], "events": [], "next_cursor": None, "chart": None,
                               "requests": 0, "total_uc": 0}
    if f.member and account.kind is not AccountKind.ENTERPRISE:
        f.errors["member"] = "only an enterprise account's usage is filtered by member"
    default_to_period(f, lambda: balance.period)
    if not f.errors:
        try:
            page, mark = engine.usage_page(account_id, limit=f.limit,
                                           after=present.page_mark(f.cursor or None), **engine_filters(f))
            next_cursor = present.cursor(mark)
        except InputError as exc:
            f.errors[exc.field if exc.field in ("member", "model", "cursor") else "form"] = exc.reason
    if f.errors:
        context["models"] = _models(engine.usage_summary(account_id, "model"), f)
        return context
    selection = engine.usage_summary(account_id, "model", **engine_filters(f))
    unfiltered = f.from_us is None and f.to_us is None and not f.model  # every model used is in it
    used = selection if unfiltered else engine.usage_summary(account_id, "model", member=f.member or None)
    context.update(
        events=[(e, _payers(e, names)) for e in page], next_cursor=next_cursor, models=_models(used, f),
        requests=sum(r.requests for r in selection), total_uc=sum(r.cost_uc for r in selection),
        chart=usage_chart(engine, account_id, f, now_us, selection), chart_span=chart_range(f, now_us))
    return context


def _models(rows: list[SummaryRow], f: Filters) -> list[str]:
    """The models to choose from: those used, and the one chosen."""
    return sorted({str(r.key) for r in rows if r.key} | ({f.model} if f.model else set()))


def _payers(stored: StoredEvent, names: Mapping[str, str]) -> list[Payer]:
    return [Payer(p.grant_id, names.get(p.grant_id, p.grant_id), p.amount_uc)
            for p in stored.charge.allocations]


def chart_range(f: Filters, now_us: int) -> tuple[int, int]:
    """The span the chart covers: the filters' range (at most a year, its end kept), else the
    last 30 days up to today. It draws every UTC day the span touches, each with the usage of
    that day that is inside the span."""
    tomorrow = now_us - now_us % DAY_US + DAY_US
    if f.to_us is not None:
        end = f.to_us
    else:
        end = tomorrow if f.from_us is None else max(tomorrow, f.from_us + DAY_US)
    start = f.from_us if f.from_us is not None else end - CHART_DAYS * DAY_US
    start = max(start, end - MAX_CHART_DAYS * DAY_US, 0)
    return start, end


def usage_chart(engine: Engine, account_id: str, f: Filters, now_us: int,
                selection: list[SummaryRow] | None = None) -> Chart:
    """The chart for the filters; ``selection`` (their per-model summary) saves a query when the
    chart covers exactly the filters' range."""
    start, end = chart_range(f, now_us)

    def summary(group_by: str, model: str | None) -> list[SummaryRow]:
        return engine.usage_summary(account_id, group_by, from_us=start, to_us=end, model=model,
                                    member=f.member or None)

    by_model = (selection if selection is not None and (f.from_us, f.to_us) == (start, end)
                else summary("model", f.model or None))
    priced = sorted((r for r in by_model if r.key and r.cost_uc > 0), key=lambda r: (-r.cost_uc, str(r.key)))
    drawn = priced[:SERIES - 1]
    rest = "other models" if len(priced) >= SERIES else "no model (features)"
    per_model = []
    for row in drawn:
        days = summary("day", str(row.key))
        per_model.append((str(row.key), {int(d.key): d.cost_uc for d in days}))
    totals: dict[int, int] = {}
    if sum(r.cost_uc for r in drawn) == sum(r.cost_uc for r in by_model):  # the models are all of it
        for _, by_day in per_model:
            for day_us, uc in by_day.items():
                totals[day_us] = totals.get(day_us, 0) + uc
    else:
        totals = {int(d.key): d.cost_uc for d in summary("day", f.model or None)}
    first_day = start - start % DAY_US
    return daily_chart(first_day, -(-(end - first_day) // DAY_US), per_model, totals, rest)


# -- enterprise -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberRow:
    account_id: str
    role: str | None
    quota_uc: int
    used_uc: int
    held_uc: int
    remaining_uc: int


@dataclass(frozen=True, slots=True)
class AllocationRow:
    allocation: QuotaAllocation
    package: Package | None  # the member's quota package it made


def enterprise(view: EnterpriseView) -> dict[str, Any]:
    """The enterprise page: the pool, each member's quota figures, and the quota added."""
    roles = {m.account_id: m.role.value for m in view.members}
    members = []
    for member_id in sorted(set(roles) | set(view.quota)):
        packages = view.quota.get(member_id, [])
        members.append(MemberRow(member_id, roles.get(member_id), sum(p.grant.amount_uc for p in packages),
                                 sum(p.used_uc for p in packages), sum(p.held_uc for p in packages),
                                 sum(p.remaining_uc for p in packages)))
    packages_by_id: dict[str, Package] = {p.grant.id: p for packages in view.quota.values() for p in packages}
    allocations = [AllocationRow(a, packages_by_id.get(a.id))
                   for a in sorted(view.allocations, key=lambda a: (-a.created_at_us, a.id))]
    return {"view": view, "pool": view.pool, "rows": package_rows(view.pool), "members": members,
            "member_ids": sorted(roles), "allocations": allocations}
