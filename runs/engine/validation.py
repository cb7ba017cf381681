"""Spec validation: collect every problem, each naming the node, edge or field at fault."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from . import specfields
from .errors import Problem
from .nodes import KINDS, NodeKind, get_kind
from .nodes.subgraph import MAX_DEPTH_CEILING
from .speccheck import MAX_CODE_CHARS as MAX_CODE_CHARS
from .speccheck import MAX_EXPRESSIONS as MAX_EXPRESSIONS
from .speccheck import SpecCheck
from .specfields import MAX_EDGES as MAX_EDGES  # re-exported: the spec bounds
from .specfields import MAX_NODES as MAX_NODES
from .specfields import NODE_NAME as NODE_NAME
from .state import REDUCERS
from .subscriptions import check_limits, check_triggers
from .values import is_int, is_number

# Field names come from the field tables (specfields.py, each kind's `field_table`), which
# the published JSON Schema is generated from too.
COMMON_FIELDS = specfields.COMMON.names
TOP_FIELDS = specfields.TOP.names
EDGE_FIELDS = specfields.EDGE.names
_STATE_FIELDS = specfields.STATE_ENTRY.names
_RETRY_FIELDS = specfields.RETRY.names
_ARTIFACT_FIELDS = specfields.ARTIFACT.names
_LIST_REDUCERS = set(specfields.LIST_REDUCERS)
_NUMBER_REDUCERS = set(specfields.NUMBER_REDUCERS)
_MAX_ATTEMPTS = specfields.MAX_RETRY_ATTEMPTS

# What one spec may hold, so validating the largest spec (MAX_SPEC_BYTES, 1 MB) costs well
# under a second of the web process's CPU. Parsing an expression costs ~0.1 ms plus ~5 µs per
# token, so expressions and template tags are counted by their code, not their text: a long
# prompt of plain text costs nearly nothing, `{{ a }}` repeated 40,000 times took 1.1 s.
# MAX_NODES and MAX_EDGES are declared with the field tables (specfields.py).
# MAX_EXPRESSIONS and MAX_CODE_CHARS (expression code) are counted by SpecCheck (speccheck.py).
MAX_NESTING = 64  # JSON depth of the spec document
# jsonschema checks a schema against its metaschema at ~45 µs per JSON value: 100,000 took 4.4 s.
MAX_SCHEMA_VALUES = 2_000
MAX_PROBLEMS = 200


def check_raw(raw: Any, *, stored: bool = False) -> list[Problem]:
    """Every problem in a parsed (but not yet trusted) spec."""
    if not isinstance(raw, dict):
        return [Problem("spec", f"must be a JSON object, got {type(raw).__name__}")]
    # A stored version passed these caps (or predates them) when it was stored.
    too_big = [] if stored else _check_size(raw)
    if too_big:
        return too_big
    check = SpecCheck(raw, stored=stored)
    _check_top(raw, check)
    _check_state(raw.get("state"), check)
    _check_nodes(raw.get("nodes"), check)
    edges = _check_edges(raw.get("edges"), check)
    start = raw.get("start")
    if start is None:
        check.add("start", "missing: name the node the run starts at")
    elif not isinstance(start, str) or start not in check.nodes:
        check.add("start", f"names unknown node {start!r}")
    # Graph checks run even when nodes or edges had problems, so one pass reports everything.
    _check_graph(check, edges)
    if len(check.problems) > MAX_PROBLEMS:
        more = len(check.problems) - MAX_PROBLEMS
        return [*check.problems[:MAX_PROBLEMS], Problem("spec", f"and {more:,} more problems")]
    return check.problems


def count_values(value: Any, limit: int) -> int:
    """JSON values in `value` (objects, arrays, scalars), counting stopped past `limit`."""
    count = 0
    todo = [value]
    while todo and count <= limit:
        item = todo.pop()
        count += 1
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return count


def _check_size(raw: dict) -> list[Problem]:
    """Bounds checked before anything else walks the spec (recursively, or per node pair)."""
    problems = []
    # Level by level, without recursion: the checks after this one (jsonschema, json.dumps)
    # recurse, and a RecursionError would be a 500.
    level: list[Any] = [raw]
    for _ in range(MAX_NESTING):
        children = [c for v in level for c in (v.values() if type(v) is dict else v)]
        level = [c for c in children if type(c) is dict or type(c) is list]
        if not level:
            break
    else:
        problems.append(Problem("spec", f"nested more than {MAX_NESTING} levels deep"))
    nodes, edges = raw.get("nodes"), raw.get("edges")
    if isinstance(nodes, dict) and len(nodes) > MAX_NODES:
        problems.append(Problem("nodes", f"{len(nodes):,} nodes; at most {MAX_NODES:,}"))
    if isinstance(edges, list) and len(edges) > MAX_EDGES:
        problems.append(Problem("edges", f"{len(edges):,} edges; at most {MAX_EDGES:,}"))
    return problems


def _check_top(raw: dict, check: SpecCheck) -> None:
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        check.add("name", "must be a non-empty string")
    for key in sorted(set(raw) - TOP_FIELDS):
        check.add(key, "unknown top-level field")
    # Editors find the JSON Schema through `$schema`; validation only checks it is a string.
    if "$schema" in raw and not isinstance(raw["$schema"], str):
        check.add("$schema", "must be a string (the URL of the graph spec's JSON Schema)")
    check.number("max_steps", raw, "max_steps", minimum=1, integer=True)
    check.number("max_resurrections", raw, "max_resurrections", minimum=0, integer=True)
    check.number("max_depth", raw, "max_depth", minimum=1, integer=True)
    if is_int(raw.get("max_depth")) and raw["max_depth"] > MAX_DEPTH_CEILING:
        check.add(
            "max_depth",
            f"`max_depth` may be at most {MAX_DEPTH_CEILING} (the platform's ceiling on "
            f"subgraph nesting), got {raw['max_depth']}",
        )
    check_limits(raw, check)
    check_triggers(raw, check)
    schema = raw.get("input_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            check.add("input_schema", "must be a JSON Schema object")
        elif count_values(schema, MAX_SCHEMA_VALUES) > MAX_SCHEMA_VALUES:
            check.add("input_schema", f"too large: at most {MAX_SCHEMA_VALUES:,} JSON values")
        else:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                check.add("input_schema", f"not a valid JSON Schema: {exc.message}")


def _check_state(state: Any, check: SpecCheck) -> None:
    if state is None:
        return
    if not isinstance(state, dict):
        check.add("state", "must be an object mapping keys to {reducer, default}")
        return
    for key, entry in state.items():
        where = f"state.{key}"
        if not isinstance(entry, dict):
            check.add(where, 'must be an object like {"reducer": "append", "default": []}')
            continue
        for extra in sorted(set(entry) - _STATE_FIELDS):
            check.add(where, f"unknown field {extra!r}")
        reducer = entry.get("reducer", "replace")
        if not isinstance(reducer, str) or reducer not in REDUCERS:
            check.add(where, f"unknown reducer {reducer!r} (known: {', '.join(REDUCERS)})")
            continue
        default = entry.get("default")
        if default is None:
            continue
        if reducer in _LIST_REDUCERS and not isinstance(default, list):
            check.add(where, f"reducer {reducer!r} needs a list default, got {default!r}")
        elif reducer == "merge" and not isinstance(default, dict):
            check.add(where, f"reducer 'merge' needs an object default, got {default!r}")
        elif reducer in _NUMBER_REDUCERS and not is_number(default):
            check.add(where, f"reducer {reducer!r} needs a number default, got {default!r}")


def _kind_of(node: Any) -> Any:
    return get_kind(node.get("kind")) if isinstance(node, dict) else None


def _check_nodes(nodes: Any, check: SpecCheck) -> None:
    if not isinstance(nodes, dict) or not nodes:
        check.add("nodes", "must be a non-empty object mapping node names to nodes")
        return
    for name, node in nodes.items():
        where = f"nodes.{name}"
        if not NODE_NAME.fullmatch(name):
            check.add(where, "node names use letters, digits, '_' and '-' and start with a letter")
        if not isinstance(node, dict):
            check.add(where, "must be an object with a `kind`")
            continue
        kind = _kind_of(node)
        if kind is None:
            check.add(
                where, f"unknown kind {node.get('kind')!r} (known: {', '.join(sorted(KINDS))})"
            )
            continue
        for extra in sorted(set(node) - COMMON_FIELDS - kind.fields):
            check.add(where, f"unknown field {extra!r} for a {kind.kind} node")
        _check_retry(where, node, check)
        check.number(where, node, "timeout", minimum=0, exclusive=True)
        _check_artifacts(where, node.get("artifacts"), check)
        kind.validate(name, node, check)


def _check_retry(where: str, node: dict, check: SpecCheck) -> None:
    retry = node.get("retry")
    if retry is None:
        return
    if not isinstance(retry, dict):
        check.add(where, "`retry` must be an object {max_attempts, backoff, max_backoff?}")
        return
    for extra in sorted(set(retry) - _RETRY_FIELDS):
        check.add(where, f"unknown retry field {extra!r}")
    value = retry.get("max_attempts", 1)
    if not is_int(value) or not 1 <= value <= _MAX_ATTEMPTS:
        check.add(
            where,
            f"`retry.max_attempts` must be an integer from 1 to {_MAX_ATTEMPTS}, got {value!r}",
        )
    for field in ("backoff", "max_backoff"):
        if field in retry and (not is_number(retry[field]) or retry[field] < 0):
            check.add(where, f"`retry.{field}` must be a number >= 0, got {retry[field]!r}")


def _check_artifacts(where: str, artifacts: Any, check: SpecCheck) -> None:
    if artifacts is None:
        return
    if not isinstance(artifacts, list):
        check.add(where, "`artifacts` must be a list")
        return
    for i, item in enumerate(artifacts):
        label = f"artifacts[{i}]"
        if not isinstance(item, dict):
            check.add(where, f"{label} must be an object")
            continue
        if not isinstance(item.get("name"), str) or not item["name"]:
            check.add(where, f"{label}.name must be a non-empty string")
        for extra in sorted(set(item) - _ARTIFACT_FIELDS):
            check.add(where, f"{label} has unknown field {extra!r}")
        if ("json" in item) == ("text" in item):
            check.add(
                where, f"{label} needs exactly one of `json` (expression) or `text` (template)"
            )
        elif "json" in item:
            check.expression(where, item["json"], f"{label}.json")
        else:
            check.template(where, item["text"], f"{label}.text")


def _check_edges(edges: Any, check: SpecCheck) -> list[dict]:
    if edges is None:
        return []
    if not isinstance(edges, list):
        check.add("edges", "must be a list")
        return []
    good = []
    for i, edge in enumerate(edges):
        where = f"edges[{i}]"
        if not isinstance(edge, dict):
            check.add(where, "must be an object {from, to, when?, on_error?}")
            continue
        for extra in sorted(set(edge) - EDGE_FIELDS):
            check.add(where, f"unknown field {extra!r}")
        ok = check.node_ref(where, edge.get("from"), "`from`")
        ok = check.node_ref(where, edge.get("to"), "`to`") and ok
        if "when" in edge:
            check.expression(where, edge["when"], "`when`")
        if not isinstance(edge.get("on_error", False), bool):
            check.add(where, "`on_error` must be true or false")
        if ok:
            source = _kind_of(check.nodes[edge["from"]])
            if source is not None and source.terminal:
                check.add(where, f"edge leaves end node {edge['from']!r}")
            good.append(edge)
    return good


def _check_graph(check: SpecCheck, edges: list[dict]) -> None:
    """Reachability, paths to an end, and the rules for parallel branches."""
    nodes = {name: node if isinstance(node, dict) else {} for name, node in check.nodes.items()}
    # A node of unknown kind (already reported) is treated as a plain pass-through node here.
    kinds = {name: _kind_of(node) or NodeKind() for name, node in nodes.items()}
    succ: dict[str, list[str]] = {name: [] for name in nodes}
    incoming: dict[str, list[int]] = {name: [] for name in nodes}
    for i, edge in enumerate(edges):
        succ[edge["from"]].append(edge["to"])
        incoming[edge["to"]].append(i)
    for name, kind in kinds.items():
        succ[name].extend(t for t in kind.extra_targets(nodes[name]) if t in nodes)
    branch_of: dict[str, str] = {}
    for name, kind in kinds.items():
        for child in kind.children(nodes[name]):
            if child in nodes:
                branch_of.setdefault(child, name)
    for child, parent in branch_of.items():
        where = f"nodes.{child}"
        if not kinds[child].branchable:
            check.add(
                where, f"a {kinds[child].kind} node cannot be a branch of parallel {parent!r}"
            )
        if succ[child] or incoming[child]:
            check.add(where, f"is a branch of parallel {parent!r} and so takes no edges")
        if check.raw.get("start") == child:
            check.add("start", f"cannot be {child!r}, a branch of parallel {parent!r}")
    start = check.raw.get("start")
    if not isinstance(start, str) or start not in nodes:
        return
    reached = {start}
    todo = [start]
    while todo:
        current = todo.pop()
        for nxt in [*succ[current], *kinds[current].children(nodes[current])]:
            if nxt in nodes and nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    # Backwards from the end nodes: linear, where a fixed point over all nodes was quadratic.
    pred: dict[str, list[str]] = {name: [] for name in nodes}
    for name, targets in succ.items():
        for target in targets:
            pred[target].append(name)
    reaches_end = {name for name, kind in kinds.items() if kind.terminal}
    todo = list(reaches_end)
    while todo:
        for prev in pred[todo.pop()]:
            if prev not in reaches_end:
                reaches_end.add(prev)
                todo.append(prev)
    if not any(kind.terminal for kind in kinds.values()):
        check.add("nodes", "no `end` node: a run could never succeed")
    for name in nodes:
        if name not in reached:
            check.add(f"nodes.{name}", f"unreachable from start node {start!r}")
        elif name not in branch_of and name not in reaches_end:
            check.add(f"nodes.{name}", "has no path to an `end` node")
