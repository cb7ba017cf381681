"""`approval`: a human barrier with a durable deadline and a default action.

The node asks `RunContext.resolve` for a decision on `"{node}@{occurrence}"`; with none yet it
suspends (kind "approval", `timeout` seconds to the deadline, `default` applied there by the
runtime). Approved, the node follows its edges, or the one edge target the decision names
(`route`). Rejected, it goes to `on_reject`, else the run fails with `approval_rejected`.
A decision's `patch` is applied through the reducers before routing; `output`, if set,
receives {id, decision, by}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import fields as f
from ..errors import NodeError, RunFailed
from ..fields import Field, Table
from ..results import Suspension
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck

DECISIONS = ("approve", "reject")


def edge_targets(nc: NodeContext) -> list[str]:
    targets: list[str] = []
    for edge in nc.spec.edges:
        if edge["from"] == nc.name and not edge.get("on_error") and edge["to"] not in targets:
            targets.append(edge["to"])
    return targets


@register_kind
class ApprovalNode(NodeKind):
    kind = "approval"
    field_table = Table(
        (
            Field("message", f.nullable(f.template()), doc="Shown to the approver."),
            Field(
                "default",
                f.nullable(f.enum(*DECISIONS)),
                doc="Applied at the deadline (`timeout` seconds).",
            ),
            Field("on_reject", f.node_ref(), doc="Where a rejection goes; else the run fails."),
            Field("output", f.nullable(f.state_key()), doc="Receives {id, decision, by}."),
        )
    )
    branchable = False
    timeout_is_deadline = True

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        where = f"nodes.{name}"
        check.template(where, node.get("message"), "`message`", required=False)
        if node.get("default") not in (None, *DECISIONS):
            check.add(where, f"`default` must be 'approve' or 'reject', got {node['default']!r}")
        if "on_reject" in node:
            check.node_ref(where, node["on_reject"], "`on_reject`")
        check.key(where, node, "output", required=False)

    def extra_targets(self, node: dict) -> list[str]:
        target = node.get("on_reject")
        return [target] if isinstance(target, str) else []

    def run(self, nc: NodeContext) -> Outcome:
        node = nc.node
        routes = edge_targets(nc)
        template = node.get("message") or f"Approve step {nc.name!r}?"
        suspension = Suspension(
            kind="approval",
            id=nc.occurrence_id,
            node=nc.name,
            timeout=float(node["timeout"]) if "timeout" in node else None,
            default=node.get("default"),
            message=nc.render(template),
            data={"routes": routes, "on_reject": node.get("on_reject")},
        )
        resolution = nc.run.resolve(suspension)
        if resolution is None:
            return Outcome({}, suspension=suspension)
        decision = resolution.decision
        if decision not in DECISIONS:
            raise NodeError(
                "invalid_resolution",
                f"approval {suspension.id} needs decision 'approve' or 'reject', got {decision!r}",
                fatal=True,
            )
        if resolution.patch is not None and not isinstance(resolution.patch, dict):
            raise NodeError("invalid_resolution", "approval patch must be an object", fatal=True)
        update = dict(resolution.patch or {})
        if node.get("output"):
            update[node["output"]] = {
                "id": suspension.id,
                "decision": decision,
                "by": resolution.by,
            }
        route = resolution.route
        nc.emit(
            "approval.resolved",
            {"id": suspension.id, "decision": decision, "by": resolution.by, "route": route},
        )
        if decision == "reject":
            if node.get("on_reject"):
                return Outcome(update, route=node["on_reject"])
            by = f" by {resolution.by}" if resolution.by else ""
            raise RunFailed(
                "approval_rejected",
                f"approval {suspension.id} at node {nc.name!r} was rejected{by}",
            )
        if route is not None:
            if route not in routes:
                raise NodeError(
                    "invalid_route",
                    f"approval {suspension.id} may route to {routes}, not {route!r}",
                    fatal=True,
                )
            return Outcome(update, route=route)
        return Outcome(update)
