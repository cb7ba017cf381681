from __future__ import annotations

from typing import Any

import pytest

from runs.engine import NodeError, apply_update, initial_state, parse_spec, validate_input

from .helpers import chain


def spec_with(**state: dict) -> Any:
    return parse_spec(chain(("a", {"kind": "transform", "set": {"x": "1"}}), state=state))


@pytest.mark.parametrize(
    ("reducer", "current", "value", "expected"),
    [
        ("replace", [1], [2], [2]),
        ("append", [1], 2, [1, 2]),
        ("append", [1], [2], [1, [2]]),
        ("extend", [1], [2, 3], [1, 2, 3]),
        ("merge", {"a": 1, "b": 1}, {"b": 2, "c": 3}, {"a": 1, "b": 2, "c": 3}),
        ("add", 1.5, 2, 3.5),
        ("max", 3, 7, 7),
        ("max", 7, 3, 7),
        ("min", 3, 7, 3),
        ("union", [1, 2], [2, 3, 3], [1, 2, 3]),
        ("union", ["a"], "b", ["a", "b"]),
        ("union", [{"k": 1}], [{"k": 1}, {"k": 2}], [{"k": 1}, {"k": 2}]),
    ],
)
def test_reducers(reducer: str, current: Any, value: Any, expected: Any) -> None:
    spec = spec_with(k={"reducer": reducer})
    assert apply_update(spec, {"k": current}, {"k": value})["k"] == expected


@pytest.mark.parametrize(
    ("reducer", "value", "expected"),
    [
        ("append", 1, [1]),
        ("extend", [1], [1]),
        ("merge", {"a": 1}, {"a": 1}),
        ("add", 2, 2),
        ("max", 2, 2),
        ("min", 2, 2),
        ("union", [1, 1], [1]),
    ],
)
def test_reducers_on_a_missing_key(reducer: str, value: Any, expected: Any) -> None:
    spec = spec_with(k={"reducer": reducer})
    assert apply_update(spec, {}, {"k": value}) == {"k": expected}


def test_apply_update_returns_a_new_dict_and_never_mutates() -> None:
    spec = spec_with(log={"reducer": "append"}, meta={"reducer": "merge"})
    state = {"log": [1], "meta": {"a": 1}, "other": "x"}
    new = apply_update(spec, state, {"log": 2, "meta": {"b": 2}, "other": "y"})
    assert state == {"log": [1], "meta": {"a": 1}, "other": "x"}
    assert new == {"log": [1, 2], "meta": {"a": 1, "b": 2}, "other": "y"}
    assert apply_update(spec, state, {}) is not state


@pytest.mark.parametrize(
    ("reducer", "current", "value"),
    [
        ("extend", [], 3),
        ("merge", {}, [1]),
        ("add", 1, "x"),
        ("add", True, 1),
        ("append", "s", 1),
        ("max", "a", 1),
    ],
)
def test_reducer_type_errors_are_fatal_node_errors(reducer: str, current: Any, value: Any) -> None:
    spec = spec_with(k={"reducer": reducer})
    with pytest.raises(NodeError) as info:
        apply_update(spec, {"k": current}, {"k": value})
    assert info.value.code == "reducer_error" and info.value.fatal


def test_initial_state_merges_input_through_the_reducers() -> None:
    spec = spec_with(
        messages={"reducer": "append", "default": ["system ready"]},
        cost={"reducer": "add", "default": 1},
        tags={"reducer": "union", "default": ["a"]},
        mode={"default": "fast"},
    )
    state = initial_state(spec, {"messages": "hello", "cost": 2, "tags": ["a", "b"], "text": "t"})
    assert state == {
        "messages": ["system ready", "hello"],
        "cost": 3,
        "tags": ["a", "b"],
        "mode": "fast",
        "text": "t",
    }


def test_initial_state_does_not_share_defaults_between_runs() -> None:
    spec = spec_with(items={"reducer": "extend", "default": [{"n": 1}]})
    first = initial_state(spec, {})
    first["items"][0]["n"] = 99
    assert initial_state(spec, {})["items"] == [{"n": 1}]


def test_validate_input_against_the_schema_names_each_field() -> None:
    spec = parse_spec(
        chain(
            ("a", {"kind": "transform", "set": {"x": "1"}}),
            input_schema={
                "type": "object",
                "required": ["text", "lang"],
                "properties": {
                    "text": {"type": "string"},
                    "opts": {"type": "object", "properties": {"n": {"type": "integer"}}},
                },
            },
        )
    )
    problems = validate_input(spec, {"text": 5, "opts": {"n": "x"}})
    wheres = {p.where for p in problems}
    assert wheres == {"input.lang", "input.text", "input.opts.n"}
    assert validate_input(spec, {"text": "ok", "lang": "en"}) == []


def test_input_must_be_an_object_even_without_a_schema() -> None:
    spec = spec_with()
    assert validate_input(spec, {"any": 1}) == []
    assert validate_input(spec, [1, 2])[0].where == "input"
