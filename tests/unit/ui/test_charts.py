"""Charts as inline SVG: one point per logged value, escaped labels, nothing drawn from NaN."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

from reconciler.ui.charts import MAX_DRAWN, Series, line_chart


def svg_of(html: str) -> ElementTree.Element:
    return ElementTree.fromstring(re.search(r"<svg.*</svg>", html, re.S).group(0))


def test_a_curve_has_one_point_per_logged_step_and_says_how_many():
    points = [(step, 2.0 / step) for step in range(1, 31)]
    html = line_chart("training loss", [Series("fruit-sft/1", points)])
    svg = svg_of(html)
    (line,) = svg.iter("polyline")
    assert line.get("data-points") == "30"
    assert len(line.get("points").split()) == 30
    assert len(list(svg.iter("circle"))) == 30
    assert "(30 values)" in html


def test_values_that_are_not_numbers_are_left_out_and_an_empty_chart_says_so():
    html = line_chart("loss", [Series("v1", [(1, 1.0), (2, float("nan")), (3, float("inf")), (4, 0.5)])])
    (line,) = svg_of(html).iter("polyline")
    assert line.get("data-points") == "2"
    assert "nothing logged yet" in line_chart("loss", [Series("v1", [(1, float("nan"))])])


def test_labels_are_escaped():
    html = line_chart("<b>loss</b>", [Series('"><script>alert(1)</script>', [(1, 1.0), (2, 2.0)])])
    assert "<script>" not in html and "<b>" not in html
    svg_of(html)  # still well-formed


def test_a_long_history_is_thinned_for_drawing_but_counted_whole():
    points = [(step, float(step)) for step in range(10_000)]
    (line,) = svg_of(line_chart("loss", [Series("v", points)])).iter("polyline")
    assert line.get("data-points") == "10000"
    drawn = line.get("points").split()
    assert len(drawn) == MAX_DRAWN
    assert drawn[0].startswith("58.0,") and drawn[-1].startswith("458.0,")  # first and last steps kept
