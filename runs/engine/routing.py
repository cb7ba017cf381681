"""Edge selection, precompiled per node.

From a node: the first edge whose `when` holds, in spec order; else the first edge with no
`when`. `on_error` edges are considered, by the same rule, only when the node failed after its
retries (their `when` can read `error.code` / `error.message`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .expressions import compile_expression, holds


@dataclass(slots=True)
class EdgeSet:
    conditional: list[tuple[str, str]] = field(default_factory=list)  # (target, when)
    fallback: str | None = None

    def add(self, edge: dict) -> None:
        if "when" in edge:
            compile_expression(edge["when"])  # warm the cache; validated already
            self.conditional.append((edge["to"], edge["when"]))
        elif self.fallback is None:
            self.fallback = edge["to"]

    def pick(self, variables: dict[str, Any]) -> str | None:
        for target, when in self.conditional:
            if holds(when, variables, key="when"):
                return target
        return self.fallback

    def describe(self) -> str:
        tried = [f"`{when}` (false)" for _, when in self.conditional]
        if not tried:
            return "it has no edges"
        return "tried " + ", ".join(tried) + "; no edge without `when`"


@dataclass(slots=True)
class Routes:
    normal: EdgeSet = field(default_factory=EdgeSet)
    on_error: EdgeSet = field(default_factory=EdgeSet)

    @property
    def simple(self) -> str | None:
        """The target when there is nothing to evaluate (the common chain case)."""
        return self.normal.fallback if not self.normal.conditional else None


def compile_routes(nodes: dict[str, dict], edges: list[dict]) -> dict[str, Routes]:
    routes = {name: Routes() for name in nodes}
    for edge in edges:
        target = routes[edge["from"]]
        (target.on_error if edge.get("on_error") else target.normal).add(edge)
    return routes
