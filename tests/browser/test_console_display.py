"""How the console rounds amounts for people and draws its chart (pure functions, no server)."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditmeter.console.chart import PLOT_H, SERIES, TOP, daily_chart, nice_scale
from creditmeter.console.display import DAY_US, credits, rounded_credits, span, time_left
from creditmeter.console.views import Filters, chart_range, parse_filters
from creditmeter.money import MAX_UC, format_credits

HOUR_US = DAY_US // 24


@pytest.mark.parametrize(("uc", "shown"), [
    (0, "0.00"), (1, "0.000001"), (9_999, "0.009999"), (10_000, "0.01"), (12_345_000, "12.35"),
    (12_344_999, "12.34"), (994_999, "0.99"), (995_000, "1.00"), (1_234_567_891, "1,234.57"),
    (-5_000_000, "-5.00"), (-125, "-0.000125"), (MAX_UC, "1,000,000,000,000.00"),
])
def test_amounts_are_rounded_for_people(uc: int, shown: str) -> None:
    assert rounded_credits(uc) == shown


@given(st.integers(min_value=-MAX_UC, max_value=MAX_UC))
def test_rounding_is_half_up_to_the_cent_or_exact_below_it(uc: int) -> None:
    exact = Decimal(uc) / 1_000_000
    if uc and abs(uc) < 10_000:
        assert rounded_credits(uc) == format_credits(uc)
    else:
        assert rounded_credits(uc) == format(exact.quantize(Decimal("0.01"), ROUND_HALF_UP), ",.2f")


def test_a_figure_carries_its_exact_amount_and_escapes_nothing_it_should_not() -> None:
    assert str(credits(1_234_567_891)) == (
        '<data class="cr" value="1234.567891" title="1234.567891 credits">1,234.57</data>')


@pytest.mark.parametrize(("left_us", "shown"), [
    (7 * DAY_US - 1, "in 7 days"), (3 * DAY_US + 13 * HOUR_US, "in 4 days"), (47 * HOUR_US, "in 2 days"),
    (30 * HOUR_US, "in 30 hours"), (90 * 60 * 1_000_000, "in about an hour"),
    (59 * 60 * 1_000_000, "within the hour"),
])
def test_time_left_is_rounded_to_the_nearest_day_or_hour(left_us: int, shown: str) -> None:
    assert time_left(left_us, 0) == shown


@given(st.integers(min_value=0, max_value=MAX_UC))
def test_the_axis_covers_the_peak_with_round_steps(peak_uc: int) -> None:
    top, step = nice_scale(peak_uc)
    assert top >= peak_uc and top >= 10_000
    assert str(top).rstrip("0") in ("1", "2", "5") and top % step == 0 and 4 <= top // step <= 5
    assert top <= max(peak_uc, 10_000) * 5 // 2


@given(st.lists(st.dictionaries(st.integers(0, 9), st.integers(0, 10**9), max_size=10), max_size=SERIES - 1),
       st.dictionaries(st.integers(0, 9), st.integers(0, 10**9), max_size=10))
def test_stacked_bars_add_up_to_each_days_total(models: list[dict[int, int]], extra: dict[int, int]) -> None:
    first = 20_000 * DAY_US
    per_model = [(f"m{i}", {first + d * DAY_US: uc for d, uc in by_day.items()})
                 for i, by_day in enumerate(models)]
    totals = {first + d * DAY_US: sum(m.get(d, 0) for m in models) + extra.get(d, 0) for d in range(10)}
    chart = daily_chart(first, 10, per_model, totals)
    assert chart.days == 10 and chart.total_uc == sum(totals.values())
    top, _ = nice_scale(max(totals.values()))
    base = (TOP + PLOT_H) * 10
    for d, bar in enumerate(chart.bars):
        assert bar.total_uc == totals[first + d * DAY_US]
        assert sum(s.uc for s in bar.segments) == bar.total_uc
        edge = base
        for segment in bar.segments:  # stacked without gaps or overlaps, bottom up
            assert segment.y10 + segment.h10 == edge
            edge = segment.y10
        assert base - edge == bar.total_uc * PLOT_H * 10 // top
    assert sum(item.total_uc for item in chart.legend) == chart.total_uc


def test_the_filters_read_dates_as_whole_utc_days() -> None:
    f = parse_filters({"from": "2026-11-01", "to": "2026-11-30", "model": "gpt-4o", "limit": "20"})
    assert not f.errors and (f.from_us, f.to_us) == (20_758 * DAY_US, 20_788 * DAY_US)
    assert f.query(cursor="abc") == "?from=2026-11-01&to=2026-11-30&model=gpt-4o&limit=20&cursor=abc"
    assert chart_range(f, 0) == (20_758 * DAY_US, 20_788 * DAY_US)
    assert parse_filters({"from": "2026-11-01T10:00Z"}).errors == {
        "from": "'2026-11-01T10:00Z' is not a date (YYYY-MM-DD)"}
    now = 20_400 * DAY_US + 5 * HOUR_US
    assert chart_range(Filters(), now) == (now - now % DAY_US - 29 * DAY_US, now - now % DAY_US + DAY_US)
    assert chart_range(Filters(from_us=0), now)[0] == now - now % DAY_US + DAY_US - 366 * DAY_US


def test_a_range_is_written_in_iso_utc_whole_days_as_dates() -> None:
    nov, dec = 20_758 * DAY_US, 20_788 * DAY_US  # 2026-11-01, 2026-12-01
    text = lambda markup: re.sub(r"<[^>]+>", "", str(markup))  # noqa: E731
    assert text(span(nov, dec)) == "2026-11-01 – 2026-11-30 (UTC)"
    assert 'datetime="2026-11-01"' in span(nov, dec)
    anchor = nov + 9 * DAY_US + 14 * HOUR_US + 23 * 60_000_000 + 5_000_001  # 2026-11-10 14:23:05.000001
    assert text(span(anchor, anchor + 30 * DAY_US)) == "2026-11-10 14:23:05 – 2026-12-10 14:23:05 (UTC)"
    assert 'datetime="2026-11-10T14:23:05.000001Z"' in span(anchor, anchor + 30 * DAY_US)
    assert text(span(nov + 14 * HOUR_US, dec)) == "2026-11-01 14:00 – 2026-12-01 00:00 (UTC)"
    assert text(span(nov, None)) == "2026-11-01 – … (UTC)"
    assert text(span(None, dec)) == "… – 2026-11-30 (UTC)"
    assert text(span(None, None)) == "all time"


def test_all_time_is_asked_for_by_name() -> None:
    assert parse_filters({"range": "all"}).all_time
    assert parse_filters({"range": "all"}).query() == "?range=all"
    assert parse_filters({"range": "month"}).errors == {
        "range": "must be 'all' (all time) or left out (the current billing period)"}
