"""Live progress inside a step: the scripted provider's `token_ms`, deltas stored with the step,
and parallel branches reported through `RunContext.on_live` while the node runs."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest

from runs.engine import CancelToken, RunContext, SpecError, parse_spec
from runs.engine.errors import RunCancelled

from .helpers import chain, run_all


def llm(**fields: Any) -> dict:
    return {
        "kind": "llm",
        "provider": "scripted",
        "prompt": "hi",
        "output": "answer",
        "responses": ["one two three four"],
        **fields,
    }


@pytest.mark.parametrize("value", [-1, 10_001, "50", True, None, math.nan, math.inf])
def test_token_ms_out_of_bounds_is_refused_naming_the_node(value: Any) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(chain(("talk", llm(token_ms=value))))
    assert "nodes.talk" in str(caught.value) and "token_ms" in str(caught.value)


@pytest.mark.parametrize("value", [0, 0.5, 10_000])
def test_token_ms_within_bounds_is_accepted(value: float) -> None:
    parse_spec(chain(("talk", llm(token_ms=value))))


def test_token_ms_pauses_between_streamed_tokens_not_before_the_first() -> None:
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    ctx = RunContext(on_delta=lambda node, text: seen.append((time.monotonic() - started, text)))
    results = run_all(chain(("talk", llm(token_ms=60))), {}, ctx)
    assert "".join(t for _, t in seen) == "one two three four"
    assert seen[0][0] < 0.05  # the first token at once
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.055
    # The whole reply is stored with the step as one llm.delta event.
    assert ("llm.delta", {"node": "talk", "text": "one two three four"}) in results[0].events


def test_cancel_wakes_a_token_pause_at_once() -> None:
    cancel = CancelToken()
    seen: list[str] = []
    ctx = RunContext(cancel=cancel, on_delta=lambda node, text: seen.append(text))
    threading.Timer(0.2, cancel.cancel, args=("cancelled",)).start()
    started = time.monotonic()
    with pytest.raises(RunCancelled):
        run_all(chain(("talk", llm(token_ms=10_000))), {}, ctx)
    assert time.monotonic() - started < 1.0  # not the 10 s pause
    assert seen == ["one"]  # the pieces before the cancel, nothing after


def test_branches_are_reported_live_while_the_parallel_node_runs() -> None:
    live: list[tuple[float, str, dict]] = []
    started = time.monotonic()
    ctx = RunContext(on_live=lambda kind, data: live.append((time.monotonic(), kind, data)))
    spec = {
        "name": "fan",
        "state": {"found": {"reducer": "append", "default": []}},
        "start": "research",
        "nodes": {
            "research": {"kind": "parallel", "branches": ["slow", "fast"]},
            "slow": {**llm(responses=["s"], latency_ms=600), "output": "found"},
            "fast": {**llm(responses=["f"]), "output": "found"},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "research", "to": "done"}],
    }
    results = run_all(spec, {}, ctx)
    ended = time.monotonic()
    kinds = [(kind, data["branch"]) for _, kind, data in live]
    assert kinds[:2] == [("branch.started", "slow"), ("branch.started", "fast")]
    assert kinds[2:] == [("branch.completed", "fast"), ("branch.completed", "slow")]
    fast_done = next(
        t for t, kind, d in live if kind == "branch.completed" and d["branch"] == "fast"
    )
    assert fast_done - started < 0.4 < ended - started  # reported before the node ended
    # The same events are recorded with the step, for the caller to store at commit.
    stored = [(k, d["branch"]) for k, d in results[0].events if k.startswith("branch.")]
    assert sorted(stored) == sorted(kinds)


def test_a_failed_branch_is_reported_live_and_fail_fast_cancels_the_rest() -> None:
    live: list[tuple[str, str]] = []
    ctx = RunContext(on_live=lambda kind, data: live.append((kind, data["branch"])))
    spec = {
        "name": "fan",
        "state": {"found": {"reducer": "append", "default": []}},
        "start": "research",
        "nodes": {
            "research": {"kind": "parallel", "branches": ["slow", "bad"]},
            "slow": {**llm(responses=["s"], latency_ms=5000), "output": "found"},
            "bad": {**llm(responses=["b"], fail_times=1), "output": "found"},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "research", "to": "done"}],
    }
    started = time.monotonic()
    results = run_all(spec, {}, ctx)
    assert time.monotonic() - started < 2.0
    assert results[0].status == "failed"
    assert live[2:] == [("branch.failed", "bad"), ("branch.failed", "slow")]
