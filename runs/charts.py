"""Bar charts as inline SVG, drawn on the server: no chart library, no script, no CDN.

A chart is a `<figure>` holding one `<svg role="img">` with a title and a text summary
(`<desc>`) for screen readers, a `<title>` tooltip on every bar, and an HTML legend. The SVG
scales to its box but keeps a minimum width (CSS `.chart-scroll`), so on a phone it scrolls
sideways instead of shrinking its labels to nothing. Bars carry `data-label`/`data-value` so
tests (and people reading the markup) can check what was drawn.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH = 720
HEIGHT = 230
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 14, 30
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM
GRID_LINES = 4
MIN_LABEL_GAP = 46  # px between x labels, so dates never overlap
_ids = itertools.count(1)


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    color: str


@dataclass(frozen=True)
class Line:
    """A horizontal reference line (a budget) at `value`, in the chart's unit."""

    value: float
    label: str
    color: str = "#d63b3b"


Formatter = Callable[[float], str]


def fmt_int(value: float) -> str:
    return f"{int(round(value)):,}"


def fmt_usd(value: float) -> str:
    if value and abs(value) < 0.01:
        return f"${value:.4f}"
    return f"${value:,.2f}"


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value` (an axis top people read)."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10**exp
        if top >= value * (1 - 1e-9):
            return float(top)
    return float(10 ** (exp + 1))  # pragma: no cover - 10 always matches


def _y(value: float, scale: float) -> float:
    return TOP + PLOT_H - value / scale * PLOT_H


def _axes(scale: float, labels: Sequence[str], fmt: Formatter, pitch: float) -> list[str]:
    parts = []
    for i in range(GRID_LINES + 1):
        value = scale * i / GRID_LINES
        y = _y(value, scale)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"'
            f' stroke="#e3e7ef" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11"'
            f' fill="#5f6b7d">{escape(fmt(value))}</text>'
        )
    every = max(1, math.ceil(MIN_LABEL_GAP / pitch)) if pitch else 1
    last = len(labels) - 1
    for i, label in enumerate(labels):
        # The last label is always shown (it is "now", the one people look for); the others
        # every `every` bars, skipping one that would crowd it.
        if i != last and (i % every or last - i < every):
            continue
        x = LEFT + pitch * (i + 0.5)
        parts.append(
            f'<text class="xlabel" x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="middle"'
            f' font-size="11" fill="#5f6b7d">{escape(label)}</text>'
        )
    return parts


def _line(line: Line, scale: float, fmt: Formatter) -> str:
    y = _y(line.value, scale)
    text = f"{line.label} {fmt(line.value)}"
    return (
        f'<g class="budget" data-value="{line.value:g}">'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{line.color}"'
        f' stroke-width="2" stroke-dasharray="6 4"><title>{escape(text)}</title></line>'
        f'<text x="{WIDTH - RIGHT - 4}" y="{y - 5:.1f}" text-anchor="end" font-size="11"'
        f' font-weight="600" fill="{line.color}">{escape(text)}</text></g>'
    )


def _figure(chart_id: str, title: str, desc: str, body: list[str], legend: str) -> SafeString:
    svg = (
        f'<svg class="chart-svg" role="img" aria-labelledby="{chart_id}-t {chart_id}-d"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="xMidYMid meet"'
        f' xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif">'
        f'<title id="{chart_id}-t">{escape(title)}</title>'
        f'<desc id="{chart_id}-d">{escape(desc)}</desc>' + "".join(body) + "</svg>"
    )
    return mark_safe(  # noqa: S308 - every interpolated text above is escaped
        f'<figure class="chart" id="{chart_id}"><div class="chart-scroll">{svg}</div>'
        f"{legend}</figure>"
    )


def empty_chart(message: str) -> SafeString:
    return mark_safe(f'<p class="empty chart-empty">{escape(message)}</p>')  # noqa: S308


def bar_chart(
    *,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    fmt: Formatter = fmt_int,
    line: Line | None = None,
    color: str = "#4f46e5",
    empty: str = "Nothing to show yet.",
    chart_id: str | None = None,
) -> SafeString:
    """One bar per label, heights proportional to `values`, and an optional budget line.
    With no value above zero it is the `empty` message instead of a chart of flat bars."""
    if len(labels) != len(values):
        raise ValueError("one value per label")
    if not values or max(values) <= 0:
        return empty_chart(empty)
    chart_id = chart_id or f"chart-{next(_ids)}"
    scale = nice_max(max([*values, line.value if line else 0]))
    pitch = PLOT_W / len(values)
    width = max(1.0, pitch * 0.72)
    body = _axes(scale, labels, fmt, pitch)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = max(0.0, value / scale * PLOT_H)
        x = LEFT + pitch * i + (pitch - width) / 2
        body.append(
            f'<rect class="bar" data-label="{escape(label)}" data-value="{value:g}"'
            f' x="{x:.2f}" y="{TOP + PLOT_H - height:.2f}" width="{width:.2f}"'
            f' height="{height:.2f}" fill="{color}" rx="2">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
    if line is not None:
        body.append(_line(line, scale, fmt))
    peak = max(range(len(values)), key=lambda i: values[i])
    desc = (
        f"{len(values)} bars from {labels[0]} to {labels[-1]}; total {fmt(sum(values))};"
        f" highest {fmt(values[peak])} on {labels[peak]}."
    )
    if line is not None:
        desc += f" {line.label}: {fmt(line.value)}."
    legend = ""
    if line is not None:
        legend = (
            '<figcaption class="legend">'
            f'<span><i style="background:{color}"></i>{escape(title)}</span>'
            f'<span><i class="dash" style="border-color:{line.color}"></i>'
            f"{escape(line.label)}</span></figcaption>"
        )
    return _figure(chart_id, title, desc, body, legend)


def stacked_bar_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    values: Sequence[dict[str, float]],
    fmt: Formatter = fmt_int,
    empty: str = "Nothing to show yet.",
    chart_id: str | None = None,
) -> SafeString:
    """One stacked bar per label: a segment per series (in `series` order, bottom up)."""
    if len(labels) != len(values):
        raise ValueError("one value per label")
    totals = [sum(v.get(s.key, 0) for s in series) for v in values]
    if not totals or max(totals) <= 0:
        return empty_chart(empty)
    chart_id = chart_id or f"chart-{next(_ids)}"
    scale = nice_max(max(totals))
    pitch = PLOT_W / len(values)
    width = max(1.0, pitch * 0.72)
    body = _axes(scale, labels, fmt, pitch)
    for i, (label, bucket) in enumerate(zip(labels, values, strict=True)):
        x = LEFT + pitch * i + (pitch - width) / 2
        base = 0.0
        body.append(f'<g class="stack" data-label="{escape(label)}" data-total="{totals[i]:g}">')
        for s in series:
            value = bucket.get(s.key, 0)
            if value <= 0:
                continue
            y_top, y_base = _y(base + value, scale), _y(base, scale)
            body.append(
                f'<rect class="bar" data-series="{escape(s.key)}" data-value="{value:g}"'
                f' x="{x:.2f}" y="{y_top:.2f}" width="{width:.2f}" height="{y_base - y_top:.2f}"'
                f' fill="{s.color}"><title>{escape(label)}: {escape(fmt(value))}'
                f" {escape(s.label)}</title></rect>"
            )
            base += value
        body.append("</g>")
    shown = [s for s in series if any(v.get(s.key, 0) > 0 for v in values)]
    desc = (
        f"{len(values)} bars from {labels[0]} to {labels[-1]}; total {fmt(sum(totals))}: "
        + ", ".join(f"{fmt(sum(v.get(s.key, 0) for v in values))} {s.label}" for s in shown)
        + "."
    )
    legend = (
        '<figcaption class="legend">'
        + "".join(
            f'<span><i style="background:{s.color}"></i>{escape(s.label)}</span>' for s in shown
        )
        + "</figcaption>"
    )
    return _figure(chart_id, title, desc, body, legend)
