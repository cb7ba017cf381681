"""runs/diagram.py: every node and edge of a spec is drawn, loops included, safely escaped,
and node states come from steps, waits and branch events."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from runs.diagram import diagram_svg, layout, node_states
from tests.runs.conftest import approval_spec, chain_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "graphs").glob("*.json"))


def drawn_nodes(svg: str) -> list[str]:
    return re.findall(r'<g class="dg-node[^"]*" data-node="([^"]+)"', svg)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_node_of_the_examples_is_drawn_once(path: Path) -> None:
    spec = json.loads(path.read_text())
    svg = str(diagram_svg(spec))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert sorted(drawn_nodes(svg)) == sorted(spec["nodes"])
    # Every edge is drawn (plus each approval's on_reject route).
    rejects = sum(1 for n in spec["nodes"].values() if n.get("on_reject"))
    assert svg.count('<g class="dg-link"') == len(spec["edges"]) + rejects


def test_nodes_flow_left_to_right_and_do_not_overlap() -> None:
    diagram = layout(json.loads((EXAMPLES[-1]).read_text()))  # support-triage
    boxes = diagram.boxes
    assert boxes["classify"].x < boxes["route"].x < boxes["answer"].x < boxes["done"].x
    items = list(boxes.values())
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            apart = a.right <= b.x or b.right <= a.x or a.bottom <= b.y or b.bottom <= a.y
            assert apart, (a.name, b.name)
        assert a.x >= 0 and a.right <= diagram.width and a.y >= 0 and a.bottom <= diagram.height


def test_parallel_branches_are_drawn_inside_their_node() -> None:
    spec = json.loads((EXAMPLES[1]).read_text())  # research-fanout
    diagram = layout(spec)
    research = diagram.boxes["research"]
    assert [b.name for b in research.branches] == ["search_web", "search_papers", "search_news"]
    for branch in research.branches:
        assert research.x < branch.x and branch.right < research.right
        assert research.y < branch.y and branch.bottom < research.bottom


def test_edge_labels_show_conditions_errors_and_rejections() -> None:
    spec = json.loads((EXAMPLES[-1]).read_text())
    svg = str(diagram_svg(spec))
    assert ">state.urgent</text>" in svg and ">otherwise</text>" in svg
    assert svg.count('class="dg-edge dg-edge-error"') == 2
    assert ">on error</text>" in svg
    assert 'class="dg-edge dg-edge-reject"' in svg and ">rejected</text>" in svg


def test_loops_are_drawn_as_back_edges() -> None:
    spec: dict[str, Any] = {
        "name": "loop",
        "start": "a",
        "nodes": {
            "a": {"kind": "transform", "set": {}},
            "b": {"kind": "transform", "set": {}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "a", "to": "b"},
            {"from": "b", "to": "a", "when": "state.n < 3"},
            {"from": "b", "to": "b", "on_error": True},
            {"from": "b", "to": "done"},
        ],
    }
    diagram = layout(spec)
    assert diagram.boxes["a"].x < diagram.boxes["b"].x < diagram.boxes["done"].x
    styles = {(lk.source, lk.target): lk.style for lk in diagram.links}
    assert styles[("b", "a")] == "back" and styles[("b", "b")] == "error"
    assert all(lk.path.startswith("M") for lk in diagram.links)


def test_names_and_labels_are_escaped() -> None:
    spec = chain_spec(name="<script>alert(1)</script>", n=1)
    spec["edges"][0]["when"] = "state.x < 1 and '\"' != '<b>'"
    svg = str(diagram_svg(spec))
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg


def test_odd_specs_do_not_break_the_drawing() -> None:
    assert "<svg" in str(diagram_svg({"name": "empty"}))
    assert "<svg" in str(diagram_svg({"name": "x", "nodes": {"a": "nope"}, "edges": [{}]}))
    one = str(diagram_svg({"name": "one", "start": "done", "nodes": {"done": {"kind": "end"}}}))
    assert drawn_nodes(one) == ["done"]


def test_states_are_rendered_on_nodes() -> None:
    svg = str(diagram_svg(approval_spec(), states={"before": "completed", "gate": "waiting"}))
    assert re.search(r'data-node="before"[^>]*data-state="completed"', svg)
    assert re.search(r'data-node="gate"[^>]*data-state="waiting"', svg)
    assert re.search(r'data-node="after"[^>]*data-state="pending"', svg)


def test_node_states_from_steps_waits_and_branches() -> None:
    assert node_states(
        status="waiting",
        steps=[("before", "completed")],
        waiting_for={"kind": "approval", "node": "gate"},
        position={"node": "gate"},
    ) == {"before": "completed", "gate": "waiting"}
    # The latest step of a node wins (a resurrection re-runs a failed node).
    assert node_states(
        status="running",
        steps=[("a", "completed"), ("b", "failed"), ("b", "completed")],
        position={"node": "c"},
    ) == {"a": "completed", "b": "completed", "c": "running"}
    assert node_states(
        status="running",
        steps=[("plan", "completed")],
        position={"node": "research"},
        branch_events=[
            ("branch.started", {"branch": "web"}),
            ("branch.started", {"branch": "news"}),
            ("branch.completed", {"branch": "web"}),
        ],
    ) == {"plan": "completed", "web": "completed", "news": "running", "research": "running"}
    assert node_states(status="succeeded", steps=[], position={"node": "x"}) == {}
