"""The graph spec's JSON Schema (draft 2020-12), generated from the field tables.

Node kinds form a union discriminated on `kind`: one variant per registered kind, each the
common node fields plus the kind's own `field_table`. Expressions and templates are strings
marked with their `contentMediaType`. Everything validation bounds by a number (1,000 nodes,
5,000 edges, 64 branches, retry attempts...) is a bound here too.

The schema is never stricter than validation (a spec it refuses, validation refuses), and it
cannot say everything validation checks: that expressions parse, that edges name existing
nodes, that every node reaches an `end`.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from . import specfields
from .fields import Field
from .nodes import KINDS, NodeKind

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Where the JSON Schema is published (the API serves it; `$schema` in a spec may name it).
PUBLISHED_PATH = "/api/v1/schemas/graph-spec.json"
_LOCAL = "#/$defs/"


def _node_variant(kind: NodeKind) -> dict[str, Any]:
    base = [f for f in specfields.COMMON.fields if f.name != "kind"]
    tag = Field("kind", {"const": kind.kind}, required=True, doc="The node kind.")
    schema = kind.field_table.object_schema(extra=[tag, *base])
    schema["title"] = f"{kind.kind} node"
    # The first paragraph of the kind's module docstring (one file per kind).
    doc = (sys.modules[type(kind).__module__].__doc__ or "").strip().split("\n\n")[0]
    if doc:
        schema["description"] = doc
    return schema


def definitions() -> dict[str, Any]:
    """The named parts of the schema, their `$ref`s local (`#/$defs/<name>`)."""
    kinds = sorted(KINDS)
    defs: dict[str, Any] = {
        "node": {
            "title": "Node",
            "description": "One node: `kind` picks the variant and the fields it accepts.",
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"enum": kinds}},
            "oneOf": [{"$ref": f"{_LOCAL}node_{kind}"} for kind in kinds],
            # OpenAPI 3.1's discriminator; plain JSON Schema tools read it as an annotation.
            "discriminator": {
                "propertyName": "kind",
                "mapping": {kind: f"{_LOCAL}node_{kind}" for kind in kinds},
            },
        },
        "edge": {
            "title": "Edge",
            **specfields.EDGE.object_schema(),
        },
        "state_key": {
            "title": "State key",
            **specfields.STATE_ENTRY.object_schema(),
        },
    }
    for kind in kinds:
        defs[f"node_{kind}"] = _node_variant(KINDS[kind])
    return defs


def root(*, name_max_length: int | None = None) -> dict[str, Any]:
    """The top level of a spec, without `$defs`."""
    schema = specfields.TOP.object_schema()
    schema["title"] = "Runyard graph spec"
    schema["description"] = (
        "A graph: nodes (by name, each with a `kind`), the edges between them in priority "
        "order, the state's reducers, and where runs start. Validation also checks what a "
        "schema cannot: expressions parse, edges name existing nodes, every node is reachable "
        "and reaches an `end`."
    )
    if name_max_length is not None:
        schema["properties"]["name"]["maxLength"] = name_max_length
    return schema


def with_refs(schema: Any, prefix: str) -> Any:
    """`schema` with local `#/$defs/<name>` references pointing at `prefix + name` instead."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_LOCAL):
                out[key] = prefix + value[len(_LOCAL) :]
            elif key == "mapping" and isinstance(value, dict):
                out[key] = {k: with_refs({"$ref": v}, prefix)["$ref"] for k, v in value.items()}
            else:
                out[key] = with_refs(value, prefix)
        return out
    if isinstance(schema, list):
        return [with_refs(item, prefix) for item in schema]
    return copy.copy(schema)


def graph_spec_schema(
    *, schema_id: str | None = None, name_max_length: int | None = None
) -> dict[str, Any]:
    """The whole, standalone JSON Schema document."""
    document: dict[str, Any] = {"$schema": DIALECT}
    if schema_id:
        document["$id"] = schema_id
    document.update(root(name_max_length=name_max_length))
    document["$defs"] = definitions()
    return document
