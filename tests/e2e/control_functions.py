"""A function for the retry tests: it fails while a file exists, so a test decides when a
retried run's node may succeed (the same in a test process and in a live worker)."""

from __future__ import annotations

import os
from typing import Any

from runs.engine import register_function


@register_function("gated_step", replace=True)
def gated_step(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    if os.path.exists(ctx.args["gate"]):
        raise RuntimeError("the gate is closed")
    return {"log": "gated"}


def gated_spec(gate: str, name: str = "gated") -> dict[str, Any]:
    """before -> gated (fails while `gate` exists) -> done; no resurrections, input required."""
    return {
        "name": name,
        "input_schema": {"type": "object", "required": ["ticket"]},
        "state": {"log": {"reducer": "append", "default": []}},
        "start": "before",
        "nodes": {
            "before": {"kind": "transform", "set": {"log": "'before'"}},
            "gated": {"kind": "function", "function": "gated_step", "args": {"gate": gate}},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "before", "to": "gated"}, {"from": "gated", "to": "done"}],
        "max_resurrections": 0,
    }
