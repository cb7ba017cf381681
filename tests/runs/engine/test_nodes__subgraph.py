from __future__ import annotations

from runs.engine import Executor, NodeError, RunContext, initial_state, parse_spec

from .helpers import chain, run_all

CHILD = parse_spec(
    chain(("double", {"kind": "transform", "set": {"result": "state.n * 2"}}), name="child")
)


def runner(calls: list) -> RunContext:
    ctx = RunContext()

    def run_subgraph(name: str, data: dict, depth: int, **_: object) -> dict:
        calls.append((name, data, depth))
        if name != "child":
            raise NodeError("subgraph_failed", f"no graph {name!r}", fatal=True)
        child_ctx = RunContext(
            cancel=ctx.cancel.child(), depth=depth, run_subgraph=ctx.run_subgraph
        )
        *_, last = Executor(CHILD, child_ctx).run(initial_state(CHILD, data))
        if not last.done:
            raise NodeError("subgraph_failed", str(last.run_error))
        return last.state

    ctx.run_subgraph = run_subgraph
    return ctx


def test_subgraph_runs_through_the_hook_and_writes_output() -> None:
    calls: list = []
    spec = chain(
        (
            "sub",
            {
                "kind": "subgraph",
                "graph": "child",
                "input": {"n": "state.x + 1"},
                "output": "child",
            },
        )
    )
    results = run_all(spec, {"x": 2}, runner(calls))
    assert calls == [("child", {"n": 3}, 1)]
    assert results[-1].state["child"] == {"n": 3, "result": 6}


def test_without_output_the_child_state_is_merged() -> None:
    spec = chain(("sub", {"kind": "subgraph", "graph": "child", "input": {"n": "state.x"}}))
    assert run_all(spec, {"x": 5}, runner([]))[-1].state == {"x": 5, "n": 5, "result": 10}


def test_child_failure_fails_the_node() -> None:
    spec = chain(("sub", {"kind": "subgraph", "graph": "missing"}))
    last = run_all(spec, {}, runner([]))[-1]
    assert last.error["code"] == "subgraph_failed"


def test_depth_is_bounded_by_max_depth() -> None:
    calls: list = []
    ctx = runner(calls)
    ctx.depth = 5
    spec = chain(("sub", {"kind": "subgraph", "graph": "child"}))
    last = run_all(spec, {}, ctx)[-1]
    assert calls == []
    assert last.run_error["code"] == "depth_exceeded"
    assert "max_depth is 5" in last.run_error["message"]
    ctx.depth = 1
    assert (
        run_all(chain(("sub", {"kind": "subgraph", "graph": "child"}), max_depth=1), {}, ctx)[
            -1
        ].run_error["code"]
        == "depth_exceeded"
    )


def test_without_a_hook_subgraphs_are_unavailable() -> None:
    last = run_all(chain(("sub", {"kind": "subgraph", "graph": "child"})))[-1]
    assert last.error["code"] == "subgraph_unavailable" and last.run_error["fatal"]
