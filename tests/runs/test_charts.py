"""Server-drawn SVG charts: one bar per label, heights proportional to the values, budget lines
at the right height, escaped text, and an empty-state message instead of a flat chart."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from runs import charts

SVG = "{http://www.w3.org/2000/svg}"


def svg_of(html: str) -> ET.Element:
    match = re.search(r"<svg.*</svg>", str(html), re.S)
    assert match, "no svg drawn"
    return ET.fromstring(match.group(0))  # noqa: S314 - our own output; proves it is XML


def bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == "chart-bar"]


def bottom(rect: ET.Element) -> float:
    return float(rect.get("y")) + float(rect.get("height"))


def test_one_bar_per_label_with_heights_proportional_to_values() -> None:
    values = [0, 10, 20, 40, 5]
    html = charts.bar_chart(title="Tokens", labels=list("abcde"), values=values)
    drawn = bars(svg_of(html))
    assert [b.get("data-label") for b in drawn] == list("abcde")
    assert [float(b.get("data-value")) for b in drawn] == values
    heights = [float(b.get("height")) for b in drawn]
    assert heights[0] == 0
    for value, height in zip(values[1:], heights[1:], strict=True):
        assert height / heights[3] == pytest.approx(value / 40, rel=1e-3)
    # Every bar stands on the same baseline, and the tallest fits the plot.
    assert len({round(bottom(b), 2) for b in drawn}) == 1
    assert heights[3] <= charts.PLOT_H and heights[3] >= charts.PLOT_H * 0.5


def test_budget_line_is_drawn_at_its_value_on_the_bars_scale() -> None:
    values = [100.0, 300.0]
    html = charts.bar_chart(
        title="Tokens", labels=["d1", "d2"], values=values, line=charts.Line(250, "daily budget")
    )
    root = svg_of(html)
    drawn = bars(root)
    base = bottom(drawn[0])
    per_unit = float(drawn[1].get("height")) / 300
    budget = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "chart-budget")
    line = budget.find(f"{SVG}line")
    assert float(budget.get("data-value")) == 250
    assert base - float(line.get("y1")) == pytest.approx(250 * per_unit, abs=0.15)
    assert "daily budget 250" in html and "daily budget" in html.split("<figcaption")[1]


def test_a_budget_above_every_bar_raises_the_scale_so_the_line_stays_inside() -> None:
    html = charts.bar_chart(title="Cost", labels=["a"], values=[1.0], line=charts.Line(50, "b"))
    root = svg_of(html)
    line = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "chart-budget").find(
        f"{SVG}line"
    )
    assert float(line.get("y1")) >= charts.TOP
    _, top = charts.axis(50, integer=True)
    assert top >= 50
    assert float(bars(root)[0].get("height")) == pytest.approx(charts.PLOT_H / top, rel=1e-3)


@pytest.mark.parametrize("values", [[], [0.0, 0.0, 0.0]])
def test_no_data_is_an_empty_state_message_not_a_chart(values) -> None:
    html = charts.bar_chart(
        title="Tokens", labels=[str(i) for i in range(len(values))], values=values, empty="None."
    )
    assert "<svg" not in html and 'class="empty chart-empty">None.</p>' in html
    stacked = charts.stacked_bar_chart(
        title="Runs", labels=["a"], series=[charts.Series("ok", "ok", "#0f0")], values=[{}]
    )
    assert "<svg" not in stacked and "chart-empty" in stacked


def test_stacked_bars_stack_series_in_order_and_sum_to_the_total() -> None:
    series = [charts.Series("ok", "succeeded", "#0f0"), charts.Series("bad", "failed", "#f00")]
    html = charts.stacked_bar_chart(
        title="Runs",
        labels=["h1", "h2", "h3"],
        series=series,
        values=[{"ok": 3, "bad": 1}, {}, {"bad": 2, "other": 99}],
    )
    root = svg_of(html)
    stacks = [g for g in root.iter(f"{SVG}g") if g.get("class") == "chart-stack"]
    assert [g.get("data-label") for g in stacks] == ["h1", "h2", "h3"]
    assert [float(g.get("data-total")) for g in stacks] == [4, 0, 2]  # unknown series ignored
    first = [r for r in stacks[0] if r.get("class") == "chart-bar"]
    assert [r.get("data-series") for r in first] == ["ok", "bad"]
    # "bad" sits on top of "ok", and 1 run is a third of 3 runs' height.
    assert float(first[1].get("y")) + float(first[1].get("height")) == pytest.approx(
        float(first[0].get("y")), abs=0.02
    )
    assert float(first[1].get("height")) * 3 == pytest.approx(float(first[0].get("height")), 0.01)
    assert "succeeded" in html and "failed" in html.split("<figcaption")[1]


def test_chart_is_accessible_and_escapes_its_text() -> None:
    html = charts.bar_chart(
        title="<b>Tokens</b> & more", labels=['<x">', "y"], values=[1, 2], chart_id="c1"
    )
    root = svg_of(html)
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c1-t c1-d"
    assert root.find(f"{SVG}title").text == "<b>Tokens</b> & more"
    assert "2 bars from" in root.find(f"{SVG}desc").text and "total 3" in html
    assert "<b>" not in html and '<x">' not in html
    assert [b.find(f"{SVG}title").text for b in bars(root)] == ['<x">: 1', "y: 2"]


def test_many_labels_are_thinned_so_they_do_not_overlap_but_the_last_is_kept() -> None:
    labels = [f"d{i:02d}" for i in range(30)]
    root = svg_of(charts.bar_chart(title="t", labels=labels, values=[1.0] * 30))
    shown = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "xlabel"]
    assert shown[-1] == "d29" and shown[0] == "d00" and 5 <= len(shown) < 30
    xs = [float(t.get("x")) for t in root.iter(f"{SVG}text") if t.get("class") == "xlabel"]
    assert min(b - a for a, b in zip(xs, xs[1:], strict=False)) >= charts.MIN_LABEL_GAP - 0.01


@pytest.mark.parametrize(
    ("peak", "integer", "expected"),
    [
        (4, True, (1, 4)),
        (5, True, (2, 6)),
        (1, True, (1, 1)),
        (5200, True, (2000, 6000)),
        (0.052, False, (0.02, 0.06)),
        (9, False, (2.5, 10)),
    ],
)
def test_axis_steps_are_round_and_the_top_covers_the_peak(peak, integer, expected) -> None:
    step, top = charts.axis(peak, integer=integer)
    assert (step, top) == pytest.approx(expected)
    assert top >= peak and top / step <= charts.GRID_LINES + 1


def test_gridline_labels_sit_at_their_values() -> None:
    root = svg_of(charts.bar_chart(title="t", labels=["a"], values=[4.0]))
    bar = bars(root)[0]
    per_unit = float(bar.get("height")) / 4
    grid = [g for g in root.iter(f"{SVG}line") if g.get("class") == "chart-grid"]
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") != "xlabel"]
    assert labels == ["0", "1", "2", "3", "4"]
    for n, line in enumerate(grid):
        assert bottom(bar) - float(line.get("y1")) == pytest.approx(n * per_unit, abs=0.1)


def test_money_is_formatted_in_dollars() -> None:
    assert charts.fmt_usd(1234.5) == "$1,234.50"
    assert charts.fmt_usd(0.0042) == "$0.0042"
    assert charts.fmt_int(12345.4) == "12,345"


def test_mismatched_labels_and_values_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        charts.bar_chart(title="t", labels=["a"], values=[1, 2])
