"""Subgraph nodes: a child run with its own steps, executed inline by the parent's worker.

The child is a real Run (its own steps, events and checkpoints; cancelled with its parent),
claimed by the parent's worker so no second queue slot is needed. A child that waits for a
human is not supported yet: the subgraph node fails with `subgraph_suspended`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from runs.engine import NodeError
from runs.events import append_events
from runs.models import Run
from runs.services.graphs import get_graph, spec_for
from runs.status import RunStatus

if TYPE_CHECKING:
    from runs.services.execute import Segment


def run_child(
    parent_segment: Segment, graph_name: str, data: dict[str, Any], depth: int
) -> dict[str, Any]:
    from runs.services.execute import Segment, claim_run

    parent = parent_segment.run
    max_depth = spec_for(parent.graph).max_depth
    if depth > max_depth:
        raise NodeError(
            "depth_exceeded",
            f"Subgraph nesting is bounded at {max_depth}.",
            retryable=False,
            fatal=True,
        )
    try:
        graph = get_graph(parent.tenant, graph_name)
    except Exception as exc:
        raise NodeError("subgraph_not_found", str(exc), retryable=False, fatal=True) from exc
    with transaction.atomic():
        child = Run.objects.create(
            tenant=parent.tenant,
            graph=graph,
            graph_hash=graph.hash,
            parent=parent,
            depth=depth,
            input=data,
            metadata={"parent_run": str(parent.public_id)},
            dispatched_at=timezone.now(),
        )
        child.tenant = parent.tenant
        append_events(
            child,
            [
                (
                    "run.queued",
                    {
                        "graph": graph.name,
                        "version": graph.version,
                        "parent": str(parent.public_id),
                    },
                )
            ],
        )
    claimed = claim_run(child.pk)
    if claimed is None:
        raise NodeError("subgraph_not_started", f"Child run {child.public_id} was not claimed.")
    segment = Segment(claimed)
    # The parent's cancellation reaches the child's in-flight node too.
    segment.token = parent_segment.token.child()
    outcome = segment.execute()
    child = Run.objects.get(pk=child.pk)
    if child.status == RunStatus.SUCCEEDED:
        return dict(child.state)
    if child.status == RunStatus.WAITING:
        from runs.services.controls import cancel_run

        cancel_run(child, by="parent", reason="subgraph waits are not supported")
        raise NodeError(
            "subgraph_suspended",
            f"Subgraph {graph_name} waited for {(child.waiting_for or {}).get('kind')}; "
            "waiting inside a subgraph is not supported.",
            retryable=False,
        )
    err = child.error or {}
    raise NodeError(
        "subgraph_failed",
        f"Subgraph {graph_name} run {child.public_id} ended {child.status} "
        f"({outcome}): {err.get('message', '')}",
        retryable=False,
    )
