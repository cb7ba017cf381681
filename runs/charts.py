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
# The value axis is on the right: a chart scrolled to its newest bars still shows it.
LEFT, RIGHT, TOP, BOTTOM = 12, 58, 14, 30
PLOT_W = WIDTH - LEFT - RIGHT
MAX_BAR_W = 40
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
    """Dollars with cents, and with up to four decimals below a dollar (axis steps of 0.005
    must not all read "$0.01")."""
    if value and abs(value) < 1:
        return "$" + f"{value:.4f}".rstrip("0").ljust(4, "0")
    return f"${value:,.2f}"


def nice_step(value: float, *, integer: bool = False) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value` (a step people read easily);
    never a fraction, nor 2.5, on an axis of whole numbers."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for mult in (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10):
        step = mult * 10.0**exp
        if step >= value * (1 - 1e-9) and (not integer or step >= 1):
            return step
    return 1.0  # integer axis with value < 1


def axis(peak: float, *, integer: bool = False) -> tuple[float, float]:
    """(step, top): gridlines every `step` up to `top`, the first multiple of the step at or
    above `peak`, with about GRID_LINES gridlines."""
    step = nice_step(peak / GRID_LINES, integer=integer)
    return step, step * max(1, math.ceil(peak / step - 1e-9))


def _y(value: float, scale: float) -> float:
    return TOP + PLOT_H - value / scale * PLOT_H


def _axes(
    scale: float, step: float, labels: Sequence[str], fmt: Formatter, pitch: float, width: int
) -> list[str]:
    parts = []
    for i in range(round(scale / step) + 1):
        value = step * i
        y = _y(value, scale)
        parts.append(
            f'<line class="chart-grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"'
            f' stroke="#e3e7ef" stroke-width="1"/>'
            f'<text x="{width - RIGHT + 6}" y="{y + 4:.1f}" text-anchor="start" font-size="12"'
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
            f' font-size="12" fill="#5f6b7d">{escape(label)}</text>'
        )
    return parts


def _line(line: Line, scale: float, fmt: Formatter, width: int) -> str:
    y = _y(line.value, scale)
    text = f"{line.label} {fmt(line.value)}"
    return (
        f'<g class="chart-budget" data-value="{line.value:g}">'
        f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{line.color}"'
        f' stroke-width="2" stroke-dasharray="6 4"><title>{escape(text)}</title></line>'
        f'<text x="{width - RIGHT - 4}" y="{y - 5:.1f}" text-anchor="end" font-size="12"'
        f' font-weight="600" fill="{line.color}" stroke="#fff" stroke-width="3"'
        f' paint-order="stroke">{escape(text)}</text></g>'
    )


def _figure(
    chart_id: str, title: str, desc: str, body: list[str], legend: str, width: int
) -> SafeString:
    svg = (
        # Never narrower than 78% of its drawn size, so its text stays readable on a phone.
        f'<svg class="chart-svg" role="img" aria-labelledby="{chart_id}-t {chart_id}-d"'
        f' style="min-width:{round(width * 0.78)}px"'
        f' viewBox="0 0 {width} {HEIGHT}" preserveAspectRatio="xMidYMid meet"'
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
    width: int = WIDTH,
) -> SafeString:
    """One bar per label, heights proportional to `values`, and an optional budget line.
    With no value above zero it is the `empty` message instead of a chart of flat bars."""
    if len(labels) != len(values):
        raise ValueError("one value per label")
    if not values or max(values) <= 0:
        return empty_chart(empty)
    chart_id = chart_id or f"chart-{next(_ids)}"
    step, scale = axis(max([*values, line.value if line else 0]), integer=fmt is fmt_int)
    pitch = (width - LEFT - RIGHT) / len(values)
    bar_w = min(MAX_BAR_W, max(1.0, pitch * 0.72))
    body = _axes(scale, step, labels, fmt, pitch, width)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = max(0.0, value / scale * PLOT_H)
        x = LEFT + pitch * i + (pitch - bar_w) / 2
        body.append(
            f'<rect class="chart-bar" data-label="{escape(label)}" data-value="{value:g}"'
            f' x="{x:.2f}" y="{TOP + PLOT_H - height:.2f}" width="{bar_w:.2f}"'
            f' height="{height:.2f}" fill="{color}" rx="2">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
    if line is not None:
        body.append(_line(line, scale, fmt, width))
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
            '<figcaption class="chart-legend">'
            f'<span><i style="background:{color}"></i>{escape(title)}</span>'
            f'<span><i class="dash" style="border-color:{line.color}"></i>'
            f"{escape(line.label)}</span></figcaption>"
        )
    return _figure(chart_id, title, desc, body, legend, width)


def stacked_bar_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    values: Sequence[dict[str, float]],
    fmt: Formatter = fmt_int,
    empty: str = "Nothing to show yet.",
    chart_id: str | None = None,
    width: int = WIDTH,
) -> SafeString:
    """One stacked bar per label: a segment per series (in `series` order, bottom up)."""
    if len(labels) != len(values):
        raise ValueError("one value per label")
    totals = [sum(v.get(s.key, 0) for s in series) for v in values]
    if not totals or max(totals) <= 0:
        return empty_chart(empty)
    chart_id = chart_id or f"chart-{next(_ids)}"
    step, scale = axis(max(totals), integer=fmt is fmt_int)
    pitch = (width - LEFT - RIGHT) / len(values)
    bar_w = min(MAX_BAR_W, max(1.0, pitch * 0.72))
    body = _axes(scale, step, labels, fmt, pitch, width)
    for i, (label, bucket) in enumerate(zip(labels, values, strict=True)):
        x = LEFT + pitch * i + (pitch - bar_w) / 2
        base = 0.0
        body.append(
            f'<g class="chart-stack" data-label="{escape(label)}" data-total="{totals[i]:g}">'
        )
        for s in series:
            value = bucket.get(s.key, 0)
            if value <= 0:
                continue
            y_top, y_base = _y(base + value, scale), _y(base, scale)
            body.append(
                f'<rect class="chart-bar" data-series="{escape(s.key)}" data-value="{value:g}"'
                f' x="{x:.2f}" y="{y_top:.2f}" width="{bar_w:.2f}" height="{y_base - y_top:.2f}"'
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
        '<figcaption class="chart-legend">'
        + "".join(
            f'<span><i style="background:{s.color}"></i>{escape(s.label)}</span>' for s in shown
        )
        + "</figcaption>"
    )
    return _figure(chart_id, title, desc, body, legend, width)
