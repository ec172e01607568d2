"""The admin's usage chart: day labels readable at any number of days."""

import datetime
import itertools
import re

import pytest

from conversations.review.charts import DAY_LABEL_WIDTH, tokens_per_day_svg


@pytest.mark.parametrize("days", [1, 2, 7, 8, 14, 29, 30, 31, 60, 90])
def test_day_labels_never_overlap_and_the_latest_day_is_labelled(days: int) -> None:
    start = datetime.date(2026, 10, 28)
    points = [(start + datetime.timedelta(days=i), i * 10) for i in range(days)]

    svg = str(tokens_per_day_svg(points=points))

    labels = re.findall(
        r'<text class="chart-label" x="([\d.]+)" y="\d+" text-anchor="middle">([^<]+)<', svg
    )
    xs = [float(x) for x, _ in labels]
    assert labels[-1][1] == f"{points[-1][0]:%d %b}"
    assert all(b - a >= DAY_LABEL_WIDTH for a, b in itertools.pairwise(xs))
