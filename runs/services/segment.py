"""A segment's state, its watcher tick and the callbacks the engine makes into it.

The watcher thread (`runs.services.watcher`) calls `tick`: it renews the lease, notices
cancel/pause/guidance requests and the wall-time limit, and writes the `step.started` a slow
step shows before it commits. The engine calls `on_step_start`, `on_delta`, `on_live`,
`resolve` and `run_subgraph` through the `RunContext` built by `context`; `on_delta` and
`on_live` publish live frames (runs/live_frames.py: no row, no seq) from the node's thread, and
the engine hands the same events back with the step, stored when it commits. How a segment
ends lives in `runs.services.segment_endings`; the loop itself in `runs.services.execute`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from runs import checkpoints
from runs.engine import (
    CancelToken,
    HttpPolicy,
    Resolution,
    RunContext,
    Suspension,
)
from runs.engine.pricing import price_table
from runs.events import append_events
from runs.live_frames import publish_live
from runs.models import Control, ControlKind, Run
from runs.services.claim import conf
from runs.services.graphs import spec_for
from runs.services.steps import PendingStep, capped
from runs.services.subgraphs import run_child
from runs.status import RunStatus
from tenants import limits

log = logging.getLogger(__name__)


SUSPENSION_CONTROL = {
    "approval": ControlKind.APPROVAL,
    "input": ControlKind.INPUT,
    "sleep": ControlKind.WAKE,
}


class SegmentBase:
    """One claimed stretch of a run's execution in this worker: its state, the watcher's
    tick and the engine's callbacks. The loop is `runs.services.execute.Segment`."""

    def __init__(self, run: Run, *, slice_started: float | None = None) -> None:
        checkpoints.catch_up(run)  # a row whose state is behind its last checkpoint
        self.run = run
        self.epoch = run.epoch
        self.spec = spec_for(run.graph)
        self.token = CancelToken()
        self.fenced = False
        self.pause_requested = False
        self.guidance_pending = run.guidance_pending
        self.consumed: list[int] = []
        self.pending: list[PendingStep] = []
        self.batch_started = 0.0
        self.current: tuple[int, str, int, float] | None = None
        self.started_emitted: set[int] = set()
        self.run_hex = run.public_id.hex
        self.lock = threading.Lock()
        # The queue task's time slice is shared by the segments it runs one after another.
        self.started_mono = slice_started or time.monotonic()
        self.next_beat = time.monotonic() + conf("HEARTBEAT_SECONDS")
        self.wall_started = run.started_at or timezone.now()
        # A tenant limit a subgraph call hit (tree admission, or a child stopped by one): the
        # run fails with it at this step's commit, whatever caught the node's error.
        self.tree_limit: limits.LimitExceeded | None = None
        # An upper bound of the run's state as JSON, kept from each step's update size so a
        # step does not dump the whole state to check max_state_bytes (steps.write_steps).
        self.state_bytes = 0

    # --- the watcher: lease renewal, control polling, live events -----------------------------

    def tick(self) -> None:
        """Called by the process's watcher thread every few hundred milliseconds."""
        beat = time.monotonic() >= self.next_beat
        if beat:
            self.next_beat = time.monotonic() + conf("HEARTBEAT_SECONDS")
        self._watch_tick(next_beat_due=beat)

    def _watch_tick(self, *, next_beat_due: bool) -> None:
        row = (
            Run.objects.filter(pk=self.run.pk)
            .values("status", "epoch", "pause_requested", "guidance_pending")
            .first()
        )
        if row is None or row["epoch"] != self.epoch:
            self.fenced = True
            self.token.cancel("fenced")
            return
        if row["status"] == RunStatus.CANCELLING:
            self.token.cancel("cancelled")
        self.pause_requested = row["pause_requested"]
        self.guidance_pending = row["guidance_pending"]
        max_wall = self.run.tenant.max_wall_seconds
        if max_wall and (timezone.now() - self.wall_started).total_seconds() >= max_wall:
            self.token.cancel("max_wall_seconds")
        self._flush_live()
        if next_beat_due:
            now = timezone.now()
            renewed = Run.objects.filter(pk=self.run.pk, epoch=self.epoch).update(
                lease_expires_at=now + dt.timedelta(seconds=conf("LEASE_SECONDS")),
                heartbeat_at=now,
            )
            if not renewed:
                self.fenced = True
                self.token.cancel("fenced")

    def _flush_live(self) -> None:
        """The `step.started` of a slow step, written before it commits (a stored event: the
        step's live frames come with no seq, see `on_live`)."""
        events: list[tuple[str, dict[str, Any]]] = []
        with self.lock:
            current = self.current
            if (
                current
                and not self.pending  # written live, it would overtake uncommitted steps
                and current[0] not in self.started_emitted
                and time.monotonic() - current[3] > 0.3
            ):
                index, node, attempt, _ = current
                events.append(("step.started", {"index": index, "node": node, "attempt": attempt}))
                self.started_emitted.add(index)
        if events:
            with transaction.atomic():
                append_events(
                    self.run, events, fence={"epoch": self.epoch, "status": RunStatus.RUNNING}
                )

    # --- engine callbacks ---------------------------------------------------------------------

    def on_step_start(self, index: int, node: str, attempt: int) -> None:
        with self.lock:
            self.current = (index, node, attempt, time.monotonic())

    def on_delta(self, node: str, text: str) -> None:
        self.on_live("llm.delta", {"node": node, "text": text})

    def on_live(self, event: str, data: dict[str, Any]) -> None:
        """Show `event` to the run's viewers now, from the node's thread (a buffer append).
        The engine records it with the step too, so it is stored when the step commits."""
        if self.fenced:
            return  # another worker owns the run now
        current = self.current
        if event != "llm.delta":  # deltas are small; a branch's update may not be
            data = capped(data)
        publish_live(self.run_hex, event, {**data, "step": current[0] if current else None})

    def resolve(self, suspension: Suspension) -> Resolution | None:
        kind = SUSPENSION_CONTROL[suspension.kind]
        controls = (
            Control.objects.filter(run=self.run, kind=kind)
            .filter(Q(key=suspension.id, consumed_at__isnull=True) | Q(key=f"{suspension.node}@*"))
            .order_by("id")
        )
        # An answer for this occurrence wins over one that covers every occurrence.
        chosen = sorted(controls, key=lambda c: c.key.endswith("@*"))
        if not chosen:
            return None
        control = chosen[0]
        if not control.key.endswith("@*"):
            self.consumed.append(control.pk)
        p = control.payload
        return Resolution(
            decision=p.get("decision"),
            value=p.get("value"),
            patch=p.get("patch"),
            route=p.get("route"),
            by=control.by,
        )

    def run_subgraph(
        self, graph_name: str, data: dict[str, Any], depth: int, **call: Any
    ) -> dict[str, Any]:
        return run_child(self, graph_name, data, depth, **call)

    def context(self) -> RunContext:
        tenant = self.run.tenant
        return RunContext(
            cancel=self.token,
            resolve=self.resolve,
            on_step_start=self.on_step_start,
            on_delta=self.on_delta,
            on_live=self.on_live,
            run_subgraph=self.run_subgraph,
            depth=self.run.depth,
            http_policy=HttpPolicy(
                allowed_hosts=list(tenant.http_allowed_hosts or []),
                allow_private=tenant.http_allow_private,
            ),
            llm_config={
                "openai": {
                    "base_url": settings.RUNYARD["OPENAI_BASE_URL"],
                    "api_key": settings.RUNYARD["OPENAI_API_KEY"],
                    "prices": price_table().get("openai", {}),  # the operator's, never a spec's
                }
            },
            metadata=dict(self.run.metadata),
        )

    def _fence(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "status": RunStatus.RUNNING}

    def execute(self) -> str:
        """Drive the run until this segment ends; see `runs.services.execute.Segment`."""
        raise NotImplementedError
