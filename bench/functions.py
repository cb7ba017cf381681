"""Functions the benchmarks' graphs call (RUNYARD_FUNCTION_MODULES=bench.functions)."""

from __future__ import annotations

import random

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


SYLLABLES = (
    "ta",
    "ge",
    "mo",
    "ri",
    "su",
    "ka",
    "le",
    "no",
    "pi",
    "ve",
    "do",
    "ru",
    "sa",
    "mi",
    "ko",
)
WORDS = [a + b for a in SYLLABLES for b in SYLLABLES] + [
    a + b + c for a in "tk" for b in "aeo" for c in SYLLABLES
]


def words(size: int) -> str:
    """`size` characters of words drawn at random (seeded) from a few hundred: text that
    compresses about as a conversation's does (~3x with zlib), not a repeating pattern."""
    rng = random.Random(size)
    out, length = [], 0
    while length < size:
        word = rng.choice(WORDS) + (". " if rng.random() < 0.08 else " ")
        out.append(word)
        length += len(word)
    return "".join(out)[:size]


@register_function("bench_text", replace=True)
def bench_text(state: dict, ctx: NodeContext) -> dict:
    """One key, one addition, over a state whose `text` (set on the first visit) is big."""
    update: dict = {"x": state["x"] + 1}
    if len(state.get("text") or "") < state["size"]:
        update["text"] = words(state["size"])
    return update
