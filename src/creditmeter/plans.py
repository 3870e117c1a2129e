"""Plans and month-end-safe billing periods. Pure: no I/O but reading a plan file, no clock.

A plan is what an operator sells: a trial, a subscription, an add-on pack, a resource package, or
enterprise seats. Recurring plans (``subscription``, ``enterprise``) have a ``period`` (``month``
or ``year``); one-off plans (``trial``, ``addon``, ``package``) have ``valid_days``. The file form::

    plans:
      - id: professional-monthly
        kind: subscription
        name: Professional Edition
        credits: 1000        # per period; for enterprise, per seat per period
        period: month        # subscription, enterprise
        # valid_days: 365    # trial, addon, package
        priority: 50         # optional, 0-100 (default: trial 0, others 50)
        description: ...     # optional
        seats_default: 10    # optional, enterprise only

Billing periods are anchored on the instant a subscription started: period ``k`` starts ``k``
periods after the anchor, with the anchor's day clamped to the month's length and its time of day
kept. Each period is computed from the anchor, never from the previous period, so a subscription
started on Jan 31 renews on Feb 28 (29), then Mar 31, Apr 30, May 31.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from creditmeter.alert_rules import AlertRule, parse_alert_rules
from creditmeter.allowances import (
    BLOCK,
    Allowance,
    LimitRule,
    OutOfCredits,
    Rollover,
    parse_allowances,
    parse_limits,
    parse_out_of_credits,
    parse_rollover,
)
from creditmeter.domain import GrantKind
from creditmeter.errors import InputError, NotFound
from creditmeter.ids import check_id
from creditmeter.money import format_credits, parse_credits
from creditmeter.pricing import load_yaml
from creditmeter.recurrence import add_months
from creditmeter.timeutil import DAY_US, MAX_US, MIN_US

MAX_VALID_DAYS = 36_500
MAX_SEATS = 1_000_000
MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 2_000
PLAN_FIELDS = ("id", "kind", "name", "credits", "period", "valid_days", "priority", "description",
               "seats_default", "allowances", "rollover", "limits", "when_out_of_credits", "alerts")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


class PlanKind(enum.StrEnum):
    """What a plan sells; each kind issues grants of the :class:`GrantKind` of the same name."""

    TRIAL = "trial"
    SUBSCRIPTION = "subscription"
    ADDON = "addon"
    PACKAGE = "package"
    ENTERPRISE = "enterprise"

    @property
    def grant_kind(self) -> GrantKind:
        return GrantKind(self.value)

    @property
    def recurring(self) -> bool:
        """Whether the plan renews each period (else it is a one-off pack valid some days)."""
        return self in (PlanKind.SUBSCRIPTION, PlanKind.ENTERPRISE)


class Interval(enum.StrEnum):
    """How often a recurring plan renews."""

    MONTH = "month"
    YEAR = "year"

    @property
    def months(self) -> int:
        return 1 if self is Interval.MONTH else 12


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan. Exactly one of ``period`` (recurring kinds) and ``valid_days`` (one-off kinds) is set.

    Attributes:
      credits_uc: the allowance per period, or the pack's size; for ``enterprise``, per seat per period.
      seats_default: the seats an enterprise subscription gets when none are given (enterprise only).
    """

    id: str
    kind: PlanKind
    name: str
    credits_uc: int
    priority: int
    period: Interval | None = None
    valid_days: int | None = None
    description: str | None = None
    seats_default: int | None = None
    allowances: tuple[Allowance, ...] = ()
    rollover: Rollover | None = None  # of the plan's own credits, each period
    limits: tuple[LimitRule, ...] = ()
    when_out: OutOfCredits = BLOCK
    alerts: tuple[AlertRule, ...] = ()  # thresholds watched for its subscribers (``alert_rules``)

    def __post_init__(self) -> None:
        if self.kind.recurring and (self.period is None or self.valid_days is not None):
            raise InputError("period", f"a {self.kind} plan has a period and no valid_days")
        if not self.kind.recurring and (self.valid_days is None or self.period is not None):
            raise InputError("valid_days", f"a {self.kind} plan has valid_days and no period")
        if self.seats_default is not None and self.kind is not PlanKind.ENTERPRISE:
            raise InputError("seats_default", "only enterprise plans have seats_default")

    @property
    def grant_kind(self) -> GrantKind:
        return self.kind.grant_kind

    def to_dict(self) -> dict[str, Any]:
        """The plan in its file form (credits as a string); it parses back to an equal plan."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind.value, "name": self.name,
                               "credits": format_credits(self.credits_uc)}
        if self.period is not None:
            out["period"] = self.period.value
        else:
            out["valid_days"] = self.valid_days
        out["priority"] = self.priority
        out["description"] = self.description
        if self.kind is PlanKind.ENTERPRISE:
            out["seats_default"] = self.seats_default
        # Written only when set, so a plan without them keeps the form it always had.
        if self.allowances:
            out["allowances"] = [a.to_dict() for a in self.allowances]
        if self.rollover is not None:
            out["rollover"] = self.rollover.to_dict()
        if self.limits:
            out["limits"] = [{k: v for k, v in rule.to_dict().items()
                              if k in ("window", "credits", "calendar")} for rule in self.limits]
        if self.when_out != BLOCK:
            out["when_out_of_credits"] = self.when_out.to_dict()
        if self.alerts:
            out["alerts"] = [rule.to_dict() for rule in self.alerts]
        return out

    @property
    def recurs(self) -> bool:
        """Whether subscribing to it sets up anything that recurs or bounds use beyond its credits."""
        return bool(self.allowances or self.rollover or self.limits or self.when_out != BLOCK
                    or self.alerts)


@dataclass(frozen=True, slots=True)
class PlanCatalog:
    """The plans on sale, in file order; ids are unique."""

    plans: tuple[Plan, ...]
    _by_id: Mapping[str, Plan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, Plan] = {}
        for index, plan in enumerate(self.plans):
            if plan.id in by_id:
                raise InputError(f"plans[{index}].id", f"duplicate plan id {plan.id!r}")
            by_id[plan.id] = plan
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))

    def get(self, plan_id: str) -> Plan:
        """The plan with this id; raises :class:`NotFound` naming the field ``plan``."""
        plan = self._by_id.get(plan_id)
        if plan is None:
            raise NotFound("plan", plan_id, "plan")
        return plan

    def __contains__(self, plan_id: object) -> bool:
        return plan_id in self._by_id

    def __len__(self) -> int:
        return len(self.plans)

    def to_dict(self) -> dict[str, Any]:
        return {"plans": [plan.to_dict() for plan in self.plans]}


# -- parsing ---------------------------------------------------------------------------------------

_KIND_VALUES = frozenset(kind.value for kind in PlanKind)
_PERIOD_VALUES = frozenset(period.value for period in Interval)


_STORED: dict[bytes, Plan] = {}  # by the plan's JSON
MAX_STORED = 256


def stored_plan(data: dict[str, Any]) -> Plan:
    """A plan as a subscription keeps it (``Plan.to_dict``), parsed once for every account on it:
    the accounts' terms differ by their subscriptions' ids and times, so they are cached apart."""
    key = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    plan = _STORED.get(key)
    if plan is None:
        if len(_STORED) >= MAX_STORED:
            _STORED.clear()
        plan = _STORED[key] = parse_plan(data)
    return plan


def parse_plans(data: object, source: str = "plans") -> PlanCatalog:
    """Validate a plan catalog in its file form; raises :class:`InputError` naming the field."""
    if not isinstance(data, Mapping):
        raise InputError(source, "must be a mapping with a 'plans' list")
    for key in data:
        if key != "plans":
            raise InputError(str(key), "unknown section (expected plans)")
    items = data.get("plans")
    if not isinstance(items, list):
        raise InputError("plans", "is required and must be a list of plans")
    if not items:
        raise InputError("plans", "must list at least one plan")
    plans: list[Plan] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        plan = parse_plan(item, f"plans[{index}]")
        if plan.id in first_index:
            raise InputError(f"plans[{index}].id",
                             f"duplicate plan id {plan.id!r} (also plans[{first_index[plan.id]}])")
        first_index[plan.id] = index
        plans.append(plan)
    return PlanCatalog(tuple(plans))


def parse_plan(data: object, prefix: str = "plan") -> Plan:
    """Validate one plan; fields are named ``{prefix}.{key}`` (e.g. ``plans[2].credits``)."""
    if not isinstance(data, Mapping):
        raise InputError(prefix, "must be a mapping (id, kind, name, credits, ...)")
    for key in data:
        if key not in PLAN_FIELDS:
            raise InputError(f"{prefix}.{key}", f"unknown field (expected {', '.join(PLAN_FIELDS)})")
    plan_id = check_id(data.get("id"), f"{prefix}.id")
    kind = _kind(data.get("kind"), f"{prefix}.kind")
    name = _text(data.get("name"), f"{prefix}.name", MAX_NAME_LENGTH)
    if name is None:
        raise InputError(f"{prefix}.name", "is required")
    if "credits" not in data:
        raise InputError(f"{prefix}.credits", "is required")
    credits_uc = parse_credits(data["credits"], f"{prefix}.credits", allow_zero=False)
    period: Interval | None = None
    valid_days: int | None = None
    if kind.recurring:
        if data.get("valid_days") is not None:
            raise InputError(f"{prefix}.valid_days",
                             f"only trial, addon and package plans have valid_days ({kind} plans renew "
                             "each period)")
        period = _period(data.get("period"), f"{prefix}.period")
    else:
        if data.get("period") is not None:
            raise InputError(f"{prefix}.period",
                             f"only subscription and enterprise plans have a period ({kind} plans use "
                             "valid_days)")
        valid_days = _whole(data.get("valid_days"), f"{prefix}.valid_days", 1, MAX_VALID_DAYS)
        if valid_days is None:
            raise InputError(f"{prefix}.valid_days", f"is required for a {kind} plan")
    priority = _whole(data.get("priority"), f"{prefix}.priority", 0, 100)
    description = _text(data.get("description"), f"{prefix}.description", MAX_DESCRIPTION_LENGTH,
                        multiline=True)
    seats_default = None
    if data.get("seats_default") is not None:
        if kind is not PlanKind.ENTERPRISE:
            raise InputError(f"{prefix}.seats_default", "only enterprise plans have seats_default")
        seats_default = _whole(data["seats_default"], f"{prefix}.seats_default", 1, MAX_SEATS)
    return Plan(id=plan_id, kind=kind, name=name, credits_uc=credits_uc,
                priority=kind.grant_kind.default_priority if priority is None else priority,
                period=period, valid_days=valid_days, description=description,
                seats_default=seats_default, **_extras(data, prefix, kind, name))


def _extras(data: Mapping[str, Any], prefix: str, kind: PlanKind, name: str) -> dict[str, Any]:
    """Allowances, rollover, limits, the policy when credits run out and alert rules (subscribed
    plans only)."""
    extras: dict[str, Any] = {}
    present = [key for key in ("allowances", "rollover", "limits", "when_out_of_credits", "alerts")
               if data.get(key) is not None]
    if present and kind not in (PlanKind.SUBSCRIPTION, PlanKind.ENTERPRISE, PlanKind.TRIAL):
        raise InputError(f"{prefix}.{present[0]}", f"a {kind} pack has none: only plans one "
                         "subscribes to (subscription, enterprise, trial) do")
    if data.get("allowances") is not None:
        extras["allowances"] = parse_allowances(data["allowances"], f"{prefix}.allowances", name)
    if data.get("rollover") is not None:
        if kind is PlanKind.TRIAL:
            raise InputError(f"{prefix}.rollover", "a trial has a single period: nothing rolls over")
        extras["rollover"] = parse_rollover(data["rollover"], f"{prefix}.rollover")
    if data.get("limits") is not None:
        extras["limits"] = parse_limits(data["limits"], f"{prefix}.limits")
    if data.get("when_out_of_credits") is not None:
        extras["when_out"] = parse_out_of_credits(data["when_out_of_credits"],
                                                  f"{prefix}.when_out_of_credits")
    if data.get("alerts") is not None:
        extras["alerts"] = parse_alert_rules(data["alerts"], f"{prefix}.alerts")
    return extras


def _kind(value: object, field: str) -> PlanKind:
    if value is None:
        raise InputError(field, "is required")
    if not isinstance(value, str) or value not in _KIND_VALUES:
        raise InputError(field, f"must be one of {', '.join(PlanKind)}, got {value!r}")
    return PlanKind(value)


def _period(value: object, field: str) -> Interval:
    if value is None:
        raise InputError(field, "is required (month or year)")
    if not isinstance(value, str) or value not in _PERIOD_VALUES:
        raise InputError(field, f"must be month or year, got {value!r}")
    return Interval(value)


def _whole(value: object, field: str, low: int, high: int) -> int | None:
    """An optional whole number in ``low..high``; ``None`` when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(field, f"must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise InputError(field, f"must be between {low} and {high}, got {value}")
    return value


def _text(value: object, field: str, max_length: int, *, multiline: bool = False) -> str | None:
    """An optional non-blank string; ``None`` when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip() or len(value) > max_length:
        raise InputError(field, f"must be 1-{max_length} characters and not blank")
    text = value.replace("\n", " ").replace("\t", " ") if multiline else value
    if not text.isprintable():
        raise InputError(field, "must not contain control characters")
    return value


def load_plans_file(path: str | Path) -> PlanCatalog:
    """Read and validate a plan catalog YAML file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte order mark is not content
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("file", f"cannot read {source}: {exc}") from None
    return parse_plans(load_yaml(text, source), source)


@functools.cache
def default_plans() -> PlanCatalog:
    """The shipped default catalog (``catalogs/plans.yaml``): example plans of every kind."""
    text = files("creditmeter").joinpath("catalogs/plans.yaml").read_text(encoding="utf-8")
    return parse_plans(load_yaml(text, "plans.yaml"), "plans.yaml")


# -- billing periods -------------------------------------------------------------------------------

def _check_instant(us: int, field: str) -> None:
    if not MIN_US <= us <= MAX_US:
        raise InputError(field, f"{us} µs is outside 1970-01-01..9999-12-31")


def _as_period(period: Interval | str) -> Interval:
    if isinstance(period, Interval):
        return period
    return _period(period, "period")


def period_bounds(anchor_us: int, period: Interval | str, index: int) -> tuple[int, int]:
    """``(start_us, end_us)`` of billing period ``index`` (0 starts at the anchor); ends are exclusive."""
    if index < 0:
        raise InputError("index", f"must not be negative, got {index}")
    months = _as_period(period).months
    return add_months(anchor_us, index * months), add_months(anchor_us, (index + 1) * months)


def period_index_at(anchor_us: int, period: Interval | str, at_us: int) -> int:
    """The index of the billing period whose ``[start, end)`` contains ``at_us``."""
    step = _as_period(period)
    _check_instant(anchor_us, "anchor")
    _check_instant(at_us, "at")
    if at_us < anchor_us:
        raise InputError("at", "is before the start of the first billing period")
    start = _EPOCH + timedelta(microseconds=anchor_us)
    at = _EPOCH + timedelta(microseconds=at_us)
    index = ((at.year - start.year) * 12 + at.month - start.month) // step.months
    # Period ``index`` starts in at's month or earlier, and period index+1 after it: at most one step back.
    while index > 0 and add_months(anchor_us, index * step.months) > at_us:
        index -= 1
    return index


def grant_expiry(plan: Plan, start_us: int) -> int:
    """When a one-off plan's grant bought at ``start_us`` expires: ``valid_days`` days later."""
    if plan.valid_days is None:
        raise InputError("plan", f"{plan.id!r} is a {plan.kind} plan: its grants expire at the end "
                         "of their billing period")
    _check_instant(start_us, "start")
    expiry = start_us + plan.valid_days * DAY_US
    _check_instant(expiry, "valid_days")
    return expiry
