from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from runs.engine import NodeContext, NodeError, RunContext, register_function
from runs.engine.functions import registry

from .helpers import chain, run_all


@pytest.fixture(autouse=True)
def functions() -> Iterator[None]:
    @register_function("test_par_fail", replace=True)
    def fail(state: dict, ctx: NodeContext) -> dict:
        raise NodeError("broken", f"{ctx.name} broke", retryable=False)

    yield
    registry.unregister("test_par_fail")


def scripted(output: str, response: str, latency_ms: int = 0) -> dict:
    return {
        "kind": "llm",
        "provider": "scripted",
        "prompt": "{{ state.topic }}",
        "output": output,
        "responses": [response],
        "latency_ms": latency_ms,
    }


def fanout(branches: dict[str, dict], **parallel: object) -> dict:
    spec = chain(
        ("research", {"kind": "parallel", "branches": list(branches), **parallel}),
        ("summarise", {"kind": "transform", "set": {"count": "state.findings | length"}}),
        state={
            "findings": {"reducer": "append", "default": []},
            "sources": {"reducer": "merge", "default": {}},
        },
    )
    spec["nodes"].update(branches)
    return spec


def test_branches_run_concurrently() -> None:
    spec = fanout({f"b{i}": scripted("findings", f"r{i}", latency_ms=1000) for i in range(3)})
    started = time.monotonic()
    results = run_all(spec, {"topic": "x"})
    elapsed = time.monotonic() - started
    assert results[-1].done
    assert elapsed < 1.6, f"three 1 s branches took {elapsed:.2f}s"


def test_results_merge_in_branch_order_through_the_reducers() -> None:
    spec = fanout(
        {
            "slow": scripted("findings", "first", latency_ms=300),
            "fast": scripted("findings", "second"),
            "src": {"kind": "transform", "set": {"sources": "{'web': 1}"}},
        }
    )
    results = run_all(spec, {"topic": "x"})
    step = results[0]
    assert step.node == "research" and step.status == "completed"
    assert step.state["findings"] == ["first", "second"]
    assert step.state["sources"] == {"web": 1}
    assert step.update == {"findings": ["first", "second"], "sources": {"web": 1}}
    assert results[-1].state["count"] == 2
    kinds = [k for k, _ in step.events if k != "llm.request"]
    assert kinds[:3] == ["branch.started"] * 3
    # Each llm branch records what it sent, named by the branch (the step inspector's view),
    # and its streamed reply is stored with the step too.
    sent = {d["node"]: d["messages"] for k, d in step.events if k == "llm.request"}
    assert set(sent) == {"slow", "fast"}
    assert sorted(kinds[3:]) == ["branch.completed"] * 3 + ["llm.delta"] * 2
    completed = {d["branch"]: d for k, d in step.events if k == "branch.completed"}
    assert completed["slow"]["update"] == {"findings": "first"}
    assert step.usage.by_model["scripted"]["calls"] == 2


def test_branches_see_the_same_snapshot() -> None:
    spec = fanout(
        {
            "a": {"kind": "transform", "set": {"x": "(state.x or 0) + 1"}},
            "b": {"kind": "transform", "set": {"y": "(state.x or 0) + 10"}},
        }
    )
    state = run_all(spec, {"x": 1})[-1].state
    assert (state["x"], state["y"]) == (2, 11)


def test_fail_fast_cancels_the_other_branches() -> None:
    spec = fanout(
        {
            "slow": scripted("findings", "late", latency_ms=5000),
            "bad": {"kind": "function", "function": "test_par_fail"},
        }
    )
    started = time.monotonic()
    last = run_all(spec, {"topic": "x"})[-1]
    assert time.monotonic() - started < 1.0
    assert last.status == "failed" and last.error["code"] == "branch_failed"
    assert "'bad'" in last.error["message"] and "bad broke" in last.error["message"]
    failed = {d["branch"]: d["error"]["code"] for k, d in last.events if k == "branch.failed"}
    assert failed == {"bad": "broken", "slow": "cancelled"}


def test_collect_reports_every_failure() -> None:
    spec = fanout(
        {
            "ok": scripted("findings", "fine"),
            "bad1": {"kind": "function", "function": "test_par_fail"},
            "bad2": {"kind": "function", "function": "test_par_fail"},
        },
        on_error="collect",
    )
    last = run_all(spec, {"topic": "x"})[-1]
    assert last.error["code"] == "branches_failed"
    assert "2 of 3" in last.error["message"]
    assert set(last.error["details"]["failures"]) == {"bad1", "bad2"}
    assert sum(1 for k, _ in last.events if k == "branch.completed") == 1


def test_collect_with_an_errors_key_keeps_the_successful_results() -> None:
    spec = fanout(
        {
            "ok": scripted("findings", "fine"),
            "bad": {"kind": "function", "function": "test_par_fail"},
        },
        on_error="collect",
        errors="branch_errors",
    )
    last = run_all(spec, {"topic": "x"})[-1]
    assert last.done
    assert last.state["findings"] == ["fine"]
    assert last.state["branch_errors"] == {"bad": {"code": "broken", "message": "bad broke"}}


def test_branches_retry_on_their_own() -> None:
    flaky = {
        **scripted("findings", "eventually"),
        "fail_times": 1,
        "retry": {"max_attempts": 2, "backoff": 0},
    }
    results = run_all(fanout({"flaky": flaky, "ok": scripted("findings", "ok")}), {"topic": "x"})
    assert results[-1].state["findings"] == ["eventually", "ok"]
    assert "step.retrying" in [k for k, _ in results[0].events]


def test_parallel_deltas_name_the_branch() -> None:
    deltas: list[str] = []
    spec = fanout({"a": scripted("findings", "alpha"), "b": scripted("findings", "beta")})
    run_all(spec, {"topic": "x"}, RunContext(on_delta=lambda node, text: deltas.append(node)))
    assert set(deltas) == {"a", "b"}


def test_nested_parallel() -> None:
    spec = fanout(
        {"inner": {"kind": "parallel", "branches": ["x", "y"]}, "z": scripted("findings", "z")}
    )
    spec["nodes"]["x"] = scripted("findings", "x")
    spec["nodes"]["y"] = scripted("findings", "y")
    assert run_all(spec, {"topic": "t"})[-1].state["findings"] == ["x", "y", "z"]


def test_branch_artifacts_are_collected() -> None:
    branch = {
        "kind": "transform",
        "set": {"v": "1"},
        "artifacts": [{"name": "b.txt", "text": "v={{ state.v }}"}],
    }
    step = run_all(fanout({"only": branch}))[0]
    assert [(a.name, a.data) for a in step.artifacts] == [("b.txt", b"v=1")]


def writes(**values: str) -> dict:
    return {"kind": "transform", "set": values}


def test_branches_writing_one_replace_key_fail_with_merge_conflict() -> None:
    spec = fanout({"a": writes(label="'a'"), "b": writes(other="1"), "c": writes(label="'c'")})
    results = run_all(spec)
    last = results[-1]
    assert last.node == "research" and last.status == "failed"
    assert last.error["code"] == "merge_conflict"
    assert last.error["details"]["key"] == "label"
    assert last.error["details"]["branches"] == ["a", "c"]
    assert "'label'" in last.error["message"] and "'a', 'c'" in last.error["message"]
    assert last.run_error["code"] == "merge_conflict"
    assert last.run_error["fatal"] is True
    assert "'research'" in last.run_error["message"]
    # Nothing of the branches reached the state.
    assert "label" not in last.state and "other" not in last.state


def test_every_conflicting_key_is_named() -> None:
    spec = fanout({"a": writes(x="1", y="1"), "b": writes(x="2", y="2", z="2")})
    last = run_all(spec)[-1]
    conflicts = last.error["details"]["conflicts"]
    assert conflicts == [
        {"key": "x", "branches": ["a", "b"]},
        {"key": "y", "branches": ["a", "b"]},
    ]


def test_even_equal_values_conflict() -> None:
    # What a branch wrote depends on timing and inputs: equal today is no promise.
    last = run_all(fanout({"a": writes(x="1"), "b": writes(x="1")}))[-1]
    assert last.error["code"] == "merge_conflict"


def test_last_wins_keeps_the_branch_listed_last() -> None:
    spec = fanout({"a": writes(label="'a'"), "b": writes(label="'b'")}, on_conflict="last_wins")
    results = run_all(spec)
    assert results[-1].done
    assert results[0].state["label"] == "b"


def test_an_explicit_replace_reducer_conflicts_too() -> None:
    spec = fanout({"a": writes(n="1"), "b": writes(n="2")}, on_conflict="fail")
    spec["state"]["n"] = {"reducer": "replace", "default": 0}
    assert run_all(spec)[-1].error["code"] == "merge_conflict"


def test_combining_reducers_never_conflict() -> None:
    spec = fanout(
        {
            "a": writes(findings="'a'", sources="{'a': 1}", total="1"),
            "b": writes(findings="'b'", sources="{'b': 2}", total="2"),
        }
    )
    spec["state"]["total"] = {"reducer": "add", "default": 0}
    results = run_all(spec)
    assert results[-1].done
    state = results[0].state
    assert state["findings"] == ["a", "b"]
    assert state["sources"] == {"a": 1, "b": 2}
    assert state["total"] == 3


def test_a_merge_conflict_follows_an_on_error_edge() -> None:
    spec = fanout({"a": writes(x="1"), "b": writes(x="2")})
    spec["nodes"]["recover"] = writes(recovered="true")
    spec["edges"] += [
        {
            "from": "research",
            "to": "recover",
            "on_error": True,
            "when": "error.code == 'merge_conflict'",
        },
        {"from": "recover", "to": "done"},
    ]
    results = run_all(spec)
    assert results[-1].done
    assert results[-1].state["recovered"] is True


def test_a_nested_parallel_conflicts_at_its_own_level() -> None:
    spec = fanout(
        {"inner": {"kind": "parallel", "branches": ["x", "y"], "on_conflict": "last_wins"}}
    )
    spec["nodes"]["outer_b"] = writes(v="'outer'")
    spec["nodes"]["research"]["branches"].append("outer_b")
    spec["nodes"]["x"] = writes(v="'x'")
    spec["nodes"]["y"] = writes(v="'y'")
    last = run_all(spec)[-1]
    assert last.error["code"] == "merge_conflict"
    assert last.error["details"]["branches"] == ["inner", "outer_b"]
