"""Declarative field tables: what each part of a graph spec accepts, once.

A `Field` names a spec field, says whether it is required, and carries the JSON Schema
(2020-12) fragment of its type and bounds. Node kinds, the top level, edges and state entries
each declare a tuple of fields; validation (validation.py, the kinds' `validate`) takes field
names and bounds from those tables, and the published JSON Schema (specschema.py) is generated
from the very same tables, so the two cannot drift apart.

The fragments describe what validation accepts, never more strictly: a spec the schema refuses
is one validation refuses too. Validation also checks what a schema cannot say (expressions
parse, edges name existing nodes, every node reaches an `end`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]

# Annotations only (2020-12 `contentMediaType`): editors and readers see what a string holds.
EXPRESSION_MEDIA_TYPE = "text/x-runyard-expression"
TEMPLATE_MEDIA_TYPE = "text/x-runyard-template"
# A string with something besides whitespace: what `str.strip()` leaves non-empty. The
# characters are spelled out because `\s` means different sets in Python and ECMA regexes.
PY_WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{PY_WHITESPACE}]"


@dataclass(frozen=True)
class Field:
    """One field of a spec object: its name, its JSON Schema, and whether it is required."""

    name: str
    schema: Schema
    required: bool = False
    doc: str = ""

    def json_schema(self) -> Schema:
        out = dict(self.schema)
        if self.doc and "description" not in out:
            out["description"] = self.doc
        return out


@dataclass(frozen=True)
class Table:
    """The fields of one kind of spec object, and rules that span fields (JSON Schema)."""

    fields: tuple[Field, ...]
    #: Extra keywords of the object's schema: `allOf`, `dependentSchemas`, `not`...
    rules: Schema = field(default_factory=dict)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    def get(self, name: str) -> Field:
        for item in self.fields:
            if item.name == name:
                return item
        raise KeyError(name)

    def object_schema(self, *, extra: Iterable[Field] = (), closed: bool = True) -> Schema:
        every = [*extra, *self.fields]
        out: Schema = {
            "type": "object",
            "properties": {f.name: f.json_schema() for f in every},
        }
        required = [f.name for f in every if f.required]
        if required:
            out["required"] = required
        if closed:
            out["additionalProperties"] = False
        out.update(self.rules)
        return out


# --- types ---------------------------------------------------------------------------------


def nullable(schema: Schema) -> Schema:
    """`schema` or JSON null (validation treats a null optional field as absent)."""
    return {"anyOf": [schema, {"type": "null"}]}


def any_json(description: str = "") -> Schema:
    """Any JSON value: validation does not look inside (free text, metadata, labels)."""
    return {"description": description} if description else {}


def string(
    *, min_length: int | None = None, max_length: int | None = None, pattern: str | None = None
) -> Schema:
    out: Schema = {"type": "string"}
    if min_length is not None:
        out["minLength"] = min_length
    if max_length is not None:
        out["maxLength"] = max_length
    if pattern is not None:
        out["pattern"] = pattern
    return out


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Schema:
    out: Schema = {"type": "integer"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def number(
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
) -> Schema:
    out: Schema = {"type": "number"}
    if minimum is not None:
        out["minimum"] = minimum
    if exclusive_minimum is not None:
        out["exclusiveMinimum"] = exclusive_minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def boolean() -> Schema:
    return {"type": "boolean"}


def enum(*values: Any) -> Schema:
    return {"enum": list(values)}


def enum_ignoring_case(*values: str) -> Schema:
    """A string equal to one of `values` in any letter case (e.g. HTTP methods)."""
    alternatives = "|".join(
        "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in value)
        for value in values
    )
    return {"type": "string", "pattern": f"^(?:{alternatives})$", "examples": list(values)}


def expression() -> Schema:
    """A sandboxed expression (`state.x > 3`): a non-blank string that must parse."""
    return {
        "type": "string",
        "minLength": 1,
        "pattern": NOT_BLANK,
        "contentMediaType": EXPRESSION_MEDIA_TYPE,
        "description": "An expression over `state` (Jinja2 syntax, sandboxed).",
    }


def template() -> Schema:
    """A sandboxed template (`Hello {{ state.name }}`): any string that must parse."""
    return {
        "type": "string",
        "contentMediaType": TEMPLATE_MEDIA_TYPE,
        "description": "A template rendered against `state` (Jinja2 syntax, sandboxed).",
    }


def node_ref() -> Schema:
    return {"type": "string", "minLength": 1, "description": "The name of a node of this graph."}


def state_key() -> Schema:
    return {"type": "string", "minLength": 1, "description": "A state key the node writes."}


def json_schema_object() -> Schema:
    return {"type": "object", "description": "A JSON Schema (draft 2020-12)."}


def array(
    items: Schema,
    *,
    min_items: int | None = None,
    max_items: int | None = None,
    unique: bool = False,
) -> Schema:
    out: Schema = {"type": "array", "items": items}
    if min_items is not None:
        out["minItems"] = min_items
    if max_items is not None:
        out["maxItems"] = max_items
    if unique:
        out["uniqueItems"] = True
    return out


def mapping(values: Schema, *, min_properties: int | None = None) -> Schema:
    """An object whose keys are free and whose values all have one schema."""
    out: Schema = {"type": "object", "additionalProperties": values}
    if min_properties is not None:
        out["minProperties"] = min_properties
    return out


def exactly_one_of(*names: str) -> Schema:
    """Rule: exactly one of these fields is present."""
    return {"oneOf": [{"required": [name]} for name in names]}


def not_both(first: str, second: str) -> Schema:
    return {"not": {"required": [first, second]}}
