"""Credits per day, stacked by model: the geometry of the usage page's SVG chart. Pure.

Heights are worked out in integers (tenths of a pixel) from integer µc, so no float meets an
amount; the template only writes the numbers out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from creditmeter.console.display import rounded_credits
from creditmeter.money import format_credits
from creditmeter.timeutil import DAY_US, format_instant

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 28
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
SERIES = 8         # colours: seven models of their own, the last shared by the rest
MAX_LABELS = 8     # day labels under the bars
MIN_SCALE_UC = 10_000  # the y axis goes up to at least 0.01 credits


@dataclass(frozen=True, slots=True)
class Segment:
    """One model's part of one day's bar (coordinates in tenths of a pixel)."""

    series: int
    model: str
    y10: int
    h10: int
    uc: int


@dataclass(frozen=True, slots=True)
class Bar:
    day: str          # YYYY-MM-DD (UTC)
    x10: int
    w10: int
    total_uc: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class Legend:
    series: int
    model: str
    total_uc: int


@dataclass(frozen=True, slots=True)
class Chart:
    bars: tuple[Bar, ...]
    y_ticks: tuple[tuple[int, str], ...]   # (y in tenths of a pixel, label)
    x_labels: tuple[tuple[int, str], ...]  # (x centre in tenths of a pixel, label)
    legend: tuple[Legend, ...]
    total_uc: int
    first_day: str
    last_day: str

    width = WIDTH
    height = HEIGHT
    left = LEFT
    top = TOP
    plot_w = PLOT_W
    plot_h = PLOT_H

    @property
    def days(self) -> int:
        return len(self.bars)


def px(tenths: int) -> str:
    """Tenths of a pixel as an SVG number: 1234 → ``"123.4"``."""
    sign = "-" if tenths < 0 else ""
    whole, frac = divmod(abs(tenths), 10)
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"


def nice_scale(max_uc: int) -> tuple[int, int]:
    """The axis top (1, 2 or 5 × 10^k µc, at least ``max_uc``) and its tick step."""
    top = MIN_SCALE_UC
    while top < max_uc:
        top = top * 2 if str(top)[0] in "15" else top * 5 // 2  # 1 → 2 → 5 → 10 → ...
    step = {"1": top // 5, "2": top // 4, "5": top // 5}[str(top)[0]]
    return top, step


def daily_chart(first_day_us: int, days: int, per_model: Sequence[tuple[str, Mapping[int, int]]],
                totals: Mapping[int, int], rest_label: str = "other models") -> Chart:
    """The chart of ``days`` UTC days from ``first_day_us``.

    ``per_model``: (model, {day start µs: credits µc}) for at most ``SERIES - 1`` models drawn in
    their own colour, biggest first; ``totals``: every day's credits. What the models do not
    account for shares the last colour, as ``rest_label``.
    """
    assert first_day_us % DAY_US == 0 and days >= 1 and len(per_model) < SERIES
    day_starts = [first_day_us + i * DAY_US for i in range(days)]
    named = list(per_model)
    drawn = {model: sum(by_day.get(d, 0) for d in day_starts) for model, by_day in named}
    other_total = sum(totals.get(d, 0) for d in day_starts) - sum(drawn.values())
    legend = [Legend(i, model, drawn[model]) for i, (model, _) in enumerate(named)]
    if other_total:
        legend.append(Legend(SERIES - 1, rest_label, other_total))

    peak = max((totals.get(d, 0) for d in day_starts), default=0)
    top_uc, step_uc = nice_scale(peak)
    slot10 = PLOT_W * 10 // days
    w10 = max(slot10 * 7 // 10, 4)
    base10 = (TOP + PLOT_H) * 10
    bars = []
    for i, start in enumerate(day_starts):
        parts = [(index, model, by_day.get(start, 0)) for index, (model, by_day) in enumerate(named)]
        rest = totals.get(start, 0) - sum(uc for _, _, uc in parts)
        if rest:
            parts.append((SERIES - 1, rest_label, rest))
        segments, below_uc = [], 0
        for index, model, uc in parts:
            if uc <= 0:
                continue
            bottom10 = base10 - below_uc * PLOT_H * 10 // top_uc
            below_uc += uc
            top10 = base10 - below_uc * PLOT_H * 10 // top_uc
            segments.append(Segment(index, model, top10, bottom10 - top10, uc))
        x10 = LEFT * 10 + i * slot10 + (slot10 - w10) // 2
        bars.append(Bar(_day(start), x10, w10, totals.get(start, 0), tuple(segments)))

    ticks = tuple((base10 - tick * PLOT_H * 10 // top_uc, rounded_credits(tick))
                  for tick in range(0, top_uc + 1, step_uc))
    every = -(-days // MAX_LABELS)
    labels = tuple((bar.x10 + bar.w10 // 2, bar.day[5:]) for i, bar in enumerate(bars) if i % every == 0)
    return Chart(tuple(bars), ticks, labels, tuple(legend), sum(totals.get(d, 0) for d in day_starts),
                 _day(day_starts[0]), _day(day_starts[-1]))


def segment_title(bar: Bar, segment: Segment) -> str:
    return f"{bar.day} · {segment.model}: {format_credits(segment.uc)} credits"


def _day(us: int) -> str:
    return (format_instant(us) or "")[:10]
