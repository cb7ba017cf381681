"""The field tables of a spec's top level, state entries, edges and the fields every node has.

Node kinds declare their own fields (`NodeKind.field_table`, one file per kind in nodes/);
validation.py and specschema.py both read these tables.
"""

from __future__ import annotations

import re

from . import fields as f
from .fields import Field, Table
from .nodes.subgraph import MAX_DEPTH_CEILING
from .state import REDUCERS
from .subscriptions import EVENT_NAME, MAX_CONCURRENCY, MAX_TRIGGER_INPUT_KEYS, MAX_TRIGGERS

# What one spec may hold, so validating the largest spec (MAX_SPEC_BYTES, 1 MB) costs well
# under a second of the web process's CPU (see validation.py).
MAX_NODES = 1_000
MAX_EDGES = 5_000
NODE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$"
NODE_NAME = re.compile(NODE_NAME_PATTERN)
MAX_RETRY_ATTEMPTS = 100
LIST_REDUCERS = ("append", "extend", "union")
NUMBER_REDUCERS = ("add", "max", "min")

TOP = Table(
    (
        Field(
            "$schema",
            f.string(),
            doc="The URL of this JSON Schema, for editors; ignored by validation.",
        ),
        Field(
            "name",
            f.string(min_length=1, pattern=f.NOT_BLANK),
            required=True,
            doc="The graph's name; a new spec makes its next version.",
        ),
        Field("description", f.any_json(), doc="Free text."),
        Field("version", f.any_json(), doc="Your own label; versions are numbered on storing."),
        Field("metadata", f.any_json(), doc="Your own data, stored with the spec."),
        Field(
            "input_schema",
            f.nullable(f.json_schema_object()),
            doc="JSON Schema (2020-12) that run input must match, checked before the run exists.",
        ),
        Field(
            "state",
            f.nullable({"type": "object", "additionalProperties": {"$ref": "#/$defs/state_key"}}),
            doc="State keys: how updates merge (`reducer`) and their initial value (`default`).",
        ),
        Field("start", f.node_ref(), required=True, doc="The node runs start at."),
        Field(
            "nodes",
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_NODES,
                "propertyNames": {"pattern": NODE_NAME_PATTERN},
                "additionalProperties": {"$ref": "#/$defs/node"},
            },
            required=True,
            doc="Node name → node, discriminated by `kind`.",
        ),
        Field(
            "edges",
            f.nullable(f.array({"$ref": "#/$defs/edge"}, max_items=MAX_EDGES)),
            doc="In priority order: the first edge whose `when` holds is taken.",
        ),
        Field("max_steps", f.integer(minimum=1), doc="Steps one run may take (default 100)."),
        Field(
            "max_resurrections",
            f.integer(minimum=0),
            doc="Resumes after non-fatal failures (default: the tenant's, 3; capped by it).",
        ),
        Field(
            "max_depth",
            f.integer(minimum=1, maximum=MAX_DEPTH_CEILING),
            doc=f"Subgraph nesting bound (default 5, at most {MAX_DEPTH_CEILING}).",
        ),
        Field(
            "limits",
            f.nullable(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "max_concurrent_runs": f.integer(minimum=1, maximum=MAX_CONCURRENCY)
                    },
                }
            ),
            doc="Per-graph limits within the tenant's own: `max_concurrent_runs`.",
        ),
        Field(
            "triggers",
            f.nullable(
                f.array(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["event"],
                        "properties": {
                            "event": f.string(pattern=EVENT_NAME.pattern),
                            "input": f.nullable(
                                {
                                    "type": "object",
                                    "maxProperties": MAX_TRIGGER_INPUT_KEYS,
                                    "additionalProperties": f.expression(),
                                }
                            ),
                            "description": f.any_json(),
                        },
                    },
                    max_items=MAX_TRIGGERS,
                )
            ),
            doc="Events (`POST /events`) that start a run of this graph's latest version.",
        ),
    )
)

STATE_ENTRY = Table(
    (
        Field("reducer", f.enum(*REDUCERS), doc="How updates merge (default `replace`)."),
        Field("default", f.any_json(), doc="The key's initial value."),
        Field("description", f.any_json(), doc="Free text."),
    ),
    rules={
        "allOf": [
            {
                "if": {"properties": {"reducer": {"enum": list(names)}}, "required": ["reducer"]},
                "then": {"properties": {"default": {"type": [kind, "null"]}}},
            }
            for names, kind in (
                (LIST_REDUCERS, "array"),
                (("merge",), "object"),
                (NUMBER_REDUCERS, "number"),
            )
        ]
    },
)

EDGE = Table(
    (
        Field("from", f.node_ref(), required=True, doc="The node the edge leaves."),
        Field("to", f.node_ref(), required=True, doc="The node the edge enters."),
        Field("when", f.expression(), doc="Taken only when this holds."),
        Field("on_error", f.boolean(), doc="Taken only when `from` failed after its retries."),
        Field("description", f.any_json(), doc="Free text."),
        Field("label", f.any_json(), doc="Shown on the diagram."),
    )
)

RETRY = Table(
    (
        Field(
            "max_attempts",
            f.integer(minimum=1, maximum=MAX_RETRY_ATTEMPTS),
            doc="Attempts in all (default 1).",
        ),
        Field("backoff", f.number(minimum=0), doc="Seconds before the first retry."),
        Field("max_backoff", f.number(minimum=0), doc="Cap on the growing backoff."),
    )
)

ARTIFACT = Table(
    (
        Field("name", f.string(min_length=1), required=True, doc="The artifact's file name."),
        Field("json", f.expression(), doc="Stored as JSON: an expression."),
        Field("text", f.template(), doc="Stored as text: a template."),
        Field("content_type", f.any_json(), doc="Its media type."),
    ),
    rules=f.exactly_one_of("json", "text"),
)

# Fields every node accepts whatever its kind.
COMMON = Table(
    (
        Field("kind", f.string(), required=True, doc="The node kind."),
        Field("retry", f.nullable(RETRY.object_schema()), doc="Retries after a failure."),
        Field(
            "timeout",
            f.number(exclusive_minimum=0),
            doc="Seconds: an attempt's time limit, or a wait's deadline (approval, input).",
        ),
        Field(
            "artifacts",
            f.nullable(f.array(ARTIFACT.object_schema())),
            doc="Stored after the node ran.",
        ),
        Field("description", f.any_json(), doc="Free text."),
        Field("label", f.any_json(), doc="Shown on the diagram."),
        Field("meta", f.any_json(), doc="Your own data."),
    )
)
