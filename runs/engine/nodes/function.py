"""`function`: call an operator-registered Python function by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import fields as f
from ..errors import NodeError
from ..fields import Field, Table
from ..functions import get_function, registry
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck


@register_kind
class FunctionNode(NodeKind):
    kind = "function"
    field_table = Table(
        (
            Field(
                "function",
                f.string(min_length=1),
                required=True,
                doc="The name of a function the operator registered.",
            ),
            Field("args", {"type": "object"}, doc="Passed to the function as they are."),
        )
    )

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        where = f"nodes.{name}"
        function = node.get("function")
        if not isinstance(function, str) or not function:
            check.add(where, "`function` must name a registered function")
        elif function not in registry:
            known = ", ".join(registry.names()) or "none"
            check.add(where, f"function {function!r} is not registered (registered: {known})")
        if "args" in node and not isinstance(node["args"], dict):
            check.add(where, "`args` must be an object")

    def run(self, nc: NodeContext) -> Outcome:
        fn = get_function(nc.node["function"])
        if fn is None:
            # Registered at validation time but gone now (e.g. another worker's config).
            raise NodeError(
                "function_missing",
                f"function {nc.node['function']!r} is not registered",
                fatal=True,
            )
        # A shallow copy: a function assigning top-level keys cannot corrupt the checkpoint.
        update = fn(dict(nc.state), nc)
        if update is None:
            update = {}
        if not isinstance(update, dict):
            raise NodeError(
                "function_error",
                f"function {nc.node['function']!r} returned {type(update).__name__}, not a dict",
                retryable=False,
                fatal=True,
            )
        return Outcome(update)
