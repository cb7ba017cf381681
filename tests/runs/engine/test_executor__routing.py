from __future__ import annotations

from collections.abc import Iterator

import pytest

from runs.engine import (
    Executor,
    NodeError,
    RunContext,
    initial_state,
    parse_spec,
    register_function,
)
from runs.engine.functions import registry

from .helpers import run_all


@pytest.fixture(autouse=True)
def failing_function() -> Iterator[None]:
    @register_function("test_routing_explode", replace=True)
    def explode(state: dict, ctx: object) -> dict:
        raise NodeError("boom", "it exploded", retryable=False)

    yield
    registry.unregister("test_routing_explode")


def router(edges: list[dict], start_set: dict | None = None) -> dict:
    names = {e["to"] for e in edges} | {e["from"] for e in edges}
    nodes = {n: {"kind": "transform", "set": {"visited": f"'{n}'"}} for n in names}
    nodes["start"] = {"kind": "transform", "set": start_set or {"v": "state.v"}}
    for target in {e["to"] for e in edges}:
        nodes.setdefault(target, {})
    nodes["done"] = {"kind": "end"}
    out_edges = list(edges)
    for n in names - {"start", "done"}:
        out_edges.append({"from": n, "to": "done"})
    return {"name": "r", "start": "start", "nodes": nodes, "edges": out_edges}


def path(results: list) -> list[str]:
    return [r.node for r in results]


def test_first_edge_whose_when_holds_in_spec_order() -> None:
    spec = router(
        [
            {"from": "start", "to": "a", "when": "state.v > 5"},
            {"from": "start", "to": "b", "when": "state.v > 1"},
            {"from": "start", "to": "c", "when": "state.v > 0"},
        ]
    )
    assert path(run_all(spec, {"v": 3})) == ["start", "b", "done"]
    assert path(run_all(spec, {"v": 9})) == ["start", "a", "done"]


def test_edge_without_when_is_the_fallback_even_when_listed_first() -> None:
    spec = router(
        [
            {"from": "start", "to": "fallback"},
            {"from": "start", "to": "special", "when": "state.v == 1"},
            {"from": "start", "to": "other"},
        ]
    )
    assert path(run_all(spec, {"v": 1})) == ["start", "special", "done"]
    assert path(run_all(spec, {"v": 2})) == ["start", "fallback", "done"]


def test_no_matching_edge_fails_unrouted_naming_node_and_conditions() -> None:
    spec = router(
        [
            {"from": "start", "to": "a", "when": "state.v == 1"},
            {"from": "start", "to": "b", "when": "state.v == 2"},
        ]
    )
    last = run_all(spec, {"v": 3})[-1]
    assert last.status == "completed"
    assert last.run_error["code"] == "unrouted"
    assert last.run_error["node"] == "start"
    assert "'start'" in last.run_error["message"]
    assert "`state.v == 1`" in last.run_error["message"]
    assert "`state.v == 2`" in last.run_error["message"]
    assert last.position["node"] is None


def test_on_error_edges_are_taken_only_after_the_node_failed() -> None:
    spec = {
        "name": "e",
        "start": "work",
        "nodes": {
            "work": {"kind": "function", "function": "test_routing_explode"},
            "ok": {"kind": "transform", "set": {"r": "'ok'"}},
            "recover": {"kind": "transform", "set": {"r": "'recovered'"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "work", "to": "recover", "on_error": True},
            {"from": "work", "to": "ok"},
            {"from": "ok", "to": "done"},
            {"from": "recover", "to": "done"},
        ],
    }
    results = run_all(spec)
    assert path(results) == ["work", "recover", "done"]
    assert results[0].status == "failed"
    assert results[0].error == {"code": "boom", "message": "it exploded"}
    assert results[0].run_error is None
    assert results[0].position == {"node": "recover", "step": 1, "visits": {"work": 1}}
    assert results[-1].state["r"] == "recovered" and results[-1].done


def test_on_error_edges_may_test_the_error() -> None:
    spec = {
        "name": "e",
        "start": "work",
        "nodes": {
            "work": {"kind": "function", "function": "test_routing_explode"},
            "boom": {"kind": "transform", "set": {"r": "error_code_seen"}},
            "other": {"kind": "transform", "set": {"r": "'other'"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "work", "to": "other", "on_error": True, "when": "error.code == 'nope'"},
            {"from": "work", "to": "boom", "on_error": True, "when": "error.code == 'boom'"},
            {"from": "work", "to": "done"},
            {"from": "boom", "to": "done"},
            {"from": "other", "to": "done"},
        ],
    }
    assert path(run_all(spec)) == ["work", "boom", "done"]


def test_failure_without_on_error_edge_ends_the_run_at_the_node() -> None:
    spec = {
        "name": "e",
        "start": "work",
        "nodes": {
            "work": {"kind": "function", "function": "test_routing_explode"},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "work", "to": "done"}],
    }
    (only,) = run_all(spec)
    assert only.status == "failed"
    assert only.run_error["code"] == "node_failed"
    assert only.run_error["node"] == "work"
    assert "'work'" in only.run_error["message"] and "it exploded" in only.run_error["message"]
    assert only.run_error["cause"]["code"] == "boom"
    assert only.run_error["fatal"] is False
    # Resuming from a failed step re-runs the node (a resurrection).
    assert only.position == {"node": "work", "step": 0, "visits": {}}


def loop_spec(max_steps: int) -> dict:
    return {
        "name": "loop",
        "start": "count",
        "max_steps": max_steps,
        "state": {"n": {"reducer": "add", "default": 0}},
        "nodes": {"count": {"kind": "transform", "set": {"n": "1"}}, "done": {"kind": "end"}},
        "edges": [
            {"from": "count", "to": "done", "when": "state.n >= 5"},
            {"from": "count", "to": "count"},
        ],
    }


def test_loops_run_until_their_condition_holds() -> None:
    results = run_all(loop_spec(100))
    assert path(results) == ["count"] * 5 + ["done"]
    assert results[-1].state["n"] == 5
    # Pure nodes (transform, end) behave the same on every visit: they are not counted.
    assert results[-1].position["visits"] == {}


def test_visits_count_the_nodes_that_can_differ_per_visit() -> None:
    spec = {
        "name": "ask",
        "start": "ask",
        "state": {"n": {"reducer": "add", "default": 0}},
        "nodes": {
            "ask": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "go",
                "responses": ["one", "two", "three"],
                "output": "answer",
            },
            "count": {"kind": "transform", "set": {"n": "1"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "ask", "to": "count"},
            {"from": "count", "to": "done", "when": "state.n >= 3"},
            {"from": "count", "to": "ask"},
        ],
    }
    results = run_all(spec)
    assert [r.state.get("answer") for r in results if r.node == "ask"] == ["one", "two", "three"]
    assert results[-1].position["visits"] == {"ask": 3}


def test_max_steps_fails_the_run_with_code_max_steps() -> None:
    results = run_all(loop_spec(3))
    assert len(results) == 3
    assert results[-1].run_error["code"] == "max_steps"
    assert "max_steps=3" in results[-1].run_error["message"]
    assert results[-1].position["node"] == "count"


def test_end_counts_as_a_step_for_max_steps() -> None:
    assert run_all(loop_spec(6))[-1].done
    assert run_all(loop_spec(5))[-1].run_error["code"] == "max_steps"


def test_resuming_past_max_steps_fails_at_once() -> None:
    spec = parse_spec(loop_spec(3))
    position = {"node": "count", "step": 3, "visits": {"count": 3}}
    (result,) = Executor(spec).run({"n": 3}, position)
    assert result.run_error["code"] == "max_steps"


def test_run_input_is_available_and_step_results_carry_positions() -> None:
    spec = router([{"from": "start", "to": "a"}])
    results = run_all(spec, {"v": 1})
    assert [r.index for r in results] == [1, 2, 3]
    assert results[0].position == {"node": "a", "step": 1, "visits": {}}
    assert results[-1].position == {"node": None, "step": 3, "visits": {}}
    assert results[-1].done and results[-1].state["visited"] == "a"


def test_on_step_start_is_called_per_attempt() -> None:
    calls = []
    ctx = RunContext(on_step_start=lambda i, n, a: calls.append((i, n, a)))
    spec = parse_spec(router([{"from": "start", "to": "a"}]))
    list(Executor(spec, ctx).run(initial_state(spec, {"v": 1})))
    assert calls == [(1, "start", 1), (2, "a", 1), (3, "done", 1)]


def test_state_passed_in_is_never_mutated() -> None:
    spec = parse_spec(router([{"from": "start", "to": "a"}]))
    state = {"v": 1}
    list(Executor(spec).run(state))
    assert state == {"v": 1}
