"""`end`: the run succeeds here. It is a step of its own and changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext


@register_kind
class EndNode(NodeKind):
    kind = "end"
    terminal = True
    pure = True
    branchable = False

    def run(self, nc: NodeContext) -> Outcome:
        return Outcome({})
