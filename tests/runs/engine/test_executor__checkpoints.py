"""Resuming from any checkpoint gives the same final state as an uninterrupted run."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.engine import Executor, check_spec, initial_state, parse_spec

WORDS = st.sampled_from(["alpha", "beta", "gamma {{ state.acc }}", "delta", "eps {{ state.n }}"])


@st.composite
def leaf(draw: st.DrawFn, name: str) -> dict:
    """A transform or scripted-llm node (used as a stage or as a parallel branch)."""
    if draw(st.booleans()):
        k = draw(st.integers(1, 9))
        return {
            "kind": "transform",
            "set": {"acc": str(k), f"seen_{name}": f"state.acc * {k} + (state.n or 0)"},
        }
    return {
        "kind": "llm",
        "provider": "scripted",
        "prompt": f"{name}: {{{{ state.acc }}}}",
        "output": "log",
        "responses": draw(st.lists(WORDS, min_size=1, max_size=3)),
        "cycle": draw(st.booleans()),
    }


@st.composite
def graphs(draw: st.DrawFn) -> dict:
    nodes: dict[str, dict] = {}
    edges: list[dict] = []
    stages = draw(st.integers(1, 5))
    entries: list[str] = []
    exits: list[list[str]] = []  # nodes that lead on to the next stage
    for i in range(stages):
        kind = draw(st.sampled_from(["leaf", "parallel", "branch"]))
        name = f"s{i}"
        if kind == "leaf":
            nodes[name] = draw(leaf(name))
            entries.append(name)
            exits.append([name])
        elif kind == "parallel":
            branches = [f"{name}_b{j}" for j in range(draw(st.integers(2, 3)))]
            for branch in branches:
                nodes[branch] = draw(leaf(branch))
            nodes[name] = {"kind": "parallel", "branches": branches}
            entries.append(name)
            exits.append([name])
        else:
            left, right = f"{name}_l", f"{name}_r"
            nodes[name] = {"kind": "transform", "set": {"n": "1"}}
            nodes[left], nodes[right] = draw(leaf(left)), draw(leaf(right))
            modulus = draw(st.integers(2, 3))
            edges += [
                {"from": name, "to": left, "when": f"state.acc % {modulus} == 0"},
                {"from": name, "to": right},
            ]
            entries.append(name)
            exits.append([left, right])
    nodes["loop"] = {"kind": "transform", "set": {"rounds": "1"}}
    nodes["done"] = {"kind": "end"}
    for i in range(stages):
        target = entries[i + 1] if i + 1 < stages else "loop"
        edges += [{"from": node, "to": target} for node in exits[i]]
    rounds = draw(st.integers(1, 3))
    edges += [
        {"from": "loop", "to": "done", "when": f"state.rounds >= {rounds}"},
        {"from": "loop", "to": entries[0]},
    ]
    return {
        "name": "generated",
        "start": entries[0],
        "state": {
            "acc": {"reducer": "add", "default": 1},
            "log": {"reducer": "append", "default": []},
            "rounds": {"reducer": "add", "default": 0},
            "n": {"reducer": "max"},
        },
        "nodes": nodes,
        "edges": edges,
        "max_steps": 200,
    }


def roundtrip(value: Any) -> Any:
    """What a database checkpoint gives back."""
    return json.loads(json.dumps(value))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(0, 5))
def test_resuming_from_any_checkpoint_reaches_the_same_final_state(raw: dict, n: int) -> None:
    assert check_spec(raw) == []
    spec = parse_spec(raw)
    results = list(Executor(spec).run(initial_state(spec, {"n": n})))
    final = results[-1]
    assert final.done, final.run_error
    path = [r.node for r in results]
    for k, checkpoint in enumerate(results[:-1]):
        resumed = list(
            Executor(parse_spec(roundtrip(raw))).run(
                roundtrip(checkpoint.state), roundtrip(checkpoint.position)
            )
        )
        assert [r.node for r in resumed] == path[k + 1 :]
        assert resumed[-1].done
        assert resumed[-1].state == roundtrip(final.state)
        assert resumed[-1].position == final.position
        assert [r.index for r in resumed] == [r.index for r in results[k + 1 :]]
