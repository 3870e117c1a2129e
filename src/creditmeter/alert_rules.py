"""Alert rules: the thresholds an operator watches, auto top-up, and the alerts a change raises by
crossing them.

Rules come from the plan catalog (a plan's ``alerts:``) and from the server config (defaults for
every account); each is one threshold::

    alerts:
      - {usage_reached_percent: 80}     # of a period's allowance (each allowance package)
      - {balance_below: 100}            # credits available
      - {balance_below_percent: 10}     # of the period's own allowance (the plan's credits)
      - {expiring_within: 3d}           # a package with credits left expires within 3 days

The alerts that need no threshold (credits depleted, overage started, a limit reached, a
subscription renewed, cancelled or ended, a purchase completed, quota allocated or revoked) are
raised for every account; an endpoint chooses the types it receives.

Exactly once per crossing: a change raises an alert only when a figure crosses the threshold
(before the change on one side, after it on the other), and its dedupe key names the rule and the
period (or the package), so the same crossing raised again — a retry, another worker, a second
crossing in the same period — is stored once. In a new period it is raised again.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from creditmeter.alerts import Alert, AlertType
from creditmeter.errors import InputError
from creditmeter.ids import check_id
from creditmeter.money import format_credits, parse_credits
from creditmeter.timeutil import US_PER_S, format_instant

MAX_RULES = 20
MAX_PERCENT = 1_000
MAX_EXPIRING_DAYS = 366
MAX_TOPUPS_A_MONTH = 100
_DURATION = re.compile(r"^([1-9][0-9]{0,4})(h|d)$")
_UNIT_US = {"h": 3_600 * US_PER_S, "d": 86_400 * US_PER_S}


class RuleKind(enum.StrEnum):
    """What a rule watches (its key in the catalog)."""

    USAGE_REACHED = "usage_reached_percent"
    BALANCE_BELOW = "balance_below"
    BALANCE_BELOW_PERCENT = "balance_below_percent"
    EXPIRING = "expiring_within"


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One threshold.

    Attributes:
      kind: what it watches.
      value: a percent (``usage_reached_percent``, ``balance_below_percent``), µc
        (``balance_below``) or µs (``expiring_within``).
      text: the value as written (``80``, ``100``, ``3d``): part of the alert's dedupe key.
    """

    kind: RuleKind
    value: int
    text: str

    @property
    def key(self) -> str:
        return f"{self.kind.value}={self.text}"

    def to_dict(self) -> dict[str, Any]:
        if self.kind is RuleKind.BALANCE_BELOW:
            return {self.kind.value: format_credits(self.value)}
        if self.kind is RuleKind.EXPIRING:
            return {self.kind.value: self.text}
        return {self.kind.value: self.value}


@dataclass(frozen=True, slots=True)
class AutoTopup:
    """An account's auto top-up: when its available credits fall below ``below_uc``, pack
    ``pack_id`` is requested (``topup.requested``), at most ``max_per_month`` times a UTC month.

    Attributes:
      grant_now: grant the pack at once, before the payment is confirmed (the operator's choice:
        credits are given on trust until the purchase call with the alert's order id confirms it).
    """

    below_uc: int
    pack_id: str
    max_per_month: int
    grant_now: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"below": format_credits(self.below_uc), "pack": self.pack_id,
                "max_per_month": self.max_per_month, "grant_now": self.grant_now}


# -- parsing ---------------------------------------------------------------------------------------

def parse_alert_rules(data: object, field: str) -> tuple[AlertRule, ...]:
    """A list of rules in their file form; raises :class:`InputError` naming the field."""
    if not isinstance(data, list):
        raise InputError(field, "must be a list of rules such as {usage_reached_percent: 80}")
    if len(data) > MAX_RULES:
        raise InputError(field, f"at most {MAX_RULES} rules")
    rules: list[AlertRule] = []
    for index, item in enumerate(data):
        rule = parse_alert_rule(item, f"{field}[{index}]")
        if any(r.key == rule.key for r in rules):
            raise InputError(f"{field}[{index}]", f"the rule {rule.key} is listed twice")
        rules.append(rule)
    return tuple(rules)


def parse_alert_rule(item: object, field: str) -> AlertRule:
    kinds = ", ".join(k.value for k in RuleKind)
    if not isinstance(item, Mapping) or len(item) != 1:
        raise InputError(field, f"must be a mapping with exactly one of {kinds}")
    (name, value), = item.items()
    if name not in set(RuleKind):
        raise InputError(f"{field}.{name}", f"unknown rule (expected one of {kinds})")
    kind = RuleKind(name)
    where = f"{field}.{name}"
    if kind is RuleKind.BALANCE_BELOW:
        amount = parse_credits(value, where, allow_zero=False)
        return AlertRule(kind, amount, format_credits(amount))
    if kind is RuleKind.EXPIRING:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise InputError(where, f"must be a number of days or hours such as 3d or 12h, got {value!r}")
        count, unit = int(match[1]), match[2]
        if count * _UNIT_US[unit] > MAX_EXPIRING_DAYS * _UNIT_US["d"]:
            raise InputError(where, f"at most {MAX_EXPIRING_DAYS} days")
        return AlertRule(kind, count * _UNIT_US[unit], value)
    if type(value) is not int or not 1 <= value <= MAX_PERCENT:
        raise InputError(where, f"must be a whole percent from 1 to {MAX_PERCENT}, got {value!r}")
    return AlertRule(kind, value, str(value))


def parse_auto_topup(data: object, field: str) -> AutoTopup:
    """``{below: credits, pack: id, max_per_month: N, grant_now?: bool}``."""
    keys = ("below", "pack", "max_per_month", "grant_now")
    if not isinstance(data, Mapping):
        raise InputError(field, "must be a mapping with below, pack and max_per_month")
    for key in data:
        if key not in keys:
            raise InputError(f"{field}.{key}", f"unknown field (expected {', '.join(keys)})")
    for key in keys[:3]:
        if data.get(key) is None:
            raise InputError(f"{field}.{key}", "is required")
    below = parse_credits(data["below"], f"{field}.below", allow_zero=False)
    pack = check_id(data["pack"], f"{field}.pack")
    most = data["max_per_month"]
    if type(most) is not int or not 1 <= most <= MAX_TOPUPS_A_MONTH:
        raise InputError(f"{field}.max_per_month", f"must be a whole number from 1 to {MAX_TOPUPS_A_MONTH}")
    grant_now = data.get("grant_now", False)
    if type(grant_now) is not bool:
        raise InputError(f"{field}.grant_now", "must be true or false")
    return AutoTopup(below, pack, most, grant_now)


# -- crossing --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PackageUse:
    """An allowance package running at the instant of a :class:`Figures`: what it gave and has."""

    used_uc: int
    amount_uc: int
    name: str
    ends_at_us: int


@dataclass(frozen=True, slots=True)
class Figures:
    """What the rules look at, at one instant.

    Attributes:
      packages: the allowance packages running then, by grant id (only when a rule needs them).
    """

    available_uc: int
    overage_uc: int
    packages: Mapping[str, PackageUse]


# The period the figures belong to (the running subscription's, else the UTC month: an alert of a
# threshold is raised once in it) and the period's own allowance (the plan's credits), when
# subscribed. Worked out only when an alert is raised.
PeriodOf = Callable[[], tuple[tuple[int, int], int | None]]


def crossings(account_id: str, rules: tuple[AlertRule, ...], before: Figures, after: Figures,
              at_us: int, period_of: PeriodOf) -> list[Alert]:
    """The alerts a change from ``before`` to ``after`` (at ``at_us``) raises."""
    out: list[Alert] = []
    for rule in rules:
        if rule.kind is RuleKind.USAGE_REACHED:
            out += _usage_reached(account_id, rule, before, after, at_us)
            continue
        if rule.kind is RuleKind.EXPIRING or after.available_uc >= before.available_uc:
            continue  # tick raises expiring packages (time crosses it); a balance only going down
        threshold = rule.value
        if rule.kind is RuleKind.BALANCE_BELOW_PERCENT:
            allowance = period_of()[1]
            if allowance is None:
                continue
            threshold = allowance * rule.value // 100
        if before.available_uc >= threshold > after.available_uc:
            (start, end), _ = period_of()
            period = format_instant(start)
            out.append(Alert(account_id, AlertType.BALANCE_LOW, f"{rule.key}:{period}", at_us,
                             {"rule": rule.key, "threshold": format_credits(threshold),
                              "available": format_credits(after.available_uc),
                              "period_start": period, "period_end": format_instant(end)}))
    if before.available_uc > 0 and after.available_uc <= 0:
        period = format_instant(period_of()[0][0])
        out.append(Alert(account_id, AlertType.DEPLETED, f"depleted:{period}", at_us,
                         {"available": format_credits(after.available_uc),
                          "overage": format_credits(after.overage_uc), "period_start": period}))
    if before.overage_uc == 0 < after.overage_uc:
        period = format_instant(period_of()[0][0])
        out.append(Alert(account_id, AlertType.OVERAGE, f"overage:{period}", at_us,
                         {"overage": format_credits(after.overage_uc), "period_start": period}))
    return out


def _usage_reached(account_id: str, rule: AlertRule, before: Figures, after: Figures,
                   at_us: int) -> list[Alert]:
    out = []
    for grant_id, use in after.packages.items():
        was = before.packages.get(grant_id)
        used_before = 0 if was is None else was.used_uc
        if used_before * 100 < rule.value * use.amount_uc <= use.used_uc * 100:
            out.append(Alert(account_id, AlertType.USAGE_REACHED, f"{rule.key}:{grant_id}", at_us,
                             {"rule": rule.key, "percent": rule.value, "grant_id": grant_id,
                              "package_name": use.name, "used": format_credits(use.used_uc),
                              "credits": format_credits(use.amount_uc),
                              "period_end": format_instant(use.ends_at_us)}))
    return out


def topup_crossed(topup: AutoTopup | None, before: Figures, after: Figures) -> bool:
    """Whether the change took the available credits below the auto top-up's threshold."""
    return topup is not None and before.available_uc >= topup.below_uc > after.available_uc


def expiring(account_id: str, rule: AlertRule, grant_id: str, name: str, remaining_uc: int,
             expires_at_us: int, at_us: int) -> Alert:
    """The alert that a package with ``remaining_uc`` left expires within the rule's time."""
    assert rule.kind is RuleKind.EXPIRING
    return Alert(account_id, AlertType.PACKAGE_EXPIRING, f"{rule.key}:{grant_id}", at_us,
                 {"rule": rule.key, "grant_id": grant_id, "package_name": name,
                  "remaining": format_credits(remaining_uc), "expires_at": format_instant(expires_at_us)})


__all__ = ["AlertRule", "AutoTopup", "Figures", "PackageUse", "PeriodOf", "RuleKind", "crossings", "expiring",
           "parse_alert_rule", "parse_alert_rules", "parse_auto_topup", "topup_crossed"]
