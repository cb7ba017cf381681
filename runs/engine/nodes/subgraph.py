"""`subgraph`: run another graph as a child run through the runtime's hook.

`input` maps the child's input keys to expressions over this run's state. The child's final
state goes to `output`, or, without `output`, is merged into this state through the reducers.
Nesting is bounded by the spec's `max_depth` (default 5), which validation caps at
MAX_DEPTH_CEILING: the platform's hard ceiling. The durable runtime clamps a stored spec's
larger value to the ceiling too (a `limit_exceeded.max_depth` from the tenant gate).

The hook gets a `call` id naming this call within its step (node, visit, attempt): the
runtime keys the child run by it, so a parent re-running the step after a crash reuses the
child it already started instead of starting another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import fields as f
from ..errors import NodeError
from ..fields import Field, Table
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck

# The deepest a run tree may nest, whatever a spec says (#15: depth multiplies fan-out).
MAX_DEPTH_CEILING = 8


@register_kind
class SubgraphNode(NodeKind):
    kind = "subgraph"
    field_table = Table(
        (
            Field(
                "graph",
                f.string(min_length=1, pattern=f.NOT_BLANK),
                required=True,
                doc="The name of the graph to run as a child run.",
            ),
            Field("input", f.mapping(f.expression()), doc="Child input key → expression."),
            Field(
                "output",
                f.nullable(f.state_key()),
                doc="Receives the child's final state; else it is merged in.",
            ),
        )
    )

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        where = f"nodes.{name}"
        graph = node.get("graph")
        if not isinstance(graph, str) or not graph.strip():
            check.add(where, "`graph` must name the graph to run")
        mapping = node.get("input", {})
        if not isinstance(mapping, dict):
            check.add(where, "`input` must map child input keys to expressions")
        else:
            for key, source in mapping.items():
                check.expression(where, source, f"input.{key}")
        check.key(where, node, "output", required=False)

    def run(self, nc: NodeContext) -> Outcome:
        node = nc.node
        hook = nc.run.run_subgraph
        if hook is None:
            raise NodeError(
                "subgraph_unavailable", "this runner cannot start subgraphs", fatal=True
            )
        depth = nc.run.depth + 1
        if depth > nc.spec.max_depth:
            raise NodeError(
                "depth_exceeded",
                f"subgraph {node['graph']!r} at node {nc.name!r} would nest {depth} deep; "
                f"max_depth is {nc.spec.max_depth}",
                fatal=True,
            )
        child_input = {key: nc.evaluate(src) for key, src in (node.get("input") or {}).items()}
        nc.cancel.raise_if_cancelled()
        call = f"{nc.name}@{nc.visit}#{nc.attempt}"
        # The node's own token: a timeout or a fail_fast sibling stops the child run too.
        result = hook(node["graph"], child_input, depth, call=call, cancel=nc.cancel)
        if not isinstance(result, dict):
            raise NodeError("subgraph_failed", "subgraph hook did not return a state object")
        if node.get("output"):
            return Outcome({node["output"]: result})
        return Outcome(dict(result))
