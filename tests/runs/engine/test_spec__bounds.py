"""Validating the largest spec costs well under a second of CPU, whatever it holds."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from runs.engine import check_spec
from runs.engine.validation import MAX_CODE_CHARS, MAX_EXPRESSIONS, MAX_NESTING

MAX_SPEC_BYTES = 1024 * 1024
CPU_SECONDS = 1.0


def _spec(nodes: dict[str, dict], **extra: Any) -> dict:
    names = list(nodes)
    edges = [{"from": a, "to": b} for a, b in zip(names, [*names[1:], "done"], strict=True)]
    return {
        "name": "big",
        "start": names[0],
        "nodes": {**nodes, "done": {"kind": "end"}},
        "edges": edges,
        **extra,
    }


def _transforms(count: int, per_node: int, source: Callable[[int], str]) -> dict[str, dict]:
    nodes = {}
    for i in range(count):
        sources = {f"k{j}": source(i * per_node + j) for j in range(per_node)}
        nodes[f"t{i}"] = {"kind": "transform", "set": sources}
    return nodes


def _timed(spec: dict) -> tuple[float, list[str]]:
    assert len(json.dumps(spec)) <= MAX_SPEC_BYTES
    started = time.process_time()
    problems = check_spec(spec)
    return time.process_time() - started, [str(p) for p in problems]


def _nonce() -> str:
    # Checked sources are cached by text: every test makes its own.
    return uuid.uuid4().hex[:8]


def test_a_megabyte_of_expressions_is_refused_within_a_second() -> None:
    nonce = _nonce()
    nodes = _transforms(
        330, 30, lambda i: f"(state.a_{nonce}_{i} + {i}) * 2 ~ 'x' if state.b else state.c | length"
    )
    seconds, problems = _timed(_spec(nodes))
    assert seconds < CPU_SECONDS
    assert any("too much expression code" in p for p in problems)
    assert any(f"{MAX_EXPRESSIONS:,} expressions" in p for p in problems)


def test_a_spec_just_under_the_caps_is_valid_and_quick() -> None:
    nonce = _nonce()
    # 36 characters of code each, counted 16 more: as much as the caps allow.
    per = MAX_CODE_CHARS // MAX_EXPRESSIONS - 16
    nodes = _transforms(
        MAX_EXPRESSIONS // 10 - 1, 10, lambda i: f"state.v{nonce}{i:05d} + 1 * 2 - 3"[:per]
    )
    seconds, problems = _timed(_spec(nodes))
    assert problems == []
    assert seconds < CPU_SECONDS


def test_dense_code_in_one_expression_is_refused_within_a_second() -> None:
    source = "+".join([f"a{_nonce()}"] * 100_000)
    seconds, problems = _timed(_spec({"t": {"kind": "transform", "set": {"x": source}}}))
    assert seconds < CPU_SECONDS
    assert problems and "too much expression code" in problems[0]


def _llm(prompt: str) -> dict:
    return {"kind": "llm", "provider": "scripted", "responses": ["ok"], "output": "answer",
            "prompt": prompt}  # fmt: skip


def test_a_long_plain_prompt_costs_nothing_but_a_prompt_of_tags_is_refused() -> None:
    plain = f"Context {_nonce()}: " + "plain words and {braces} " * 38_000
    seconds, problems = _timed(_spec({"ask": _llm(plain)}))
    assert problems == [] and seconds < CPU_SECONDS

    tags = f"{{{{ state.x{_nonce()} }}}} " * 45_000
    seconds, problems = _timed(_spec({"ask": _llm(tags)}))
    assert seconds < CPU_SECONDS
    assert any("too much expression code" in p for p in problems)

    unclosed = "{{" * 400_000
    seconds, problems = _timed(_spec({"ask": _llm(unclosed)}))
    assert seconds < CPU_SECONDS and problems


def test_deeply_nested_json_is_refused_without_recursing() -> None:
    deep: Any = 1
    for _ in range(200_000):
        deep = [deep]
    spec = _spec({"t": {"kind": "transform", "set": {"x": "1"}}}, metadata={"deep": deep})
    started = time.process_time()
    problems = [str(p) for p in check_spec(spec)]
    assert time.process_time() - started < CPU_SECONDS
    assert problems == [f"spec: nested more than {MAX_NESTING} levels deep"]


def test_a_hundred_thousand_nodes_and_edges_are_refused_within_a_second() -> None:
    nodes = {f"n{i}": {"kind": "end"} for i in range(100_000)}
    edges = [{"from": "n0", "to": "n1"}] * 100_000
    spec = {"name": "wide", "start": "n0", "nodes": nodes, "edges": edges}
    started = time.process_time()
    problems = [str(p) for p in check_spec(spec)]
    assert time.process_time() - started < CPU_SECONDS
    assert "nodes: 100,000 nodes; at most 1,000" in problems
    assert "edges: 100,000 edges; at most 5,000" in problems


def test_a_huge_input_schema_is_refused_within_a_second() -> None:
    schema = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "pattern": "^a+$"} for i in range(20_000)},
    }
    spec = _spec({"t": {"kind": "transform", "set": {"x": "1"}}}, input_schema=schema)
    seconds, problems = _timed(spec)
    assert seconds < CPU_SECONDS
    assert problems == ["input_schema: too large: at most 2,000 JSON values"]


def test_a_long_chain_checks_paths_to_the_end_in_linear_time() -> None:
    nodes = {f"n{i}": {"kind": "transform", "set": {"x": "1"}} for i in range(999)}
    seconds, problems = _timed(_spec(nodes))
    assert problems == [] and seconds < CPU_SECONDS


def test_thousands_of_problems_are_reported_up_to_a_limit() -> None:
    nodes = {f"n{i}": {"kind": "transform", "set": {}} for i in range(900)}
    problems = check_spec(_spec(nodes))
    assert len(problems) == 201
    assert problems[-1].message.startswith("and ")
