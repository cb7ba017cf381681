"""`input`: wait for a value from a user and write it to `output`.

Suspends (kind "input") until `RunContext.resolve` supplies `Resolution.value`; `timeout`
is the deadline in seconds; `schema` (JSON Schema) is checked against the value. `default`,
if given, is passed on in `Suspension.data["default"]` for the runtime to apply at the deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .. import fields as f
from ..errors import NodeError
from ..fields import Field, Table
from ..results import Suspension
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck


@register_kind
class InputNode(NodeKind):
    kind = "input"
    field_table = Table(
        (
            Field("prompt", f.nullable(f.template()), doc="Shown to whoever answers."),
            Field("output", f.state_key(), required=True, doc="Receives the answer."),
            Field(
                "schema",
                f.nullable(f.json_schema_object()),
                doc="JSON Schema the answer must match.",
            ),
            Field("default", f.any_json(), doc="The answer at the deadline (`timeout`)."),
        )
    )
    branchable = False
    timeout_is_deadline = True

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        where = f"nodes.{name}"
        check.template(where, node.get("prompt"), "`prompt`", required=False)
        check.key(where, node, "output")
        schema = node.get("schema")
        if schema is not None:
            if not isinstance(schema, dict):
                check.add(where, "`schema` must be a JSON Schema object")
            else:
                try:
                    Draft202012Validator.check_schema(schema)
                except SchemaError as exc:
                    check.add(where, f"`schema` is not a valid JSON Schema: {exc.message}")

    def run(self, nc: NodeContext) -> Outcome:
        node = nc.node
        suspension = Suspension(
            kind="input",
            id=nc.occurrence_id,
            node=nc.name,
            timeout=float(node["timeout"]) if "timeout" in node else None,
            default=None,
            message=nc.render(node["prompt"]) if node.get("prompt") else None,
            data={"output": node["output"], "schema": node.get("schema")},
        )
        if "default" in node:
            suspension.data["default"] = node["default"]
        resolution = nc.run.resolve(suspension)
        if resolution is None:
            return Outcome({}, suspension=suspension)
        value = resolution.value
        if node.get("schema") is not None:
            errors = [e.message for e in Draft202012Validator(node["schema"]).iter_errors(value)]
            if errors:
                raise NodeError(
                    "input_invalid",
                    f"input for {suspension.id} does not match its schema: {'; '.join(errors)}",
                    fatal=True,
                )
        nc.emit("input.received", {"id": suspension.id, "by": resolution.by})
        return Outcome({node["output"]: value})
