"""Functions the benchmarks' graphs call (RUNYARD_FUNCTION_MODULES=bench.functions)."""

from __future__ import annotations

from runs.engine.context import NodeContext
from runs.engine.functions import register_function


@register_function("bench_inc", replace=True)
def bench_inc(state: dict, ctx: NodeContext) -> dict:
    """The smallest effectful step: one key, one addition."""
    return {"x": state["x"] + 1}


@register_function("bench_blob", replace=True)
def bench_blob(state: dict, ctx: NodeContext) -> dict:
    """One key, one addition, over a state whose `blob` (set on the first visit) is large."""
    update: dict = {"x": state["x"] + 1}
    if len(state.get("blob") or "") < state["size"]:
        update["blob"] = "b" * state["size"]
    return update
