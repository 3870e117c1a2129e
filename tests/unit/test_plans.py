"""Plans (SPEC §7): parsing the catalog, the default catalog, and month-end-safe billing periods."""

from __future__ import annotations

import calendar
import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditmeter.domain import GrantKind
from creditmeter.errors import InputError, NotFound
from creditmeter.plans import (
    Interval,
    Plan,
    PlanCatalog,
    PlanKind,
    add_months,
    default_plans,
    grant_expiry,
    load_plans_file,
    parse_plans,
    period_bounds,
    period_index_at,
)
from creditmeter.pricing import load_yaml
from creditmeter.timeutil import DAY_US, format_instant
from tests.conftest import at

SHIPPED = Path(__file__).parents[2] / "src/creditmeter/catalogs/plans.yaml"
UC = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def valid() -> dict[str, Any]:
    """A catalog with one plan of each kind, in this order: trial, subscription, addon, package,
    enterprise."""
    return {"plans": [
        {"id": "trial", "kind": "trial", "name": "Trial", "credits": 100, "valid_days": 14},
        {"id": "pro", "kind": "subscription", "name": "Professional", "credits": "1000", "period": "month"},
        {"id": "addon", "kind": "addon", "name": "Add-on", "credits": "500.5", "valid_days": 365},
        {"id": "pack", "kind": "package", "name": "Package", "credits": 3000, "valid_days": 90,
         "priority": 70, "description": "A pack."},
        {"id": "ent", "kind": "enterprise", "name": "Enterprise", "credits": 2500, "period": "year",
         "seats_default": 10},
    ]}


def iso(us: int) -> str | None:
    return format_instant(us)


# -- parsing ---------------------------------------------------------------------------------------

def test_a_valid_catalog_parses_into_exact_plans() -> None:
    catalog = parse_plans(valid())
    assert [p.id for p in catalog.plans] == ["trial", "pro", "addon", "pack", "ent"]
    trial, pro, addon, pack, ent = catalog.plans
    assert trial == Plan(id="trial", kind=PlanKind.TRIAL, name="Trial", credits_uc=100 * UC, priority=0,
                         valid_days=14)
    assert pro.period is Interval.MONTH and pro.valid_days is None and pro.priority == 50
    assert addon.credits_uc == 500_500_000 and addon.valid_days == 365
    assert pack.priority == 70 and pack.description == "A pack."
    assert ent.period is Interval.YEAR and ent.seats_default == 10 and ent.credits_uc == 2500 * UC
    assert catalog.get("addon") is addon
    assert "pro" in catalog and "nope" not in catalog and len(catalog) == 5


def test_each_plan_kind_issues_the_grant_kind_of_the_same_name() -> None:
    expected = {PlanKind.TRIAL: GrantKind.TRIAL, PlanKind.SUBSCRIPTION: GrantKind.SUBSCRIPTION,
                PlanKind.ADDON: GrantKind.ADDON, PlanKind.PACKAGE: GrantKind.PACKAGE,
                PlanKind.ENTERPRISE: GrantKind.ENTERPRISE}
    assert {kind: kind.grant_kind for kind in PlanKind} == expected
    for plan in parse_plans(valid()).plans:
        assert plan.grant_kind is expected[plan.kind]
        assert plan.kind.recurring == (plan.period is not None)


def test_priority_defaults_follow_the_grant_kind_and_may_be_set() -> None:
    data = valid()
    data["plans"][0]["priority"] = 100
    data["plans"][1]["priority"] = 0
    trial, pro, *_ = parse_plans(data).plans
    assert (trial.priority, pro.priority) == (100, 0)
    defaults = parse_plans(valid())
    assert [p.priority for p in defaults.plans] == [0, 50, 50, 70, 50]


@pytest.mark.parametrize(("value", "uc"), [
    ("0.000001", 1), (12.5, 12_500_000), (Decimal("0.1"), 100_000), ("1000000000000", 10**18), (7, 7 * UC),
])
def test_credits_are_read_exactly(value: object, uc: int) -> None:
    data = valid()
    data["plans"][2]["credits"] = value
    assert parse_plans(data).get("addon").credits_uc == uc


def test_a_yaml_catalog_reads_decimals_exactly(tmp_path: Path) -> None:
    path = tmp_path / "plans.yaml"
    path.write_text("plans:\n  - {id: p, kind: package, name: P, credits: 0.1, valid_days: 30}\n")
    assert load_plans_file(path).get("p").credits_uc == 100_000
    path.write_text("plans:\n  - {id: p, kind: package, name: P, credits: 0.0000001, valid_days: 30}\n")
    with pytest.raises(InputError) as err:
        load_plans_file(path)
    assert err.value.field == "plans[0].credits"


def test_to_dict_is_the_json_form_and_parses_back() -> None:
    catalog = parse_plans(valid())
    out = catalog.to_dict()
    assert out["plans"][2] == {"id": "addon", "kind": "addon", "name": "Add-on", "credits": "500.5",
                               "valid_days": 365, "priority": 50, "description": None}
    assert out["plans"][4] == {"id": "ent", "kind": "enterprise", "name": "Enterprise", "credits": "2500",
                               "period": "year", "priority": 50, "description": None, "seats_default": 10}
    assert "valid_days" not in out["plans"][1] and "period" not in out["plans"][0]
    assert parse_plans(out) == catalog


def test_an_unknown_plan_is_not_found_naming_the_field() -> None:
    with pytest.raises(NotFound) as err:
        parse_plans(valid()).get("gold")
    assert (err.value.what, err.value.ident, err.value.field) == ("plan", "gold", "plan")


Mutation = Callable[[dict[str, Any]], object]


def _set(index: int, key: object, value: object) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["plans"][index][key] = value
    return mutate


def _drop(index: int, key: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        del data["plans"][index][key]
    return mutate


BAD: list[tuple[str, Mutation, str]] = [
    ("unknown section", lambda d: d.update(extras=[]), "extras"),
    ("plans missing", lambda d: d.pop("plans"), "plans"),
    ("plans not a list", lambda d: d.update(plans={"a": 1}), "plans"),
    ("plans empty", lambda d: d.update(plans=[]), "plans"),
    ("plan not a mapping", lambda d: d["plans"].__setitem__(1, "pro"), "plans[1]"),
    ("unknown field", _set(2, "credit", 5), "plans[2].credit"),
    ("unknown non-string field", _set(3, 7, 5), "plans[3].7"),
    ("id missing", _drop(0, "id"), "plans[0].id"),
    ("id empty", _set(0, "id", ""), "plans[0].id"),
    ("id too long", _set(0, "id", "x" * 256), "plans[0].id"),
    ("id not a string", _set(0, "id", 5), "plans[0].id"),
    ("id with a control character", _set(0, "id", "a\nb"), "plans[0].id"),
    ("duplicate id", _set(3, "id", "pro"), "plans[3].id"),
    ("kind missing", _drop(1, "kind"), "plans[1].kind"),
    ("kind unknown", _set(1, "kind", "promo"), "plans[1].kind"),
    ("kind wrong case", _set(1, "kind", "Subscription"), "plans[1].kind"),
    ("kind not a string", _set(1, "kind", ["trial"]), "plans[1].kind"),
    ("name missing", _drop(2, "name"), "plans[2].name"),
    ("name blank", _set(2, "name", "  "), "plans[2].name"),
    ("name not a string", _set(2, "name", 3), "plans[2].name"),
    ("name too long", _set(2, "name", "n" * 256), "plans[2].name"),
    ("name with a control character", _set(2, "name", "a\tb"), "plans[2].name"),
    ("credits missing", _drop(2, "credits"), "plans[2].credits"),
    ("credits zero", _set(2, "credits", 0), "plans[2].credits"),
    ("credits negative", _set(2, "credits", "-5"), "plans[2].credits"),
    ("credits with 7 decimals", _set(2, "credits", "1.0000001"), "plans[2].credits"),
    ("credits float with 7 decimals", _set(2, "credits", 0.1234567), "plans[2].credits"),
    ("credits over 10^12", _set(2, "credits", "1000000000000.000001"), "plans[2].credits"),
    ("credits not a number", _set(2, "credits", "lots"), "plans[2].credits"),
    ("credits a boolean", _set(2, "credits", True), "plans[2].credits"),
    ("credits null", _set(2, "credits", None), "plans[2].credits"),
    ("period on a trial", _set(0, "period", "month"), "plans[0].period"),
    ("period on an addon", _set(2, "period", "year"), "plans[2].period"),
    ("period missing on a subscription", _drop(1, "period"), "plans[1].period"),
    ("period missing on enterprise", _drop(4, "period"), "plans[4].period"),
    ("period unknown", _set(1, "period", "week"), "plans[1].period"),
    ("period not a string", _set(1, "period", 1), "plans[1].period"),
    ("valid_days on a subscription", _set(1, "valid_days", 30), "plans[1].valid_days"),
    ("valid_days on enterprise", _set(4, "valid_days", 30), "plans[4].valid_days"),
    ("valid_days missing on a trial", _drop(0, "valid_days"), "plans[0].valid_days"),
    ("valid_days missing on a package", _drop(3, "valid_days"), "plans[3].valid_days"),
    ("valid_days zero", _set(2, "valid_days", 0), "plans[2].valid_days"),
    ("valid_days over 36500", _set(2, "valid_days", 36_501), "plans[2].valid_days"),
    ("valid_days a string", _set(2, "valid_days", "365"), "plans[2].valid_days"),
    ("valid_days a fraction", _set(2, "valid_days", Decimal("1.5")), "plans[2].valid_days"),
    ("valid_days a boolean", _set(2, "valid_days", True), "plans[2].valid_days"),
    ("priority negative", _set(3, "priority", -1), "plans[3].priority"),
    ("priority over 100", _set(3, "priority", 101), "plans[3].priority"),
    ("priority a string", _set(3, "priority", "high"), "plans[3].priority"),
    ("priority a boolean", _set(3, "priority", False), "plans[3].priority"),
    ("priority a fraction", _set(3, "priority", 1.5), "plans[3].priority"),
    ("description not a string", _set(3, "description", 5), "plans[3].description"),
    ("description blank", _set(3, "description", ""), "plans[3].description"),
    ("description too long", _set(3, "description", "d" * 2001), "plans[3].description"),
    ("description with a control character", _set(3, "description", "a\x00b"), "plans[3].description"),
    ("seats_default on a subscription", _set(1, "seats_default", 5), "plans[1].seats_default"),
    ("seats_default zero", _set(4, "seats_default", 0), "plans[4].seats_default"),
    ("seats_default a string", _set(4, "seats_default", "ten"), "plans[4].seats_default"),
]


@pytest.mark.parametrize(("mutate", "field"), [(m, f) for _, m, f in BAD], ids=[case for case, _, _ in BAD])
def test_every_bad_input_names_its_field(mutate: Mutation, field: str) -> None:
    data = copy.deepcopy(valid())
    mutate(data)
    with pytest.raises(InputError) as err:
        parse_plans(data)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


@pytest.mark.parametrize("data", [None, [], "plans", 3])
def test_a_catalog_that_is_not_a_mapping_names_its_source(data: object) -> None:
    with pytest.raises(InputError) as err:
        parse_plans(data, "mine.yaml")
    assert err.value.field == "mine.yaml"


def test_multiline_descriptions_are_allowed() -> None:
    data = valid()
    data["plans"][3]["description"] = "Line one.\nLine two.\n"
    assert parse_plans(data).get("pack").description == "Line one.\nLine two.\n"


def test_a_plan_built_directly_keeps_period_and_valid_days_apart() -> None:
    with pytest.raises(InputError):
        Plan(id="p", kind=PlanKind.SUBSCRIPTION, name="P", credits_uc=1, priority=50, valid_days=30)
    with pytest.raises(InputError):
        Plan(id="p", kind=PlanKind.ADDON, name="P", credits_uc=1, priority=50, period=Interval.MONTH)
    with pytest.raises(InputError):
        Plan(id="p", kind=PlanKind.ADDON, name="P", credits_uc=1, priority=50, valid_days=3, seats_default=2)
    plan = Plan(id="p", kind=PlanKind.ADDON, name="P", credits_uc=1, priority=50, valid_days=3)
    with pytest.raises(InputError) as err:
        PlanCatalog((plan, plan))
    assert err.value.field == "plans[1].id"


def test_unreadable_and_malformed_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_plans_file(tmp_path / "missing.yaml")
    assert err.value.field == "file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("plans: [\n")
    with pytest.raises(InputError) as err:
        load_plans_file(bad)
    assert err.value.field == str(bad)


# -- the default catalog ---------------------------------------------------------------------------

def test_the_default_catalog_loads_and_mirrors_the_billing_page() -> None:
    catalog = default_plans()
    assert catalog == load_plans_file(SHIPPED)
    assert catalog == parse_plans(load_yaml(SHIPPED.read_text()))
    assert {plan.kind for plan in catalog.plans} == set(PlanKind)
    trial = [p for p in catalog.plans if p.kind is PlanKind.TRIAL]
    assert len(trial) == 1 and trial[0].priority == 0 and trial[0].valid_days
    # The trial is used first: every other plan comes after it in the burn-down order.
    assert all(p.priority > 0 for p in catalog.plans if p.kind is not PlanKind.TRIAL)
    professional = [p for p in catalog.plans if p.kind is PlanKind.SUBSCRIPTION]
    assert any(p.period is Interval.MONTH and "Professional" in p.name for p in professional)
    addons = [p for p in catalog.plans if p.kind is PlanKind.ADDON]
    assert addons and all(p.valid_days == 365 for p in addons)
    enterprise = [p for p in catalog.plans if p.kind is PlanKind.ENTERPRISE]
    assert enterprise and all(p.period is not None for p in enterprise)
    assert parse_plans(catalog.to_dict()) == catalog


# -- billing periods -------------------------------------------------------------------------------

def test_a_subscription_started_jan_31_renews_at_each_month_end() -> None:
    anchor = at("2027-01-31T09:30:15.250000Z")
    starts = [iso(period_bounds(anchor, Interval.MONTH, k)[0]) for k in range(6)]
    assert starts == ["2027-01-31T09:30:15.250000Z", "2027-02-28T09:30:15.250000Z",
                      "2027-03-31T09:30:15.250000Z", "2027-04-30T09:30:15.250000Z",
                      "2027-05-31T09:30:15.250000Z", "2027-06-30T09:30:15.250000Z"]


def test_in_a_leap_year_jan_31_renews_on_feb_29() -> None:
    anchor = at("2028-01-31T00:00:00Z")
    assert [iso(add_months(anchor, n)) for n in range(4)] == [
        "2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z", "2028-04-30T00:00:00Z"]
    # Across the years from a 2027 anchor: 2027 is not a leap year, 2028 is.
    anchor = at("2027-01-31T00:00:00Z")
    assert iso(add_months(anchor, 1)) == "2027-02-28T00:00:00Z"
    assert iso(add_months(anchor, 13)) == "2028-02-29T00:00:00Z"
    assert iso(add_months(anchor, 14)) == "2028-03-31T00:00:00Z"


def test_period_bounds_of_the_jan_31_subscription() -> None:
    anchor = at("2027-01-31T00:00:00Z")
    assert period_bounds(anchor, Interval.MONTH, 0) == (anchor, at("2027-02-28"))
    assert period_bounds(anchor, "month", 1) == (at("2027-02-28"), at("2027-03-31"))
    assert period_bounds(anchor, Interval.MONTH, 2) == (at("2027-03-31"), at("2027-04-30"))
    assert period_index_at(anchor, Interval.MONTH, at("2027-02-28") - 1) == 0
    assert period_index_at(anchor, Interval.MONTH, at("2027-02-28")) == 1
    assert period_index_at(anchor, Interval.MONTH, at("2027-03-30T23:59:59.999999Z")) == 1
    assert period_index_at(anchor, Interval.MONTH, at("2027-03-31")) == 2


def test_a_feb_29_yearly_anchor_returns_to_feb_29_in_leap_years() -> None:
    anchor = at("2028-02-29T12:00:00Z")
    starts = [iso(period_bounds(anchor, Interval.YEAR, k)[0]) for k in range(6)]
    assert starts == ["2028-02-29T12:00:00Z", "2029-02-28T12:00:00Z", "2030-02-28T12:00:00Z",
                      "2031-02-28T12:00:00Z", "2032-02-29T12:00:00Z", "2033-02-28T12:00:00Z"]
    # 2100 is not a leap year (a century not divisible by 400); 2000 was.
    assert iso(add_months(at("2096-02-29"), 48)) == "2100-02-28T00:00:00Z"
    assert iso(add_months(at("2096-02-29"), 96)) == "2104-02-29T00:00:00Z"
    assert iso(add_months(at("1996-02-29"), 48)) == "2000-02-29T00:00:00Z"
    assert period_index_at(anchor, "year", at("2029-02-28T11:59:59Z")) == 0
    assert period_index_at(anchor, "year", at("2029-02-28T12:00:00Z")) == 1


def test_bad_period_arguments_are_input_errors() -> None:
    anchor = at("2027-01-31")
    with pytest.raises(InputError) as err:
        period_index_at(anchor, Interval.MONTH, anchor - 1)
    assert err.value.field == "at"
    with pytest.raises(InputError) as err:
        period_bounds(anchor, Interval.MONTH, -1)
    assert err.value.field == "index"
    with pytest.raises(InputError) as err:
        period_bounds(anchor, "week", 0)
    assert err.value.field == "period"
    with pytest.raises(InputError):
        add_months(at("9999-12-01"), 1)
    with pytest.raises(InputError):
        add_months(-1, 1)


def test_grant_expiry_is_valid_days_later() -> None:
    catalog = parse_plans(valid())
    start = at("2027-03-01T08:00:00Z")
    assert grant_expiry(catalog.get("addon"), start) == at("2028-02-29T08:00:00Z")  # 365 days, leap
    assert grant_expiry(catalog.get("trial"), start) == start + 14 * DAY_US
    with pytest.raises(InputError) as err:
        grant_expiry(catalog.get("pro"), start)
    assert err.value.field == "plan"


# -- properties ------------------------------------------------------------------------------------

ANCHORS = st.integers(at("2000-01-01"), at("2100-01-01") - 1)
INDICES = st.integers(0, 1200)
PERIODS = st.sampled_from(list(Interval))


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@given(ANCHORS, st.integers(0, 2400))
def test_add_months_clamps_to_the_anchor_day_and_keeps_the_time(anchor: int, n: int) -> None:
    a, r = _dt(anchor), _dt(add_months(anchor, n))
    year, month = a.year + (a.month - 1 + n) // 12, (a.month - 1 + n) % 12 + 1
    assert (r.year, r.month) == (year, month)
    assert r.day == min(a.day, calendar.monthrange(year, month)[1])
    assert r.time() == a.time()


@given(ANCHORS, PERIODS, INDICES)
def test_period_bounds_are_contiguous_and_strictly_increasing(anchor: int, period: Interval, k: int) -> None:
    start, end = period_bounds(anchor, period, k)
    following = period_bounds(anchor, period, k + 1)
    assert start < end == following[0] < following[1]
    assert period_bounds(anchor, period, 0)[0] == anchor
    days = (end - start) / DAY_US
    assert days == int(days)  # whole days: the time of day never moves
    assert (28 <= days <= 31) if period is Interval.MONTH else days in (365, 366)


@given(ANCHORS, PERIODS, INDICES, st.floats(0, 1, exclude_max=True))
def test_period_index_at_finds_the_period_of_its_bounds(anchor: int, period: Interval, k: int,
                                                        fraction: float) -> None:
    start, end = period_bounds(anchor, period, k)
    inside = start + int((end - start) * fraction)
    assert start <= inside < end
    for t in (start, end - 1, inside):
        assert period_index_at(anchor, period, t) == k
    assert period_index_at(anchor, period, end) == k + 1


@given(ANCHORS, PERIODS, st.integers(0, 100 * 366 * DAY_US))
def test_every_instant_after_the_anchor_lies_in_its_period(anchor: int, period: Interval,
                                                           offset: int) -> None:
    t = anchor + offset
    k = period_index_at(anchor, period, t)
    start, end = period_bounds(anchor, period, k)
    assert k >= 0 and start <= t < end
