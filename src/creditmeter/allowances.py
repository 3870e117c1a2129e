"""What a plan adds on top of its credits: recurring allowances, rollover of unused credits,
limits on consumption, and what happens when credits run out. Pure: parsing and records.

In the plan file (beside a plan's other fields)::

    rollover: {max_percent: 40, max_credits: 200, lasts: 1}   # unused credits of each period
    allowances:
      - {id: daily, every: 1d, credits: 50, calendar: Asia/Shanghai, name: Daily credits}
    limits:
      - {window: rolling 5h, credits: 300}
    when_out_of_credits: {fallback: basic-model, daily_cap: 50}  # or {overage: 10}, or block

An allowance's period is counted from the subscription's start, or on the local calendar of the
``calendar`` time zone. Its package is a grant of kind ``kind`` (default ``subscription``) valid
for exactly the period, so the burn-down order uses a daily allowance before a monthly one
(both priority 50; the daily one expires first) and both before packs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from creditmeter.domain import GrantKind
from creditmeter.errors import InputError
from creditmeter.ids import check_id
from creditmeter.money import format_credits, parse_credits
from creditmeter.pricing.windows import parse_timezone
from creditmeter.recurrence import Every, Window, check_calendar_hours, parse_every, parse_window

MAX_ALLOWANCE_ID = 20  # leaves room in the derived grant ids (255)
MAX_ALLOWANCES = 10
MAX_LIMITS = 20
MAX_LASTS = 120


@dataclass(frozen=True, slots=True)
class Rollover:
    """What a period's allowance left unused carries over, capped, into a ``rollover`` package
    that lasts ``lasts`` periods after the one it came from.

    Attributes:
      max_credits_uc: the most carried over (None: no cap in credits).
      max_percent: the most carried over, in percent of the period's allowance (None: no cap).
    """

    max_credits_uc: int | None
    max_percent: int | None
    lasts: int = 1

    def cap_uc(self, allowance_uc: int) -> int:
        cap = allowance_uc
        if self.max_percent is not None:
            cap = min(cap, allowance_uc * self.max_percent // 100)
        if self.max_credits_uc is not None:
            cap = min(cap, self.max_credits_uc)
        return cap

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.max_percent is not None:
            out["max_percent"] = self.max_percent
        if self.max_credits_uc is not None:
            out["max_credits"] = format_credits(self.max_credits_uc)
        out["lasts"] = self.lasts
        return out


@dataclass(frozen=True, slots=True)
class Allowance:
    """A recurring package: ``credits_uc`` every ``every``, counted from the subscription's start
    or on the calendar of ``calendar`` (a time zone)."""

    id: str
    every: Every
    credits_uc: int
    calendar: str | None
    name: str
    kind: GrantKind = GrantKind.SUBSCRIPTION
    priority: int = 50
    rollover: Rollover | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "every": self.every.text,
                               "credits": format_credits(self.credits_uc), "name": self.name,
                               "kind": self.kind.value, "priority": self.priority}
        if self.calendar is not None:
            out["calendar"] = self.calendar
        if self.rollover is not None:
            out["rollover"] = self.rollover.to_dict()
        return out


class Scope(enum.StrEnum):
    """Whose consumption a limit bounds."""

    ACCOUNT = "account"  # all of the account's usage
    KEY = "key"          # usage through holds made with one key (the gateway's requests)
    MEMBER = "member"    # what an enterprise's quota paid of one member's usage


@dataclass(frozen=True, slots=True)
class LimitRule:
    """A bound on consumption over a window, whatever paid for it.

    Attributes:
      id: unique on the account (a plan's limits are ``plan-1``, ``plan-2``, ...).
      key_id: the key whose usage counts (scope ``key``).
      enterprise_id: the enterprise whose quota counts (scope ``member``).
      source: who set it: ``plan``, ``operator``, ``owner`` (a key's owner) or ``admin``.
    """

    id: str
    window: Window
    credits_uc: int
    scope: Scope = Scope.ACCOUNT
    key_id: str | None = None
    enterprise_id: str | None = None
    source: str = "plan"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "window": self.window.text,
                               "credits": format_credits(self.credits_uc), "scope": self.scope.value,
                               "source": self.source}
        if self.window.timezone != "UTC":
            out["calendar"] = self.window.timezone
        if self.key_id is not None:
            out["key_id"] = self.key_id
        if self.enterprise_id is not None:
            out["enterprise_id"] = self.enterprise_id
        return out

    def describe(self) -> str:
        scope = {Scope.ACCOUNT: "", Scope.KEY: f" through key {self.key_id}",
                 Scope.MEMBER: f" of {self.enterprise_id}'s quota"}[self.scope]
        return f"{format_credits(self.credits_uc)} credits {self.window.words()}{scope}"


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """A limit at an instant.

    Attributes:
      used_uc: consumption that counts in the window (charged usage).
      held_uc: what open holds in its scope hold (requests in flight).
      window_start_us: the oldest usage that counts is at or after it.
      resets_at_us: a calendar window's end; for a rolling window, when the oldest usage in it
        stops counting; None for ``total`` (or nothing to free).
      frees_at_us: for a refused request, when enough will have freed up for it (None: waiting
        alone will not free enough).
    """

    rule: LimitRule
    used_uc: int
    held_uc: int
    window_start_us: int
    resets_at_us: int | None
    frees_at_us: int | None = None

    @property
    def remaining_uc(self) -> int:
        return max(0, self.rule.credits_uc - self.used_uc - self.held_uc)


@dataclass(frozen=True, slots=True)
class AllowanceStatus:
    """A recurring allowance at an instant: its running period and that period's package.

    Attributes:
      package: the period's package figures (a ``creditmeter.domain.Package``).
      resets_at_us: when the period ends and the next one's package starts.
    """

    allowance: Allowance
    main: bool  # the plan's own credits, each period
    period_start_us: int
    resets_at_us: int
    package: Any


class WhenOut(enum.StrEnum):
    BLOCK = "block"
    OVERAGE = "overage"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class OutOfCredits:
    """What a request meets once the account's credits are spent.

    Attributes:
      overage_cap_uc: with ``overage``, the most debt the account may run (requests are refused
        once it is reached; the next credits pay it off).
      fallback_model: with ``fallback``, the model requests go to instead.
      daily_cap: with ``fallback``, the most requests a UTC day that may fall back (None: no cap).
    """

    mode: WhenOut = WhenOut.BLOCK
    overage_cap_uc: int = 0
    fallback_model: str | None = None
    daily_cap: int | None = None

    def to_dict(self) -> dict[str, Any] | str:
        if self.mode is WhenOut.BLOCK:
            return "block"
        if self.mode is WhenOut.OVERAGE:
            return {"overage": format_credits(self.overage_cap_uc)}
        out: dict[str, Any] = {"fallback": self.fallback_model}
        if self.daily_cap is not None:
            out["daily_cap"] = self.daily_cap
        return out

    def describe(self) -> str:
        """The policy in words, as the console and the CLI show it."""
        if self.mode is WhenOut.BLOCK:
            return "when your credits run out, requests are refused"
        if self.mode is WhenOut.OVERAGE:
            return (f"when your credits run out, requests go on as overage up to "
                    f"{format_credits(self.overage_cap_uc)} credits, paid from your next credits")
        cap = "" if self.daily_cap is None else f", up to {self.daily_cap} a day"
        return f"when your credits run out, requests use {self.fallback_model}{cap}"


BLOCK = OutOfCredits()


# -- parsing ---------------------------------------------------------------------------------------

def _mapping(data: object, field: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError(field, f"must be a mapping ({', '.join(keys)})")
    for key in data:
        if key not in keys:
            raise InputError(f"{field}.{key}", f"unknown field (expected {', '.join(keys)})")
    return data


def _whole(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(field, f"must be a whole number from {low} to {high}, got {value!r}")
    return value


def parse_rollover(data: object, field: str) -> Rollover:
    data = _mapping(data, field, ("max_credits", "max_percent", "lasts"))
    if data.get("max_credits") is None and data.get("max_percent") is None:
        raise InputError(field, "needs max_credits or max_percent (or both: the smaller applies)")
    credits = (None if data.get("max_credits") is None
               else parse_credits(data["max_credits"], f"{field}.max_credits", allow_zero=False))
    percent = (None if data.get("max_percent") is None
               else _whole(data["max_percent"], f"{field}.max_percent", 1, 100))
    lasts = _whole(data.get("lasts", 1), f"{field}.lasts", 1, MAX_LASTS)
    return Rollover(credits, percent, lasts)


ALLOWANCE_FIELDS = ("id", "every", "credits", "calendar", "name", "kind", "priority", "rollover")
_ALLOWANCE_KINDS = (GrantKind.SUBSCRIPTION, GrantKind.PROMO, GrantKind.PACKAGE, GrantKind.TRIAL)


def parse_allowances(data: object, field: str, plan_name: str) -> tuple[Allowance, ...]:
    if not isinstance(data, list) or len(data) > MAX_ALLOWANCES:
        raise InputError(field, f"must be a list of at most {MAX_ALLOWANCES} allowances")
    out: list[Allowance] = []
    for index, item in enumerate(data):
        prefix = f"{field}[{index}]"
        item = _mapping(item, prefix, ALLOWANCE_FIELDS)
        allowance_id = check_id(item.get("id"), f"{prefix}.id")
        if len(allowance_id) > MAX_ALLOWANCE_ID or "@" in allowance_id or "/" in allowance_id:
            raise InputError(f"{prefix}.id", f"must be at most {MAX_ALLOWANCE_ID} characters, "
                             "without '@' or '/'")
        if any(a.id == allowance_id for a in out):
            raise InputError(f"{prefix}.id", f"duplicate allowance id {allowance_id!r}")
        if "credits" not in item:
            raise InputError(f"{prefix}.credits", "is required")
        kind_text = item.get("kind", GrantKind.SUBSCRIPTION.value)
        if kind_text not in [k.value for k in _ALLOWANCE_KINDS]:
            raise InputError(f"{prefix}.kind", "must be one of "
                             f"{', '.join(k.value for k in _ALLOWANCE_KINDS)}, got {kind_text!r}")
        kind = GrantKind(kind_text)
        name = item.get("name", f"{plan_name[:90]} — {allowance_id}")
        if not isinstance(name, str) or not name.strip() or len(name) > 120 or not name.isprintable():
            raise InputError(f"{prefix}.name", "must be 1-120 printable characters")
        out.append(Allowance(
            id=allowance_id, every=_every(item, prefix),
            credits_uc=parse_credits(item["credits"], f"{prefix}.credits", allow_zero=False),
            calendar=(None if item.get("calendar") is None
                      else parse_timezone(item["calendar"], f"{prefix}.calendar")),
            name=name, kind=kind,
            priority=(kind.default_priority if item.get("priority") is None
                      else _whole(item["priority"], f"{prefix}.priority", 0, 100)),
            rollover=(None if item.get("rollover") is None
                      else parse_rollover(item["rollover"], f"{prefix}.rollover"))))
    return tuple(out)


def _every(item: Mapping[str, Any], prefix: str) -> Every:
    every = parse_every(item.get("every"), f"{prefix}.every")
    return every if item.get("calendar") is None else check_calendar_hours(every, f"{prefix}.every")


def parse_limit(data: object, field: str, limit_id: str, *, source: str = "plan",
                scope: Scope = Scope.ACCOUNT, key_id: str | None = None,
                enterprise_id: str | None = None) -> LimitRule:
    """One limit in its file form ``{window, credits, calendar}``."""
    data = _mapping(data, field, ("window", "credits", "calendar"))
    if "credits" not in data:
        raise InputError(f"{field}.credits", "is required")
    if data.get("window") is None:
        raise InputError(f"{field}.window", "is required: total, rolling 5h, 1d, 7d, 1mo, ...")
    return LimitRule(limit_id, parse_window(data["window"], f"{field}.window", data.get("calendar"),
                                            f"{field}.calendar"),
                     parse_credits(data["credits"], f"{field}.credits", allow_zero=False),
                     scope, key_id, enterprise_id, source)


def parse_limits(data: object, field: str) -> tuple[LimitRule, ...]:
    if not isinstance(data, list) or len(data) > MAX_LIMITS:
        raise InputError(field, f"must be a list of at most {MAX_LIMITS} limits")
    return tuple(parse_limit(item, f"{field}[{i}]", f"plan-{i + 1}") for i, item in enumerate(data))


def parse_out_of_credits(data: object, field: str) -> OutOfCredits:
    """``block``, ``{overage: CAP}`` or ``{fallback: MODEL, daily_cap: N}``."""
    if data == "block" or data is None:
        return BLOCK
    data = _mapping(data, field, ("overage", "fallback", "daily_cap", "block"))
    if "block" in data:
        if len(data) > 1 or data["block"] not in (True, None):
            raise InputError(field, "block takes nothing else")
        return BLOCK
    if ("overage" in data) == ("fallback" in data):
        raise InputError(field, "must be block, {overage: CAP} or {fallback: MODEL, daily_cap: N}")
    if "overage" in data:
        if "daily_cap" in data:
            raise InputError(f"{field}.daily_cap", "only a fallback has a daily cap")
        return OutOfCredits(WhenOut.OVERAGE,
                            parse_credits(data["overage"], f"{field}.overage", allow_zero=False))
    model = data["fallback"]
    if not isinstance(model, str) or not model.strip() or len(model) > 255 or not model.isprintable():
        raise InputError(f"{field}.fallback", "must be a model id")
    cap = None if data.get("daily_cap") is None else _whole(data["daily_cap"], f"{field}.daily_cap",
                                                            1, 1_000_000)
    return OutOfCredits(WhenOut.FALLBACK, 0, model, cap)
