from __future__ import annotations

import hashlib
import json

import pytest

from runs.engine import GraphSpec, SpecError, canonical_json, check_spec, parse_spec

from .helpers import chain

SPEC = chain(
    ("classify", {"kind": "transform", "set": {"label": "'urgent'"}}),
    state={"messages": {"reducer": "append", "default": []}, "cost": {"reducer": "add"}},
    input_schema={"type": "object", "required": ["text"]},
    max_steps=10,
    max_resurrections=2,
)

YAML = """
name: yaml-graph
start: greet
nodes:
  greet:
    kind: transform
    set:
      greeting: "'hello ' ~ state.who"
  done: {kind: end}
edges:
  - {from: greet, to: done}
"""


def test_parses_a_dict_into_an_immutable_spec() -> None:
    spec = parse_spec(SPEC)
    assert isinstance(spec, GraphSpec)
    assert (spec.name, spec.start, spec.max_steps, spec.max_resurrections) == (
        "test",
        "classify",
        10,
        2,
    )
    assert spec.max_depth == 5
    assert spec.reducers == {"messages": "append", "cost": "add"}
    assert spec.defaults == {"messages": []}
    assert spec.input_schema == {"type": "object", "required": ["text"]}
    assert set(spec.nodes) == {"classify", "done"}
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_hash_is_sha256_of_canonical_json() -> None:
    spec = parse_spec(SPEC)
    expected = hashlib.sha256(
        json.dumps(SPEC, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert spec.hash == expected == hashlib.sha256(canonical_json(SPEC).encode()).hexdigest()


def test_same_spec_from_json_text_and_bytes_has_the_same_hash() -> None:
    text = json.dumps(SPEC, indent=4)
    assert parse_spec(text).hash == parse_spec(text.encode()).hash == parse_spec(SPEC).hash


def test_parses_yaml_text() -> None:
    spec = parse_spec(YAML)
    assert spec.name == "yaml-graph"
    assert spec.nodes["greet"]["set"] == {"greeting": "'hello ' ~ state.who"}


def test_spec_is_copied_so_later_changes_to_the_input_do_not_leak() -> None:
    data = json.loads(json.dumps(SPEC))
    spec = parse_spec(data)
    data["nodes"]["classify"]["set"]["label"] = "'changed'"
    assert spec.nodes["classify"]["set"]["label"] == "'urgent'"


def test_garbage_text_is_one_problem() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("{not: [valid")
    assert [p.where for p in info.value.problems] == ["spec"]


def test_non_object_document_is_a_problem() -> None:
    assert check_spec("- just\n- a list\n")[0].where == "spec"


def test_check_spec_returns_problems_without_raising() -> None:
    assert check_spec(SPEC) == []
    assert check_spec({"name": "x"})


def test_str_of_spec_error_lists_every_problem() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "x", "nodes": {"a": {"kind": "nope"}}, "edges": []})
    text = str(info.value)
    for problem in info.value.problems:
        assert f"{problem.where}: {problem.message}" in text
