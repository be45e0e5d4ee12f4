"""Line charts as inline SVG, drawn by the server: no script library, nothing fetched, and the
page shows the curves with JavaScript off. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

MAX_DRAWN = 2000  # a longer history is thinned evenly for the line (its first and last point kept)
MAX_MARKED = 200  # points marked with a dot when there are at most this many


@dataclass(frozen=True)
class Series:
    label: str  # "fruit-sft/2"
    points: Sequence[tuple[float, float]]  # (step, value)
    colour: int = 0  # index into the stylesheet's series colours


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.001:
        return f"{value:.2e}"
    return f"{value:.4g}"


def _thinned(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_DRAWN:
        return list(points)
    stride = (len(points) - 1) / (MAX_DRAWN - 1)
    return [points[round(i * stride)] for i in range(MAX_DRAWN)]


def line_chart(title: str, series: Sequence[Series], *, width: int = 470, height: int = 210,
               x_label: str = "step") -> str:
    """One chart: a line per series over a shared step axis, min and max marked on both axes.
    Each line says how many values it holds (`data-points`), for people and tests alike."""
    finite = [[(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)] for s in series]
    if not any(finite):
        return (f'<figure class="chart empty" data-title="{escape(title)}">'
                f'<figcaption>{escape(title)}</figcaption><p class="muted">nothing logged yet</p></figure>')
    left, right, top, bottom = 58, 12, 10, 34
    xs = [x for points in finite for x, _ in points]
    ys = [y for points in finite for _, y in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_high == y_low:
        pad = abs(y_low) * 0.1 or 1.0
        y_low, y_high = y_low - pad, y_high + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_low) / (x_high - x_low) * plot_w,
                top + (y_high - y) / (y_high - y_low) * plot_h)

    parts = [f'<figure class="chart" data-title="{escape(title)}"><figcaption>{escape(title)}</figcaption>',
             f'<svg class="chart-svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<rect class="plot" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>']
    for value, anchor_y in ((y_high, top), (y_low, top + plot_h)):
        parts.append(f'<text class="tick" x="{left - 6}" y="{anchor_y + 4:.1f}" text-anchor="end">'
                     f'{escape(_number(value))}</text>')
    for value, anchor_x, anchor in ((x_low, left, "start"), (x_high, left + plot_w, "end")):
        parts.append(f'<text class="tick" x="{anchor_x:.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}">'
                     f'{escape(_number(value))}</text>')
    parts.append(f'<text class="axis-label" x="{left + plot_w / 2:.1f}" y="{height - 4}" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    for one, points in zip(series, finite, strict=True):
        if not points:
            continue
        drawn = _thinned(points)
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in (at(x, y) for x, y in drawn))
        parts.append(f'<g class="series series-{one.colour % 8}" data-label="{escape(one.label)}">'
                     f'<polyline class="line" data-points="{len(points)}" points="{path}"/>')
        if len(points) <= MAX_MARKED:
            for x, y in points:
                px, py = at(x, y)
                parts.append(f'<circle class="point" cx="{px:.1f}" cy="{py:.1f}" r="2.5">'
                             f'<title>{escape(one.label)} step {escape(_number(x))}: {escape(_number(y))}'
                             '</title></circle>')
        parts.append("</g>")
    parts.append("</svg>")
    if len(series) > 1 or series[0].label:
        legend = "".join(f'<li class="series-{s.colour % 8}"><span class="swatch"></span>{escape(s.label)}'
                         f' <span class="muted">({len(p)} value{"" if len(p) == 1 else "s"})</span></li>'
                         for s, p in zip(series, finite, strict=True))
        parts.append(f'<ul class="legend">{legend}</ul>')
    parts.append("</figure>")
    return "".join(parts)
