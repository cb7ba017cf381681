"""`sleep`: wait `seconds`.

Short sleeps (up to RunContext.sleep_inline_max) wait in-process on the cancel token, so a
cancel ends them at once. Longer ones suspend as kind "sleep" (deadline = `seconds`) and
release the worker; the runtime resolves them with decision "wake" when the timer fires.
Inside a parallel branch a sleep always waits in-process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import fields as f
from ..errors import RunCancelled
from ..fields import Field, Table
from ..results import Suspension
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck


@register_kind
class SleepNode(NodeKind):
    kind = "sleep"
    field_table = Table(
        (Field("seconds", f.number(minimum=0), required=True, doc="A durable timer."),)
    )

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        check.number(f"nodes.{name}", node, "seconds", minimum=0, required=True)

    def run(self, nc: NodeContext) -> Outcome:
        seconds = float(nc.node["seconds"])
        if nc.in_branch or seconds <= nc.run.sleep_inline_max:
            if seconds > 0 and nc.cancel.wait(seconds):
                raise RunCancelled(nc.cancel.reason or "cancelled")
            return Outcome({})
        suspension = Suspension(
            kind="sleep",
            id=nc.occurrence_id,
            node=nc.name,
            timeout=seconds,
            default=None,
            message=None,
            data={"seconds": seconds},
        )
        resolution = nc.run.resolve(suspension)
        if resolution is None:
            return Outcome({}, suspension=suspension)
        nc.emit("sleep.woken", {"id": suspension.id, "by": resolution.by})
        return Outcome({})
