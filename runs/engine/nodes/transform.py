"""`transform`: `set` maps state keys to expressions, all evaluated against the same state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import fields as f
from ..expressions import evaluate
from ..fields import Field, Table
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck


@register_kind
class TransformNode(NodeKind):
    kind = "transform"
    pure = True
    field_table = Table(
        (
            Field(
                "set",
                f.mapping(f.expression(), min_properties=1),
                required=True,
                doc="State key → expression, all evaluated against the same state.",
            ),
        )
    )

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        where = f"nodes.{name}"
        assignments = node.get("set")
        if not isinstance(assignments, dict) or not assignments:
            check.add(where, "`set` must be a non-empty object mapping state keys to expressions")
            return
        for key, source in assignments.items():
            check.expression(where, source, f"set.{key}")

    def run(self, nc: NodeContext) -> Outcome:
        variables = nc.variables()
        return Outcome(
            {
                key: evaluate(source, variables, node=nc.name, key=f"set.{key}")
                for key, source in nc.node["set"].items()
            }
        )
