"""Server-side drawing of a graph spec as SVG: a small layered (Sugiyama-style) layout.

Nodes flow left to right by their longest distance from `start`; edges that would point
backwards (loops) are drawn as dashed arcs under the drawing. Edges spanning several layers
pass through invisible "dummy" slots so they bend around the nodes in between. The order of
nodes inside a layer is improved with a few barycenter sweeps, then each node is placed at the
median height of its predecessors, so the main path stays on one straight line.

A `parallel` node is drawn as a container holding its branch nodes. Every node is a
`<g class="dg-node" data-node=NAME data-state=STATE>`; the dashboard's stylesheet colours it by
state, and its script changes `data-state` as events arrive. No Django models here: the input
is a spec dict (and, for states, plain rows), so it is testable on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from django.utils.safestring import SafeString, mark_safe

NODE_H = 50.0
BRANCH_H = 34.0
MIN_W = 132.0
MAX_W = 230.0
ROW_GAP = 26.0
MIN_LAYER_GAP = 64.0
MARGIN = 18.0
START_PAD = 34.0  # room left of the first layer for the start marker
DUMMY_H = 14.0
PORT_STEP = 9.0
NAME_CHAR_W = 7.6
SMALL_CHAR_W = 6.1
LABEL_CHAR_W = 6.0
LABEL_MAX_CHARS = 26
NAME_MAX_CHARS = 26
SWEEPS = 6

STATES = ("pending", "running", "waiting", "completed", "failed")


# --- model --------------------------------------------------------------------------------------


@dataclass
class Box:
    name: str
    kind: str
    detail: str
    w: float
    h: float
    x: float = 0.0
    y: float = 0.0
    branches: list[Box] = field(default_factory=list)

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h


@dataclass
class Link:
    source: str
    target: str
    label: str
    style: str  # "normal" | "error" | "reject" | "back"
    title: str
    path: str = ""
    label_x: float = 0.0
    label_y: float = 0.0


@dataclass
class Diagram:
    width: float
    height: float
    start: str
    boxes: dict[str, Box]
    links: list[Link]


@dataclass
class _Slot:
    """One entry in a layer: a node, or a dummy point an edge passes through."""

    key: str
    layer: int
    h: float
    box: Box | None = None
    cy: float = 0.0
    preds: list[_Slot] = field(default_factory=list)
    succs: list[_Slot] = field(default_factory=list)

    @property
    def top(self) -> float:
        return self.cy - self.h / 2


# --- text helpers -------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail(node: Mapping[str, Any]) -> str:
    kind = str(node.get("kind", "?"))
    if kind == "llm":
        extra = node.get("model") or node.get("provider")
    elif kind == "function":
        extra = node.get("function")
    elif kind == "subgraph":
        extra = node.get("graph")
    elif kind == "sleep":
        extra = f"{node.get('seconds')}s" if node.get("seconds") is not None else None
    elif kind == "http":
        extra = str(node.get("method") or "GET").upper()
    elif kind == "parallel":
        extra = node.get("on_error") or "fail_fast"
    elif kind == "approval":
        extra = f"default {node['default']}" if node.get("default") else None
    else:
        extra = None
    return f"{kind} · {extra}" if extra else kind


def _box_for(name: str, node: Mapping[str, Any], *, h: float = NODE_H) -> Box:
    detail = _detail(node)
    shown = _clip(name, NAME_MAX_CHARS)
    w = max(len(shown) * NAME_CHAR_W, len(_clip(detail, 30)) * SMALL_CHAR_W) + 38
    return Box(name, str(node.get("kind", "?")), detail, min(MAX_W, max(MIN_W, w)), h)


# --- layout -------------------------------------------------------------------------------------


def _edges(spec: Mapping[str, Any], names: set[str]) -> list[Link]:
    """The spec's edges plus each approval's `on_reject` route, as links to draw."""
    links: list[Link] = []
    raw_edges = [e for e in spec.get("edges") or [] if isinstance(e, Mapping)]
    for edge in raw_edges:
        src, dst = str(edge.get("from")), str(edge.get("to"))
        if src not in names or dst not in names:
            continue
        when = edge.get("when")
        if edge.get("on_error"):
            label, style = ("on error: " + str(when)) if when else "on error", "error"
        elif when:
            label, style = str(when), "normal"
        else:
            siblings = [
                e
                for e in raw_edges
                if str(e.get("from")) == src and e.get("when") and not e.get("on_error")
            ]
            label, style = ("otherwise" if siblings else ""), "normal"
        links.append(Link(src, dst, _clip(label, LABEL_MAX_CHARS), style, f"{src} → {dst}"))
        if label:
            links[-1].title += f" ({label})"
    nodes = spec.get("nodes") or {}
    for name, node in nodes.items():
        if isinstance(node, Mapping) and node.get("kind") == "approval":
            target = node.get("on_reject")
            if isinstance(target, str) and target in names:
                links.append(
                    Link(name, target, "rejected", "reject", f"{name} → {target} (rejected)")
                )
    return links


def _layers(start: str, order: list[str], links: list[Link]) -> tuple[dict[str, int], set[int]]:
    """Longest-path layers from `start` after removing back edges (found by DFS)."""
    out: dict[str, list[int]] = {n: [] for n in order}
    for i, link in enumerate(links):
        out[link.source].append(i)
    back: set[int] = set()
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done

    roots = ([start] if start in out else []) + [n for n in order if n != start]
    for root in roots:
        if root in state:
            continue
        stack: list[tuple[str, Iterable[int]]] = [(root, iter(out[root]))]
        state[root] = 1
        while stack:
            node, edges = stack[-1]
            for i in edges:
                nxt = links[i].target
                if state.get(nxt) == 1:
                    back.add(i)
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(out[nxt])))
                    break
            else:
                state[node] = 2
                stack.pop()

    forward = [link for i, link in enumerate(links) if i not in back]
    layer = dict.fromkeys(order, 0)
    # Longest path on a DAG: relax edges |V| times at most (graphs here are small).
    for _ in range(len(order)):
        changed = False
        for link in forward:
            if layer[link.target] < layer[link.source] + 1:
                layer[link.target] = layer[link.source] + 1
                changed = True
        if not changed:
            break
    # The start node is always first, even when nothing points at it and others have no preds.
    if start in layer and layer[start] != 0:
        layer[start] = 0
    return layer, back


def _dfs_order(start: str, order: list[str], links: list[Link]) -> list[str]:
    """Nodes in depth-first discovery order from start, following edges in spec order."""
    out: dict[str, list[str]] = {n: [] for n in order}
    for link in links:
        out[link.source].append(link.target)
    seen: list[str] = []
    visited: set[str] = set()
    stack = [start] if start in out else []
    while stack:
        node = stack.pop()
        if node in visited:
            continue
        visited.add(node)
        seen.append(node)
        stack.extend(reversed(out[node]))
    return seen + [n for n in order if n not in visited]


def _order_layers(layers: list[list[_Slot]]) -> None:
    """Barycenter sweeps, down then up, keeping the order when nothing improves."""

    def sweep(rows: Sequence[list[_Slot]], neighbours: str) -> None:
        for row in rows:
            pos: dict[int, float] = {}
            for i, slot in enumerate(row):
                others = getattr(slot, neighbours)
                if others:
                    pos[id(slot)] = sum(o_index[id(o)] for o in others) / len(others)
                else:
                    pos[id(slot)] = float(i)
            row.sort(key=lambda s: pos[id(s)])
            for i, slot in enumerate(row):
                o_index[id(slot)] = i

    o_index: dict[int, int] = {}
    for row in layers:
        for i, slot in enumerate(row):
            o_index[id(slot)] = i
    for n in range(SWEEPS):
        if n % 2 == 0:
            sweep(layers[1:], "preds")
        else:
            sweep(list(reversed(layers[:-1])), "succs")


def _place_rows(layers: list[list[_Slot]]) -> None:
    """Each slot at the median height of its predecessors, pushed down to avoid overlaps."""
    for row in layers:
        bottom = -1e9
        for slot in row:
            if slot.preds:
                # Real predecessors pull harder than the dummies of long edges, so the main
                # path stays straight and skipped-over edges bend around it.
                real = [p.cy for p in slot.preds if p.box is not None]
                centers = sorted(real or [p.cy for p in slot.preds])
                want = centers[(len(centers) - 1) // 2]
            else:
                want = bottom + ROW_GAP + slot.h / 2 if bottom > -1e9 else slot.h / 2
            slot.cy = max(want, bottom + ROW_GAP + slot.h / 2)
            bottom = slot.cy + slot.h / 2


def layout(spec: Mapping[str, Any]) -> Diagram:
    """Lay out `spec` (a graph spec dict). Unknown or malformed parts are skipped, not fatal."""
    nodes = {str(k): v for k, v in (spec.get("nodes") or {}).items() if isinstance(v, Mapping)}
    branch_of: dict[str, str] = {}
    for name, node in nodes.items():
        if node.get("kind") == "parallel":
            for branch in node.get("branches") or []:
                if isinstance(branch, str) and branch in nodes and branch != name:
                    branch_of.setdefault(branch, name)
    top_names = [n for n in nodes if n not in branch_of]
    start = str(spec.get("start") or (top_names[0] if top_names else ""))
    names = set(top_names)
    links = _edges(spec, names)

    boxes: dict[str, Box] = {}
    for name in top_names:
        box = _box_for(name, nodes[name])
        if nodes[name].get("kind") == "parallel":
            kids = [b for b, p in branch_of.items() if p == name]
            kids.sort(key=lambda b: list(nodes[name].get("branches") or []).index(b))
            box.branches = [_box_for(k, nodes[k], h=BRANCH_H) for k in kids]
            inner_w = max([b.w for b in box.branches] + [box.w - 20])
            for b in box.branches:
                b.w = inner_w
            box.w = min(MAX_W + 40, inner_w + 20)
            box.h = 44 + len(kids) * (BRANCH_H + 8)
        boxes[name] = box

    order = _dfs_order(start, top_names, links)
    layer, back = _layers(start, order, links)
    n_layers = (max(layer.values()) + 1) if layer else 0
    layers: list[list[_Slot]] = [[] for _ in range(n_layers)]
    slots: dict[str, _Slot] = {}
    for name in order:
        slot = _Slot(name, layer[name], boxes[name].h, box=boxes[name])
        slots[name] = slot
        layers[layer[name]].append(slot)

    chains: dict[int, list[_Slot]] = {}
    dummy_ids = itertools.count()
    for i, link in enumerate(links):
        if i in back:
            continue
        src, dst = slots[link.source], slots[link.target]
        chain = [src]
        for lay in range(src.layer + 1, dst.layer):
            dummy = _Slot(f"~{next(dummy_ids)}", lay, DUMMY_H)
            layers[lay].append(dummy)
            chain.append(dummy)
        chain.append(dst)
        for left, right in itertools.pairwise(chain):
            left.succs.append(right)
            right.preds.append(left)
        chains[i] = chain

    _order_layers(layers)
    _place_rows(layers)

    # Columns: each layer as wide as its widest box; gaps wide enough for their labels.
    widths = [max([s.box.w for s in row if s.box] + [DUMMY_H]) for row in layers]
    gaps = [MIN_LAYER_GAP] * max(0, n_layers - 1)
    for i, link in enumerate(links):
        if i in back or not link.label:
            continue
        lay = layer[link.source]
        if lay < len(gaps):
            gaps[lay] = max(gaps[lay], len(link.label) * LABEL_CHAR_W + 34)
    xs: list[float] = []
    x = MARGIN + START_PAD
    for lay, w in enumerate(widths):
        xs.append(x)
        x += w + (gaps[lay] if lay < len(gaps) else 0)
    all_slots = [s for row in layers for s in row]
    top = min((s.top for s in all_slots), default=0.0)
    # Loops on a node itself are drawn above it: leave room for them at the top.
    shift = MARGIN - top + (40.0 if any(lk.source == lk.target for lk in links) else 0.0)
    for slot in all_slots:
        slot.cy += shift
        if slot.box is not None:
            col_w = widths[slot.layer]
            slot.box.x = xs[slot.layer] + (col_w - slot.box.w) / 2
            slot.box.y = slot.cy - slot.box.h / 2
            for k, branch in enumerate(slot.box.branches):
                branch.x = slot.box.x + 10
                branch.y = slot.box.y + 40 + k * (BRANCH_H + 8)
    content_bottom = max((s.top + s.h for s in all_slots), default=MARGIN)
    width = x + MARGIN if n_layers else 2 * MARGIN + START_PAD

    def slot_x(slot: _Slot, side: str) -> float:
        if slot.box is not None:
            return slot.box.x if side == "in" else slot.box.right
        col_w = widths[slot.layer]
        return xs[slot.layer] + (col_w / 2 if side == "mid" else 0 if side == "in" else col_w)

    # Ports: a node's outgoing (incoming) edges leave (arrive) spread over its side, sorted
    # by where they go (come from), so parallel edges do not sit on top of each other.
    out_ports: dict[str, list[int]] = {}
    in_ports: dict[str, list[int]] = {}
    for i, chain in chains.items():
        out_ports.setdefault(chain[0].key, []).append(i)
        in_ports.setdefault(chain[-1].key, []).append(i)

    def port_y(slot: _Slot, ids: list[int], i: int, toward: Any) -> float:
        ids = sorted(ids, key=toward)
        k = ids.index(i)
        span = min(PORT_STEP, (slot.h - 16) / max(1, len(ids) - 1)) if len(ids) > 1 else 0
        return slot.cy + (k - (len(ids) - 1) / 2) * span

    back_level = content_bottom + 22
    for i, link in enumerate(links):
        if i in chains:
            chain = chains[i]
            src, dst = chain[0], chain[-1]
            y0 = port_y(src, out_ports[src.key], i, lambda j: (chains[j][1].cy, j))
            y1 = port_y(dst, in_ports[dst.key], i, lambda j: (chains[j][-2].cy, j))
            points = [(slot_x(src, "out"), y0)]
            for dummy in chain[1:-1]:
                points.append((slot_x(dummy, "in"), dummy.cy))
                points.append((slot_x(dummy, "out"), dummy.cy))
            points.append((slot_x(dst, "in") - 2, y1))
            link.path = _curve(points)
            (ax, ay), (bx, by) = points[0], points[1]
            link.label_x = (ax + bx) / 2
            link.label_y = (ay + by) / 2
        else:
            src_box, dst_box = boxes[link.source], boxes[link.target]
            if link.source == link.target:
                # A loop on the node itself sits on its top edge, clear of the back arcs below.
                bx, by = src_box.right - 22, src_box.y
                link.path = (
                    f"M{bx:.1f},{by:.1f} C{bx + 10:.1f},{by - 34:.1f} "
                    f"{bx - 46:.1f},{by - 34:.1f} {bx - 34:.1f},{by - 2:.1f}"
                )
                link.label_x, link.label_y = bx - 18, by - 30
            else:
                sx, sy = src_box.cx, src_box.bottom
                tx, ty = dst_box.cx + 8, dst_box.bottom + 2
                low = back_level
                link.path = (
                    f"M{sx:.1f},{sy:.1f} C{sx:.1f},{low:.1f} {tx:.1f},{low:.1f} {tx:.1f},{ty:.1f}"
                )
                link.label_x, link.label_y = (sx + tx) / 2, low - 6
                back_level += 14
            link.style = "back" if link.style == "normal" else link.style
    height = max(content_bottom, back_level if back else content_bottom) + MARGIN
    return Diagram(width=width, height=height, start=start, boxes=boxes, links=links)


def _curve(points: list[tuple[float, float]]) -> str:
    """A smooth path through `points`: horizontal tangents at each point (left to right)."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    px, py = x0, y0
    for x, y in rest:
        if abs(y - py) < 0.5:
            parts.append(f"L{x:.1f},{y:.1f}")
        else:
            dx = max(12.0, (x - px) / 2)
            parts.append(f"C{px + dx:.1f},{py:.1f} {x - dx:.1f},{y:.1f} {x:.1f},{y:.1f}")
        px, py = x, y
    return " ".join(parts)


# --- rendering ----------------------------------------------------------------------------------


def _state_attr(states: Mapping[str, str], name: str) -> str:
    state = states.get(name, "pending")
    return state if state in STATES else "pending"


def _node_svg(box: Box, states: Mapping[str, str], *, start: bool, branch: bool = False) -> str:
    state = _state_attr(states, box.name)
    cls = f"dg-node dg-kind-{escape(box.kind)}" + (" dg-branch" if branch else "")
    cls += " dg-start" if start else ""
    rx = box.h / 2 if box.kind == "end" else 8
    name = escape(_clip(box.name, NAME_MAX_CHARS))
    detail = escape(_clip(box.detail, 30))
    title = escape(f"{box.name} ({box.detail})")
    tx = 16 if box.kind != "end" else 18
    parts = [
        f'<g class="{cls}" data-node="{escape(box.name)}" data-kind="{escape(box.kind)}" '
        f'data-state="{state}" transform="translate({box.x:.1f},{box.y:.1f})">',
        f"<title>{title}</title>",
        f'<rect class="dg-box" width="{box.w:.1f}" height="{box.h:.1f}" rx="{rx}"/>',
    ]
    if box.kind != "end":
        parts.append(f'<rect class="dg-stripe" x="0" y="0" width="6" height="{box.h:.1f}" rx="3"/>')
    if box.branches:
        parts.append(f'<text class="dg-name" x="{tx}" y="19">{name}</text>')
        parts.append(f'<text class="dg-detail" x="{tx}" y="31">{detail}</text>')
    elif branch:
        parts.append(f'<text class="dg-name dg-name-sm" x="{tx}" y="15">{name}</text>')
        parts.append(f'<text class="dg-detail" x="{tx}" y="27">{detail}</text>')
    else:
        parts.append(f'<text class="dg-name" x="{tx}" y="22">{name}</text>')
        parts.append(f'<text class="dg-detail" x="{tx}" y="38">{detail}</text>')
    parts.append(f'<circle class="dg-dot" cx="{box.w - 12:.1f}" cy="12" r="4.5"/>')
    parts.append("</g>")
    out = "".join(parts)
    for kid in box.branches:
        out += _node_svg(kid, states, start=False, branch=True)
    return out


def render_svg(
    diagram: Diagram,
    *,
    states: Mapping[str, str] | None = None,
    svg_id: str = "dg",
    title: str = "",
    css_class: str = "diagram",
) -> SafeString:
    """The diagram as an inline `<svg>` (escaped; marker ids prefixed with `svg_id`)."""
    states = states or {}
    sid = escape(svg_id)
    w, h = diagram.width, diagram.height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{escape(css_class)}" id="{sid}" '
        f'viewBox="0 0 {w:.0f} {h:.0f}" width="{w:.0f}" height="{h:.0f}" role="img" '
        f'aria-label="{escape(title or "graph diagram")}">',
        f"<title>{escape(title or 'graph diagram')}</title>",
        "<defs>",
    ]
    for style in ("normal", "error", "reject", "back"):
        out.append(
            f'<marker id="{sid}-arrow-{style}" class="dg-arrow dg-arrow-{style}" '
            'viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>'
        )
    out.append("</defs>")
    start = diagram.boxes.get(diagram.start)
    if start is not None:
        sx, sy = start.x - START_PAD + 6, start.cy
        out.append(
            f'<g class="dg-start-marker"><circle cx="{sx:.1f}" cy="{sy:.1f}" r="6"/>'
            f'<path class="dg-edge dg-edge-normal" d="M{sx + 6:.1f},{sy:.1f} L{start.x - 2:.1f},'
            f'{sy:.1f}" marker-end="url(#{sid}-arrow-normal)"/></g>'
        )
    out.append('<g class="dg-edges">')
    for link in diagram.links:
        out.append(
            f'<g class="dg-link" data-from="{escape(link.source)}" data-to="{escape(link.target)}">'
            f"<title>{escape(link.title)}</title>"
            f'<path class="dg-edge dg-edge-{link.style}" d="{link.path}" '
            f'marker-end="url(#{sid}-arrow-{link.style})"/></g>'
        )
    out.append("</g>")
    out.append('<g class="dg-labels">')
    for link in diagram.links:
        if not link.label:
            continue
        lw = len(link.label) * LABEL_CHAR_W + 10
        out.append(
            f'<g class="dg-label dg-label-{link.style}" '
            f'transform="translate({link.label_x - lw / 2:.1f},{link.label_y - 9:.1f})">'
            f'<rect width="{lw:.1f}" height="17" rx="8.5"/>'
            f'<text x="{lw / 2:.1f}" y="12.5" text-anchor="middle">{escape(link.label)}</text></g>'
        )
    out.append("</g>")
    out.append('<g class="dg-nodes">')
    for box in diagram.boxes.values():
        out.append(_node_svg(box, states, start=box.name == diagram.start))
    out.append("</g></svg>")
    return mark_safe("".join(out))  # noqa: S308 - every interpolated string is escaped above


def diagram_svg(
    spec: Mapping[str, Any],
    *,
    states: Mapping[str, str] | None = None,
    svg_id: str = "dg",
    css_class: str = "diagram",
) -> SafeString:
    """Lay out and render `spec` in one call."""
    return render_svg(
        layout(spec),
        states=states,
        svg_id=svg_id,
        title=f"Graph {spec.get('name', '')}",
        css_class=css_class,
    )


# --- node states --------------------------------------------------------------------------------


def node_states(
    *,
    status: str,
    steps: Iterable[tuple[str, str]],
    waiting_for: Mapping[str, Any] | None = None,
    position: Mapping[str, Any] | None = None,
    branch_events: Iterable[tuple[str, Mapping[str, Any]]] = (),
) -> dict[str, str]:
    """Each node's state for colouring: the latest step of each node wins; the node a run
    waits at is `waiting`; the node a running run is at is `running`.

    `steps` are (node, step status) in index order; `branch_events` are (event type, data) of
    `branch.*` events in seq order.
    """
    states: dict[str, str] = {}
    for node, step_status in steps:
        states[node] = "completed" if step_status == "completed" else "failed"
    for etype, data in branch_events:
        branch = data.get("branch")
        if isinstance(branch, str):
            states[branch] = {
                "branch.started": "running",
                "branch.completed": "completed",
                "branch.failed": "failed",
            }.get(etype, states.get(branch, "pending"))
    if waiting_for and waiting_for.get("node"):
        if status in ("waiting", "paused"):
            states[str(waiting_for["node"])] = "waiting"
    elif status in ("running", "cancelling") and position and position.get("node"):
        states[str(position["node"])] = "running"
    return states
