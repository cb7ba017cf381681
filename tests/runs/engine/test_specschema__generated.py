"""The graph spec's JSON Schema, generated from the same field tables validation reads.

What must hold: it is a valid 2020-12 schema; node kinds are a union discriminated on `kind`
with one variant per registered kind; every bound validation applies by a number is there;
expressions are marked; and it is never stricter than validation: every spec the schema
refuses, validation refuses too (checked on hundreds of mutated specs).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from runs.engine import specfields, specschema
from runs.engine.fields import EXPRESSION_MEDIA_TYPE, TEMPLATE_MEDIA_TYPE
from runs.engine.nodes import KINDS
from runs.engine.nodes.parallel import MAX_BRANCHES
from runs.engine.spec import check_spec
from runs.engine.validation import COMMON_FIELDS, EDGE_FIELDS, MAX_EDGES, MAX_NODES, TOP_FIELDS

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "graphs"
SCHEMA = specschema.graph_spec_schema(schema_id="https://runyard.test/graph-spec.json")
VALIDATOR = Draft202012Validator(SCHEMA)


def schema_errors(spec: Any) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(spec)]


def examples() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))]


def every_kind_spec() -> dict[str, Any]:
    """One valid node of every kind."""
    return {
        "$schema": "https://runyard.test/graph-spec.json",
        "name": "all-kinds",
        "input_schema": {"type": "object"},
        "state": {"log": {"reducer": "append", "default": []}, "n": {"reducer": "add"}},
        "start": "t",
        "nodes": {
            "t": {"kind": "transform", "set": {"n": "1"}, "retry": {"max_attempts": 2}},
            "l": {
                "kind": "llm",
                "provider": "scripted",
                "responses": ["hi {{ state.n }}"],
                "prompt": "Say hi",
                "output": "reply",
                "price": {"input": 1, "output": 2},
            },
            "h": {"kind": "http", "method": "get", "url": "https://example.com", "output": "r"},
            "p": {
                "kind": "parallel",
                "branches": ["b1", "b2"],
                "on_error": "collect",
                "errors": "e",
            },
            "b1": {"kind": "transform", "set": {"log": "'b1'"}},
            "b2": {"kind": "transform", "set": {"log": "'b2'"}},
            "a": {"kind": "approval", "message": "ok?", "default": "reject", "timeout": 60},
            "i": {"kind": "input", "prompt": "more?", "output": "more", "schema": {}},
            "s": {"kind": "sleep", "seconds": 0},
            "g": {"kind": "subgraph", "graph": "other", "input": {"x": "state.n"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "t", "to": "l"},
            {"from": "l", "to": "h", "when": "state.n > 0"},
            {"from": "l", "to": "h"},
            {"from": "h", "to": "p"},
            {"from": "p", "to": "a"},
            {"from": "a", "to": "i"},
            {"from": "i", "to": "s"},
            {"from": "s", "to": "g"},
            {"from": "g", "to": "done"},
            {"from": "h", "to": "done", "on_error": True},
        ],
        "max_steps": 50,
        "max_depth": 3,
    }


def test_it_is_a_valid_2020_12_schema_with_a_variant_per_kind() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == specschema.DIALECT
    node = SCHEMA["$defs"]["node"]
    assert node["discriminator"]["propertyName"] == "kind"
    assert sorted(node["discriminator"]["mapping"]) == sorted(KINDS)
    for kind in KINDS:
        variant = SCHEMA["$defs"][f"node_{kind}"]
        assert variant["properties"]["kind"] == {"const": kind, "description": "The node kind."}
        assert variant["additionalProperties"] is False
        # The same names validation accepts: the common fields and the kind's own table.
        assert set(variant["properties"]) == COMMON_FIELDS | KINDS[kind].fields


def test_field_names_and_bounds_come_from_the_tables_validation_reads() -> None:
    assert set(SCHEMA["properties"]) == TOP_FIELDS == specfields.TOP.names
    assert set(SCHEMA["$defs"]["edge"]["properties"]) == EDGE_FIELDS
    assert SCHEMA["properties"]["nodes"]["maxProperties"] == MAX_NODES == 1_000
    assert SCHEMA["properties"]["edges"]["anyOf"][0]["maxItems"] == MAX_EDGES == 5_000
    retry = SCHEMA["$defs"]["node_transform"]["properties"]["retry"]["anyOf"][0]
    assert retry["properties"]["max_attempts"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": specfields.MAX_RETRY_ATTEMPTS,
        "description": "Attempts in all (default 1).",
    }
    branches = SCHEMA["$defs"]["node_parallel"]["properties"]["branches"]
    assert branches["maxItems"] == MAX_BRANCHES and branches["uniqueItems"] is True
    assert SCHEMA["properties"]["max_depth"]["maximum"] == 8


def test_expressions_and_templates_are_marked_strings() -> None:
    edge_when = SCHEMA["$defs"]["edge"]["properties"]["when"]
    assert edge_when["type"] == "string"
    assert edge_when["contentMediaType"] == EXPRESSION_MEDIA_TYPE
    transform = SCHEMA["$defs"]["node_transform"]["properties"]["set"]
    assert transform["additionalProperties"]["contentMediaType"] == EXPRESSION_MEDIA_TYPE
    prompt = SCHEMA["$defs"]["node_llm"]["properties"]["prompt"]
    assert prompt == {**prompt, "type": "string", "contentMediaType": TEMPLATE_MEDIA_TYPE}


def test_valid_specs_are_schema_valid() -> None:
    for spec in [*examples(), every_kind_spec()]:
        assert check_spec(spec) == []
        assert schema_errors(spec) == [], spec["name"]


def test_the_schema_key_is_accepted_and_ignored_but_must_be_a_string() -> None:
    spec = examples()[0]
    assert check_spec({**spec, "$schema": "https://example.com/s.json"}) == []
    assert [p.where for p in check_spec({**spec, "$schema": 5})] == ["$schema"]
    assert schema_errors({**spec, "$schema": 5})


# Values of every JSON type, a few bounds-breaking ones among them.
WRONG = [None, True, 0, -1, 1.5, 10**6, "", " ", "x", "{{", [], ["x"], {}, {"x": 1}]


def mutations(spec: dict[str, Any], rng: random.Random, count: int) -> list[dict[str, Any]]:
    """`spec` with one value somewhere replaced, or one field added or removed."""
    paths: list[list[Any]] = []

    def walk(value: Any, path: list[Any]) -> None:
        paths.append(path)
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, [*path, key])
        elif isinstance(value, list):
            for i, child in enumerate(value):
                walk(child, [*path, i])

    walk(spec, [])
    out = []
    for _ in range(count):
        mutated = copy.deepcopy(spec)
        path = rng.choice(paths[1:])
        parent = mutated
        for part in path[:-1]:
            parent = parent[part]
        action = rng.random()
        if action < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.3 and isinstance(parent, dict):
            parent[rng.choice(["extra", "kind", "output", "when", "retry", "timeout"])] = (
                rng.choice(WRONG)
            )
        else:
            parent[path[-1]] = rng.choice(WRONG)
        out.append(mutated)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_a_spec_the_schema_refuses_is_refused_by_validation(seed: int) -> None:
    rng = random.Random(seed)
    base = [*examples(), every_kind_spec()]
    refused = 0
    for spec in base:
        for mutated in mutations(spec, rng, 60):
            if schema_errors(mutated):
                refused += 1
                assert check_spec(mutated), json.dumps(mutated)[:2000]
    assert refused > 50  # the mutations did exercise the schema
