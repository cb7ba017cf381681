from __future__ import annotations

import pytest

from runs.engine import Problem, SpecError, check_spec, parse_spec

from .helpers import chain


def problems(spec: dict) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    return info.value.problems


def has(found: list[Problem], where: str, *words: str) -> bool:
    return any(p.where == where and all(w in p.message for w in words) for p in found)


def test_every_problem_is_reported_at_once_each_naming_its_node_or_edge() -> None:
    spec = {
        "name": "broken",
        "state": {"log": {"reducer": "appendd"}},
        "start": "a",
        "nodes": {
            "a": {"kind": "transform", "set": {"x": "state.y +"}},
            "b": {"kind": "teleport"},
            "c": {"kind": "function", "function": "os.system"},
            "d": {"kind": "parallel", "branches": ["a", "nowhere"]},
            "e": {"kind": "subgraph", "graph": ""},
            "f": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "hi",
                "output": "o",
                "responses": ["x"],
                "retry": {"max_attempts": 0, "backoff": -1},
                "timeout": -5,
            },
            "island": {"kind": "transform", "set": {"z": "1"}},
            "loop": {"kind": "transform", "set": {"z": "1"}},
            "end": {"kind": "end"},
        },
        "edges": [
            {"from": "a", "to": "missing"},
            {"from": "nowhere", "to": "a"},
            {"from": "f", "to": "end", "when": "state.__class__"},
            {"from": "loop", "to": "loop"},
            {"from": "a", "to": "f", "when": "state.x"},
            {"from": "a", "to": "loop", "when": "state.y"},
            {"from": "a", "to": "b", "on_error": True},
        ],
    }
    found = problems(spec)
    assert has(found, "state.log", "unknown reducer 'appendd'")
    assert has(found, "nodes.a", "set.x")
    assert has(found, "nodes.b", "unknown kind 'teleport'")
    assert has(found, "nodes.c", "'os.system' is not registered")
    assert has(found, "nodes.d", "unknown node 'nowhere'")
    assert has(found, "nodes.e", "`graph`")
    assert has(found, "nodes.f", "retry.max_attempts")
    assert has(found, "nodes.f", "retry.backoff")
    assert has(found, "nodes.f", "`timeout`")
    assert has(found, "edges[0]", "unknown node 'missing'")
    assert has(found, "edges[1]", "unknown node 'nowhere'")
    assert has(found, "edges[2]", "`when`", "'__class__'")
    assert has(found, "nodes.island", "unreachable")
    assert has(found, "nodes.loop", "no path to an `end`")


def test_start_naming_an_unknown_node() -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": "1"}}))
    spec["start"] = "ghost"
    assert has(problems(spec), "start", "unknown node 'ghost'")


def test_missing_start() -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": "1"}}))
    del spec["start"]
    assert has(problems(spec), "start", "missing")


def test_unreachable_node() -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": "1"}}))
    spec["nodes"]["stray"] = {"kind": "end"}
    assert has(problems(spec), "nodes.stray", "unreachable from start node 'a'")


def test_node_without_a_path_to_an_end() -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": "1"}}))
    spec["nodes"]["spin"] = {"kind": "transform", "set": {"n": "1"}}
    spec["edges"] += [
        {"from": "a", "to": "spin", "when": "state.x"},
        {"from": "spin", "to": "spin"},
    ]
    assert has(problems(spec), "nodes.spin", "no path to an `end`")


def test_node_with_no_edges_has_no_path_to_an_end() -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": "1"}}))
    spec["nodes"]["dead"] = {"kind": "transform", "set": {"n": "1"}}
    spec["edges"].append({"from": "a", "to": "dead", "when": "state.x"})
    assert has(problems(spec), "nodes.dead", "no path to an `end`")


def test_graph_without_an_end_node() -> None:
    spec = {
        "name": "x",
        "start": "a",
        "nodes": {"a": {"kind": "transform", "set": {"x": "1"}}},
        "edges": [],
    }
    found = problems(spec)
    assert has(found, "nodes", "no `end` node")
    assert has(found, "nodes.a", "no path to an `end`")


@pytest.mark.parametrize("reducer", ["sum", "", None, 3])
def test_bad_reducer(reducer: object) -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": "1"}}), state={"x": {"reducer": reducer}})
    assert has(problems(spec), "state.x", "unknown reducer")


def test_reducer_default_must_fit() -> None:
    spec = chain(
        ("a", {"kind": "transform", "set": {"x": "1"}}),
        state={"x": {"reducer": "append", "default": 3}, "n": {"reducer": "add", "default": "1"}},
    )
    found = problems(spec)
    assert has(found, "state.x", "list default")
    assert has(found, "state.n", "number default")


@pytest.mark.parametrize("source", ["state.x +", "state.__class__", "().__class__.__mro__", ""])
def test_expression_that_does_not_compile(source: str) -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": source}}))
    assert has(problems(spec), "nodes.a", "set.x")


def test_template_that_does_not_compile() -> None:
    spec = chain(
        (
            "a",
            {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "{{ state.x ",
                "output": "o",
                "responses": ["r"],
            },
        )
    )
    assert has(problems(spec), "nodes.a", "`prompt`")


def test_parallel_branch_naming_an_unknown_node() -> None:
    spec = chain(("p", {"kind": "parallel", "branches": ["ghost"]}))
    assert has(problems(spec), "nodes.p", "branches[0]", "unknown node 'ghost'")


def test_parallel_branch_rules() -> None:
    spec = chain(
        ("p", {"kind": "parallel", "branches": ["ok", "ask", "ok"], "on_error": "sometimes"}),
        ("after", {"kind": "transform", "set": {"x": "1"}}),
    )
    spec["nodes"]["ok"] = {"kind": "transform", "set": {"y": "1"}}
    spec["nodes"]["ask"] = {"kind": "approval"}
    spec["edges"].append({"from": "ok", "to": "after"})
    found = problems(spec)
    assert has(found, "nodes.p", "listed twice")
    assert has(found, "nodes.p", "`on_error`")
    assert has(found, "nodes.ask", "cannot be a branch")
    assert has(found, "nodes.ok", "takes no edges")


def test_subgraph_naming_nothing() -> None:
    spec = chain(("s", {"kind": "subgraph"}))
    assert has(problems(spec), "nodes.s", "`graph` must name the graph")


def test_function_not_registered() -> None:
    spec = chain(("f", {"kind": "function", "function": "no_such_function"}))
    assert has(problems(spec), "nodes.f", "'no_such_function' is not registered")


@pytest.mark.parametrize(
    ("retry", "timeout", "message"),
    [
        ({"max_attempts": 0}, None, "retry.max_attempts"),
        ({"max_attempts": 2.5}, None, "retry.max_attempts"),
        ({"max_attempts": True}, None, "retry.max_attempts"),
        ({"max_attempts": 2, "backoff": "1s"}, None, "retry.backoff"),
        ({"max_attempts": 2, "max_backoff": -1}, None, "retry.max_backoff"),
        ({"attempts": 2}, None, "unknown retry field"),
        ("3 times", None, "`retry` must be an object"),
        (None, 0, "`timeout`"),
        (None, "30", "`timeout`"),
    ],
)
def test_bad_retry_or_timeout(retry: object, timeout: object, message: str) -> None:
    node: dict = {"kind": "transform", "set": {"x": "1"}}
    if retry is not None:
        node["retry"] = retry
    if timeout is not None:
        node["timeout"] = timeout
    assert has(problems(chain(("a", node))), "nodes.a", message)


def test_unknown_fields_are_reported() -> None:
    spec = chain(
        (
            "a",
            {
                "kind": "llm",
                "provider": "scripted",
                "promt": "typo",
                "output": "o",
                "responses": ["r"],
            },
        ),
        colour="blue",
    )
    found = problems(spec)
    assert has(found, "nodes.a", "unknown field 'promt'")
    assert has(found, "colour", "unknown top-level field")


def test_per_kind_required_fields() -> None:
    spec = chain(
        ("l", {"kind": "llm", "provider": "telepathy"}),
        ("h", {"kind": "http", "method": "FETCH"}),
        ("ap", {"kind": "approval", "default": "maybe", "on_reject": "nowhere"}),
        ("i", {"kind": "input", "schema": {"type": 12}}),
        ("s", {"kind": "sleep"}),
    )
    found = problems(spec)
    assert has(found, "nodes.l", "unknown provider 'telepathy'")
    assert has(found, "nodes.l", "`output`")
    assert has(found, "nodes.h", "`method`")
    assert has(found, "nodes.h", "`url`")
    assert has(found, "nodes.ap", "`default`")
    assert has(found, "nodes.ap", "unknown node 'nowhere'")
    assert has(found, "nodes.i", "`output`")
    assert has(found, "nodes.i", "not a valid JSON Schema")
    assert has(found, "nodes.s", "`seconds` is required")


def test_scripted_llm_needs_responses() -> None:
    spec = chain(
        (
            "l",
            {"kind": "llm", "provider": "scripted", "prompt": "p", "output": "o", "fail_times": -1},
        )
    )
    found = problems(spec)
    assert has(found, "nodes.l", "`responses`")
    assert has(found, "nodes.l", "`fail_times`")


def test_openai_llm_needs_a_model_and_rejects_scripted_fields() -> None:
    spec = chain(
        (
            "l",
            {"kind": "llm", "provider": "openai", "prompt": "p", "output": "o", "responses": ["x"]},
        )
    )
    found = problems(spec)
    assert has(found, "nodes.l", "`model`")
    assert has(found, "nodes.l", "'responses' does not apply")


def test_top_level_limits_and_schema() -> None:
    spec = chain(
        ("a", {"kind": "transform", "set": {"x": "1"}}),
        max_steps=0,
        max_depth="5",
        max_resurrections=-1,
        input_schema={"type": "nonsense"},
    )
    found = problems(spec)
    assert {p.where for p in found} >= {
        "max_steps",
        "max_depth",
        "max_resurrections",
        "input_schema",
    }


def test_edge_from_an_end_node() -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": "1"}}))
    spec["edges"].append({"from": "done", "to": "a"})
    assert has(problems(spec), "edges[1]", "leaves end node")


def test_bad_node_names_and_missing_name() -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": "1"}}))
    spec["nodes"]["bad@name"] = spec["nodes"].pop("a")
    spec["start"] = "bad@name"
    spec["edges"][0]["from"] = "bad@name"
    del spec["name"]
    found = check_spec(spec)
    assert has(found, "nodes.bad@name", "node names")
    assert has(found, "name", "non-empty string")


def test_artifacts_are_validated() -> None:
    spec = chain(
        (
            "a",
            {
                "kind": "transform",
                "set": {"x": "1"},
                "artifacts": [
                    {"name": "r.json"},
                    {"name": "t.txt", "text": "{{ x"},
                    {"name": "j.json", "json": "state.__class__"},
                ],
            },
        )
    )
    found = problems(spec)
    assert has(found, "nodes.a", "artifacts[0] needs exactly one")
    assert has(found, "nodes.a", "artifacts[1].text")
    assert has(found, "nodes.a", "artifacts[2].json")


def test_valid_graph_with_every_kind_parses() -> None:
    spec = chain(
        ("t", {"kind": "transform", "set": {"x": "1"}}),
        ("f", {"kind": "function", "function": "word_count", "args": {"field": "text"}}),
        (
            "l",
            {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "p",
                "output": "o",
                "responses": ["r"],
            },
        ),
        ("h", {"kind": "http", "url": "https://example.com/{{ state.x }}", "output": "r"}),
        ("ap", {"kind": "approval", "message": "ok?", "timeout": 60, "default": "reject"}),
        ("i", {"kind": "input", "prompt": "name?", "output": "name"}),
        ("p", {"kind": "parallel", "branches": ["b1", "b2"], "on_error": "collect"}),
        ("s", {"kind": "sleep", "seconds": 0}),
        ("sub", {"kind": "subgraph", "graph": "child", "input": {"q": "state.x"}}),
    )
    spec["nodes"]["b1"] = {"kind": "transform", "set": {"y": "1"}}
    spec["nodes"]["b2"] = {
        "kind": "llm",
        "provider": "scripted",
        "prompt": "p",
        "output": "z",
        "responses": ["r"],
    }
    assert check_spec(spec) == []


def test_unhashable_values_where_names_are_expected_are_problems_not_errors() -> None:
    # Found by schemathesis: `{"role": {}}` reached a set lookup and raised TypeError.
    from runs.engine.spec import check_spec

    spec = {
        "name": "g",
        "start": "a",
        "state": {"k": {"reducer": ["append"]}},
        "nodes": {
            "a": {
                "kind": "llm",
                "provider": "scripted",
                "responses": ["x"],
                "messages": [{"role": {"x": 1}, "content": "hi"}],
                "output": "out",
            },
            "done": {"kind": "end"},
        },
        "edges": [{"from": "a", "to": "done"}],
    }
    wheres = {p.where for p in check_spec(spec)}
    assert wheres == {"state.k", "nodes.a"}


def test_a_start_that_is_an_object_is_a_problem_not_an_error() -> None:
    from runs.engine.spec import check_spec

    spec = {"name": "g", "start": {"a": 1}, "nodes": {"done": {"kind": "end"}}}
    assert [p.where for p in check_spec(spec)] == ["start"]


def test_parallel_on_conflict_takes_fail_or_last_wins() -> None:
    for value in ("fail", "last_wins"):
        spec = chain(("p", {"kind": "parallel", "branches": ["b"], "on_conflict": value}))
        spec["nodes"]["b"] = {"kind": "transform", "set": {"y": "1"}}
        assert check_spec(spec) == []
    spec = chain(("p", {"kind": "parallel", "branches": ["b"], "on_conflict": "first_wins"}))
    spec["nodes"]["b"] = {"kind": "transform", "set": {"y": "1"}}
    assert has(problems(spec), "nodes.p", "`on_conflict`", "first_wins")
