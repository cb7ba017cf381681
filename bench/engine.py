"""Engine overhead benchmark: `python bench/engine.py [--json] [--quick]`.

Measures per-node time with no persistence for a 10- and a 100-node chain and a 10-branch
fan-out, side by side in one process: a bare Python loop calling the same functions (the
floor), Runyard's engine, and LangGraph 1.x without a checkpointer (imported lazily; reported as
skipped when it is not installed: `pip install -e '.[bench]'`).

Overhead per node = time per node minus the bare loop's. The report's `ratio_vs_langgraph` is
Runyard's overhead divided by LangGraph's; the target is <= 0.1.
"""

from __future__ import annotations

import argparse
import json
import operator
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runs.engine import Executor, parse_spec, register_function  # noqa: E402

TARGET_RATIO = 0.1


def step(state: dict, ctx: Any) -> dict:
    """The work every node does, identical in all three runners."""
    return {"x": state["x"] + 1}


def branch(state: dict, ctx: Any) -> dict:
    return {"x": 1}


register_function("bench_step", replace=True)(step)
register_function("bench_branch", replace=True)(branch)


def measure(fn: Callable[[], Any], budget: float) -> float:
    """Median seconds per call, over batches filling roughly `budget` seconds."""
    for _ in range(3):
        fn()
    started = time.perf_counter()
    calls = 0
    while time.perf_counter() - started < budget / 10 or calls < 3:
        fn()
        calls += 1
    per_call = (time.perf_counter() - started) / calls
    batch = max(1, int(budget / 7 / per_call))
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch)
    return statistics.median(samples)


# --- Runyard -----------------------------------------------------------------------------


def engine_chain(n: int) -> Callable[[], Any]:
    nodes: dict[str, dict] = {
        f"n{i}": {"kind": "function", "function": "bench_step"} for i in range(n)
    }
    nodes["end"] = {"kind": "end"}
    names = list(nodes)
    spec = parse_spec(
        {
            "name": f"chain-{n}",
            "start": "n0",
            "nodes": nodes,
            "edges": [{"from": a, "to": b} for a, b in zip(names, names[1:], strict=False)],
            "max_steps": n + 10,
        }
    )

    def run() -> Any:
        *_, last = Executor(spec).run({"x": 0})
        assert last.done and last.state["x"] == n
        return last

    return run


def engine_fanout(n: int) -> Callable[[], Any]:
    branches = {f"b{i}": {"kind": "function", "function": "bench_branch"} for i in range(n)}
    spec = parse_spec(
        {
            "name": f"fanout-{n}",
            "start": "fan",
            "state": {"x": {"reducer": "add", "default": 0}},
            "nodes": {
                "fan": {"kind": "parallel", "branches": list(branches)},
                **branches,
                "end": {"kind": "end"},
            },
            "edges": [{"from": "fan", "to": "end"}],
        }
    )

    def run() -> Any:
        *_, last = Executor(spec).run({"x": 0})
        assert last.done and last.state["x"] == n
        return last

    return run


# --- bare loop ---------------------------------------------------------------------------


def bare_chain(n: int) -> Callable[[], Any]:
    functions = [step] * n

    def run() -> dict:
        state = {"x": 0}
        for fn in functions:
            state = {**state, **fn(state, None)}
        return state

    return run


def bare_fanout(n: int) -> Callable[[], Any]:
    functions = [branch] * n

    def run() -> dict:
        snapshot = {"x": 0}
        total = snapshot["x"]
        for fn in functions:
            total += fn(snapshot, None)["x"]
        return {"x": total}

    return run


# --- LangGraph ---------------------------------------------------------------------------


class ChainState(TypedDict):
    x: int


class FanState(TypedDict):
    x: Annotated[int, operator.add]


def langgraph_chain(n: int) -> Callable[[], Any]:
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(ChainState)
    for i in range(n):
        graph.add_node(f"n{i}", lambda state: step(state, None))
    graph.add_edge(START, "n0")
    for i in range(n - 1):
        graph.add_edge(f"n{i}", f"n{i + 1}")
    graph.add_edge(f"n{n - 1}", END)
    app = graph.compile()

    def run() -> Any:
        result = app.invoke({"x": 0}, {"recursion_limit": n + 10})
        assert result["x"] == n
        return result

    return run


def langgraph_fanout(n: int) -> Callable[[], Any]:
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(FanState)
    for i in range(n):
        graph.add_node(f"b{i}", lambda state: branch(state, None))
        graph.add_edge(START, f"b{i}")
        graph.add_edge(f"b{i}", END)
    app = graph.compile()

    def run() -> Any:
        result = app.invoke({"x": 0})
        assert result["x"] == n
        return result

    return run


def langgraph_version() -> str | None:
    try:
        from importlib.metadata import version

        import langgraph  # noqa: F401
    except ImportError:
        return None
    return version("langgraph")


# --- report ------------------------------------------------------------------------------


CASES: list[tuple[str, int, Callable, Callable, Callable]] = [
    ("chain_10", 10, engine_chain, bare_chain, langgraph_chain),
    ("chain_100", 100, engine_chain, bare_chain, langgraph_chain),
    ("fanout_10", 10, engine_fanout, bare_fanout, langgraph_fanout),
]


def us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def run_case(
    name: str, n: int, engine: Callable, bare: Callable, lg: Callable | None, budget: float
) -> dict:
    bare_s = measure(bare(n), budget) / n
    engine_s = measure(engine(n), budget) / n
    case: dict[str, Any] = {
        "nodes": n,
        "bare_us_per_node": us(bare_s),
        "engine_us_per_node": us(engine_s),
        "engine_overhead_us_per_node": us(engine_s - bare_s),
    }
    if lg is not None:
        lg_s = measure(lg(n), budget) / n
        ratio = (engine_s - bare_s) / max(lg_s - bare_s, 1e-12)
        case.update(
            langgraph_us_per_node=us(lg_s),
            langgraph_overhead_us_per_node=us(lg_s - bare_s),
            ratio_vs_langgraph=round(ratio, 4),
            meets_target=ratio <= TARGET_RATIO,
        )
    return case


def report(budget: float) -> dict:
    lg_version = langgraph_version()
    result: dict[str, Any] = {
        "benchmark": "engine_overhead",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "persistence": "none (no checkpointer, no database)",
        "target_ratio_vs_langgraph": TARGET_RATIO,
        "langgraph": (
            {"status": "ok", "version": lg_version}
            if lg_version
            else {"status": "skipped", "reason": "langgraph is not installed"}
        ),
        "cases": {},
    }
    for name, n, engine, bare, lg in CASES:
        result["cases"][name] = run_case(name, n, engine, bare, lg if lg_version else None, budget)
    if lg_version:
        result["meets_target"] = all(c["meets_target"] for c in result["cases"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    parser.add_argument("--quick", action="store_true", help="shorter measurements (CI smoke)")
    args = parser.parse_args(argv)
    data = report(budget=0.3 if args.quick else 1.5)
    if not args.json:
        print(
            f"{'case':<10} {'bare':>9} {'engine':>9} {'langgraph':>10} {'ratio':>7}  (µs/node)",
            file=sys.stderr,
        )
        for name, case in data["cases"].items():
            print(
                f"{name:<10} {case['bare_us_per_node']:>9.2f} {case['engine_us_per_node']:>9.2f} "
                f"{case.get('langgraph_us_per_node', float('nan')):>10.2f} "
                f"{case.get('ratio_vs_langgraph', float('nan')):>7.3f}",
                file=sys.stderr,
            )
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
