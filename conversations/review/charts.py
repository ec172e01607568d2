"""A server-rendered SVG bar chart: no JavaScript, no CDN, nothing for the CSP to allow."""

import datetime
import math
from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH = 720
HEIGHT = 240
PAD_LEFT = 56
PAD_BOTTOM = 28
PAD_TOP = 12


# Room a "26 Nov" label needs at the chart's font size, with a gap to its neighbour.
DAY_LABEL_WIDTH = 56


def day_label_indices(*, count: int, slot_width: float) -> set[int]:
    """The bars that get a day label: the latest day, then evenly spaced back from it (every
    seventh bar at most), never two closer than a label is wide."""
    if count == 0:
        return set()
    weekly = 7 if count > 7 else 1
    step = max(weekly, math.ceil(DAY_LABEL_WIDTH / max(slot_width, 1.0)))
    return set(range(count - 1, -1, -step))


def tokens_per_day_svg(*, points: Sequence[tuple[datetime.date, int]]) -> SafeString:
    """Bars of tokens per day with a labelled y axis; every bar has a <title> tooltip."""
    count = max(len(points), 1)
    peak = max((tokens for _, tokens in points), default=0) or 1
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / count
    bars = []
    for index, (day, tokens) in enumerate(points):
        bar_h = plot_h * tokens / peak
        bars.append(
            (
                f"{PAD_LEFT + index * slot + slot * 0.15:.1f}",
                f"{PAD_TOP + plot_h - bar_h:.1f}",
                f"{slot * 0.7:.1f}",
                f"{bar_h:.1f}",
                f"{day:%d %b %Y}: {tokens:,} tokens",
            )
        )
    bar_markup = format_html_join(
        "",
        '<rect class="chart-bar" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
        bars,
    )
    labelled = day_label_indices(count=len(points), slot_width=slot)
    labels = format_html_join(
        "",
        '<text class="chart-label" x="{}" y="{}" text-anchor="middle">{}</text>',
        (
            (f"{PAD_LEFT + i * slot + slot / 2:.1f}", HEIGHT - 8, f"{day:%d %b}")
            for i, (day, _) in enumerate(points)
            if i in labelled
        ),
    )
    return format_html(
        '<svg class="usage-chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="chart-title"'
        ' xmlns="http://www.w3.org/2000/svg">'
        '<title id="chart-title">Tokens per day, last {n} days (peak {peak})</title>'
        '<line class="chart-axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}"/>'
        '<line class="chart-axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
        '<text class="chart-label" x="{lx}" y="{ty}" text-anchor="end">{peak}</text>'
        '<text class="chart-label" x="{lx}" y="{b}" text-anchor="end">0</text>'
        "{bars}{labels}</svg>",
        w=WIDTH,
        h=HEIGHT,
        n=len(points),
        peak=f"{peak:,}" if any(t for _, t in points) else "0",
        l=PAD_LEFT,
        t=PAD_TOP,
        b=PAD_TOP + plot_h,
        r=WIDTH - 8,
        lx=PAD_LEFT - 6,
        ty=PAD_TOP + 10,
        bars=bar_markup,
        labels=labels,
    )
