"""What the runs app tells observability: a segment executes, steps were committed, a run was
claimed or finished, the reconciler resolved something, events reached websocket clients.
The only module the runs app calls into. Cheap when tracing is off (the default): a
contextvar set per segment, one histogram observe per step.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from observability import logs, metrics, tracing


@contextmanager
def executing(segment: Any) -> Iterator[None]:
    """Around a segment's execution: its log context, and its span when tracing is on."""
    run = segment.run
    slug = run.tenant.slug
    with logs.run_context(slug, segment.run_hex):
        if tracing.tracer is None:
            yield
            return
        with tracing.segment_span(run, slug):
            yield


def steps_committed(segment: Any, steps: Sequence[Any]) -> None:
    """After a commit: each step's duration by node kind (and its span when tracing is on).
    `steps` are the PendingSteps written."""
    slug = segment.run.tenant.slug
    nodes = segment.spec.nodes
    observe = metrics.observe_step
    for p in steps:
        r = p.result
        node = nodes.get(r.node)
        observe(slug, node["kind"] if node else "unknown", r.finished_at - r.started_at)
    if tracing.tracer is not None:
        tracing.step_spans(
            segment.run,
            slug,
            [(p.result, (nodes.get(p.result.node) or {}).get("kind", "unknown")) for p in steps],
        )


def run_claimed(run: Any) -> None:
    """A worker claimed `run`: its first claim ends its wait in the queue."""
    if run.claims == 1 and run.started_at is not None:
        wait = (run.started_at - run.created_at).total_seconds()
        metrics.observe_queue_wait(run.tenant.slug, wait)


def run_finished(run: Any, status: str) -> None:
    """`run` ends in `status` when the caller's transaction commits (call inside it)."""
    from django.db import transaction

    transaction.on_commit(partial(metrics.observe_run_finished, tenant_slug(run), status))


_slugs: dict[int, str] = {}


def tenant_slug(run: Any) -> str:
    """The run's tenant slug without a query when the tenant is loaded (or was seen)."""
    cached = run._state.fields_cache.get("tenant")
    if cached is not None:
        return str(cached.slug)
    slug = _slugs.get(run.tenant_id)
    if slug is None:
        slug = _slugs[run.tenant_id] = str(run.tenant.slug)
    return slug


# (problem, action) of a reconciler finding -> the outcome label of runyard_recoveries_total.
RECONCILE_OUTCOMES = {
    ("lease_expired", "resume"): "resumed",
    ("lease_expired", "interrupt"): "interrupted",
    ("lease_expired", "cancel"): "cancelled",
    ("never_claimed", "redispatch"): "redispatched",
    ("parent_ended", "cancel"): "parent_ended",
}


def reconciled(finding: Any) -> None:
    """The reconciler resolved `finding` (runs.reconcile.Finding) and committed it."""
    if finding.result.startswith(("skipped", "error")):
        return
    if finding.problem == "lease_expired":
        metrics.observe_lease_expired(finding.tenant)
    outcome = RECONCILE_OUTCOMES.get((finding.problem, finding.action), "deadline")
    metrics.observe_recovery(finding.tenant, outcome)


TS_KEY = '"ts":"'


def events_delivered(group: str, hints: Sequence[tuple[int, str]]) -> None:
    """A batch of stored events (wire frames, oldest first) was handed to this process's
    websocket clients of `group`: its oldest event's lag. The frame's `ts` is its last string
    field (runs/events.py `to_wire`), found from the end without decoding the frame."""
    text = hints[0][1]
    start = text.rfind(TS_KEY)
    if start < 0:
        return
    start += len(TS_KEY)
    try:
        created = dt.datetime.fromisoformat(text[start : text.index('"', start)])
    except ValueError:
        return
    stream = "run" if group.startswith("run.") else "tenant"
    metrics.observe_delivery_lag(stream, time.time() - created.timestamp())
