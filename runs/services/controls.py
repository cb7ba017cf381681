"""Controls on a run: cancel, pause, resume, approvals, input, guidance, operator fixes.

The API, dashboard, admin and websocket clients all call these. Each locks the run row, checks
its status, and changes it with a guarded transition, so a control racing a worker either
wins cleanly or is answered with the run as it now is.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from runs.events import append_events
from runs.models import Control, ControlKind, Run, Step, Thread
from runs.services.dbretry import retried
from runs.services.errors import Conflict, NotFound, ValidationFailed, public_id
from runs.services.graphs import spec_for
from runs.services.lifecycle import error, finish, requeue, transition
from runs.status import RunStatus
from tenants import limits
from tenants.models import Tenant

CANCEL_ACTIONS = ("interrupt", "rollback")
# A running run whose heartbeat is older than this many heartbeat intervals has lost its worker
# (the watcher thread renews it every RUNYARD["HEARTBEAT_SECONDS"] while any step runs): a
# cancel then ends it at once instead of waiting for a worker that will never look.
STALE_HEARTBEATS = 2
# Per-run limits count what the run already spent: continuing it would cross them again at
# once. A fork from one of its steps starts with fresh counters instead.
SPENT_LIMITS = frozenset(
    {
        "max_steps",
        "limit_exceeded.max_steps",
        "limit_exceeded.max_tokens",
        "limit_exceeded.max_cost_usd",
        "limit_exceeded.max_wall_seconds",
        "limit_exceeded.max_state_bytes",
        "limit_exceeded.max_child_runs",
    }
)


def get_run(tenant: Tenant, run_id: Any) -> Run:
    run = (
        Run.objects.for_tenant(tenant)
        .select_related("tenant", "graph", "thread")
        .filter(public_id=public_id(run_id, "Run"))
        .first()
    )
    if run is None:
        raise NotFound(f"Run {run_id} does not exist.")
    return run


def _locked(run: Run) -> Run:
    return (
        Run.objects.select_for_update(of=("self",))
        .select_related("tenant", "graph", "thread")
        .get(pk=run.pk)
    )


def _finished_conflict(run: Run, what: str) -> Conflict:
    return Conflict(
        f"Run {run.public_id} already ended {run.status}; it cannot be {what}.",
        code="run_finished",
        details={"status": run.status},
    )


@retried
@transaction.atomic
def cancel_run(
    run: Run, *, action: str = "interrupt", by: str = "", force: bool = False, reason: str = ""
) -> Run:
    """Cancel a run. Queued, waiting and paused runs end at once; a running run becomes
    `cancelling` and its worker stops at the next safe point (in-flight calls are aborted).
    A running (or cancelling) run whose worker stopped heartbeating (`worker_lost`) ends at
    once too, its epoch bumped so that worker, should it come back, writes nothing more.

    `force` ends any active run immediately and bumps the epoch, fencing its worker out.
    Idempotent on cancelling/cancelled runs; other finished runs raise Conflict.
    """
    if action not in CANCEL_ACTIONS:
        raise ValidationFailed(
            f"action must be one of {', '.join(CANCEL_ACTIONS)}.", details={"field": "action"}
        )
    run = _locked(run)
    if run.status == RunStatus.CANCELLED:
        return run
    lost = worker_lost(run)
    if run.status == RunStatus.CANCELLING and not (force or lost):
        return run
    if run.is_terminal:
        raise _finished_conflict(run, "cancelled")
    if run.status == RunStatus.CANCELLING:
        action = run.cancel_action or action  # the first request's rollback still applies
    message = f"Cancelled by {by or 'request'} ({action})" + (f": {reason}" if reason else "")
    if force or lost or run.status in (RunStatus.QUEUED, RunStatus.WAITING, RunStatus.PAUSED):
        extra: dict[str, Any] = {"worker_lost": lost} if lost and not force else {}
        finish(
            run,
            RunStatus.CANCELLED,
            err=error("cancelled", message, forced=force, **extra),
            cancel_action=action,
            epoch=F("epoch") + 1,
            pause_requested=False,
        )
    else:
        transition(
            run,
            RunStatus.CANCELLING,
            events=[("run.cancelling", {"action": action, "by": by})],
            cancel_action=action,
        )
    for child in run.children.active():
        cancel_run(child, action=action, by=by, force=force, reason="parent cancelled")
    return run


def worker_lost(run: Run) -> dict[str, Any] | None:
    """Evidence that the worker holding a running or cancelling run is gone: its heartbeat is
    older than STALE_HEARTBEATS intervals, or its lease expired. None while it beats.

    The API cannot know a worker is dead; a live worker beats every interval from its watcher
    thread whatever its step does, so missing two beats means it is dead or cut off from the
    database, and either way its later writes are fenced by the epoch a cancel bumps."""
    if run.status not in (RunStatus.RUNNING, RunStatus.CANCELLING):
        return None
    now = timezone.now()
    stale_after = STALE_HEARTBEATS * float(settings.RUNYARD["HEARTBEAT_SECONDS"])
    beat, lease = run.heartbeat_at, run.lease_expires_at
    silent = beat is not None and (now - beat).total_seconds() > stale_after
    expired = lease is not None and lease < now
    if not (silent or expired):
        return None
    return {
        "lease_owner": run.lease_owner,
        "heartbeat_at": beat.isoformat() if beat else None,
        "lease_expires_at": lease.isoformat() if lease else None,
        "stale_after_seconds": stale_after,
    }


@retried
@transaction.atomic
def pause_run(run: Run, *, by: str = "") -> Run:
    """Pause: at once unless running; a running run pauses at its next step boundary."""
    run = _locked(run)
    if run.status == RunStatus.PAUSED:
        return run
    if run.is_terminal or run.status == RunStatus.CANCELLING:
        raise _finished_conflict(run, "paused")
    if run.status == RunStatus.RUNNING:
        append_events(run, [], fence={"status": RunStatus.RUNNING}, pause_requested=True)
        run.pause_requested = True
        return run
    transition(run, RunStatus.PAUSED, events=[("run.paused", {"by": by})], epoch=F("epoch") + 1)
    return run


@retried
@transaction.atomic
def resume_run(run: Run, *, by: str = "", interrupted: bool = False) -> Run:
    """Resume a paused run: back to waiting if it was waiting, else to the queue. With
    `interrupted`, an interrupted run continues from its last checkpoint, admitted like a
    new run (see retry_run); operators requeue one instead (requeue_run, no admission)."""
    run = _locked(run)
    if interrupted and run.status == RunStatus.INTERRUPTED:
        return _continue_ended(run, by=by, how="resumed")
    if run.status == RunStatus.RUNNING and run.pause_requested:
        append_events(run, [], fence={"status": RunStatus.RUNNING}, pause_requested=False)
        run.pause_requested = False
        return run
    if run.status != RunStatus.PAUSED:
        raise Conflict(
            f"Run {run.public_id} is {run.status}, not paused"
            + (" or interrupted." if interrupted else "."),
            code="not_paused",
            details={"status": run.status},
        )
    if run.waiting_for and not _answer_exists(run, run.waiting_for):
        transition(run, RunStatus.WAITING, events=[("run.resumed", {"by": by})])
    else:
        requeue(run, reason="resumed", event="run.resumed")
    return run


@retried
@transaction.atomic
def retry_run(run: Run, *, by: str = "") -> Run:
    """Retry a failed run at the node that failed, with the state from before it (as a
    resurrection does), or resume an interrupted one from its last checkpoint.

    Admitted through the tenant gate like a new run (queue slot, rate, budgets: LimitExceeded).
    Conflict `not_retryable` when the run did not fail or was interrupted, when it is a child
    (its parent decides), when it stopped where no node follows (a routing failure) or on a
    per-run limit it would cross again; `thread_busy` when its thread has another active run.
    """
    run = _locked(run)
    return _continue_ended(run, by=by, how="retried")


def _not_retryable(run: Run, why: str) -> Conflict:
    return Conflict(
        f"Run {run.public_id} cannot be retried: {why}",
        code="not_retryable",
        details={"status": run.status},
    )


def _continue_ended(run: Run, *, by: str, how: str) -> Run:
    """Queue a locked failed or interrupted run again where it stopped (see retry_run)."""
    if run.status not in (RunStatus.FAILED, RunStatus.INTERRUPTED):
        raise _not_retryable(run, f"it is {run.status}; only failed or interrupted runs are.")
    if run.parent_id is not None:
        raise _not_retryable(run, "it is a child run; retry the run that started it.")
    err = run.error or {}
    if err.get("code") in SPENT_LIMITS:
        raise _not_retryable(
            run,
            f"it stopped on {err.get('code')}, which it would cross again. "
            "Fork it from one of its steps instead.",
        )
    position = run.position
    if position is not None and position.get("node") is None:
        raise _not_retryable(
            run,
            f"it stopped where no node follows ({err.get('code', run.status)}). "
            "Fork it from an earlier step instead.",
        )
    # The tenant's row first, then the thread's: the order create_run takes them in.
    limits.admit_run(run.tenant)
    if run.thread_id is not None:
        thread = Thread.objects.select_for_update().get(pk=run.thread_id)
        other = Run.objects.filter(thread=thread).active().exclude(pk=run.pk).first()
        if other is not None:
            raise Conflict(
                f"Thread {thread.public_id} already has an active run "
                f"({other.public_id}, {other.status}).",
                code="thread_busy",
                details={"run_id": str(other.public_id)},
            )
    updates: dict[str, Any] = {}
    if position is not None:
        # Step numbers go on after the last step written (the failed one included).
        last = Step.objects.filter(run=run).aggregate(last=Max("index"))["last"] or 0
        updates["position"] = {**position, "step": max(int(position.get("step", 0)), last)}
    requeue(
        run,
        reason=how,
        event="run.resurrected",
        epoch=F("epoch") + 1,
        error=None,
        finished_at=None,
        cancel_action="",
        pause_requested=False,
        holds_queue_slot=True,
        data={
            "by": by,
            "was": run.status,
            "error": err or None,
            "at": (position or {}).get("node"),
        },
        **updates,
    )
    return run


def _answer_exists(run: Run, waiting_for: dict[str, Any]) -> bool:
    kind = {
        "approval": ControlKind.APPROVAL,
        "input": ControlKind.INPUT,
        "sleep": ControlKind.WAKE,
    }[waiting_for["kind"]]
    keys = [waiting_for["id"], f"{waiting_for['node']}@*"]
    return (
        Control.objects.filter(run=run, kind=kind, key__in=keys)
        .exclude(key=waiting_for["id"], consumed_at__isnull=False)
        .exists()
    )


def _wake_if_answered(run: Run) -> None:
    if run.status == RunStatus.WAITING and run.waiting_for and _answer_exists(run, run.waiting_for):
        requeue(run, reason=f"{run.waiting_for['kind']}_answered", event="run.resumed")


@retried
@transaction.atomic
def decide_approval(
    run: Run,
    approval_id: str,
    *,
    decision: str,
    patch: dict | None = None,
    route: str | None = None,
    by: str = "",
) -> Run:
    """Approve or reject `node@occurrence` (or `node@*` for every occurrence).

    The decision may come before the run reaches the approval; it is kept and used then.
    """
    if decision not in ("approve", "reject"):
        raise ValidationFailed("decision must be approve or reject.", details={"field": "decision"})
    if patch is not None and not isinstance(patch, dict):
        raise ValidationFailed("patch must be a JSON object.", details={"field": "patch"})
    run = _locked(run)
    node, _, occurrence = approval_id.partition("@")
    spec = spec_for(run.graph)
    if spec.nodes.get(node, {}).get("kind") != "approval":
        raise NotFound(f"Graph {spec.name} has no approval node {node!r}.")
    if occurrence != "*" and not occurrence.isdigit():
        raise ValidationFailed(
            f"Approval id {approval_id!r} must be node@N or node@*.",
            details={"field": "approval_id"},
        )
    if route is not None:
        targets = [e["to"] for e in spec.edges if e.get("from") == node]
        if route not in targets:
            raise ValidationFailed(
                f"route {route!r} is not an edge target of {node}: {targets}.",
                code="invalid_route",
                details={"field": "route"},
            )
    if run.is_terminal:
        raise _finished_conflict(run, "approved or rejected")
    if Control.objects.filter(run=run, kind=ControlKind.APPROVAL, key=approval_id).exists():
        raise Conflict(f"Approval {approval_id} was already decided.", code="already_decided")
    Control.objects.create(
        run=run,
        kind=ControlKind.APPROVAL,
        key=approval_id,
        by=by,
        payload={"decision": decision, "patch": patch, "route": route},
    )
    _wake_if_answered(run)
    return run


@retried
@transaction.atomic
def submit_input(run: Run, value: Any, *, input_id: str | None = None, by: str = "") -> Run:
    """Answer the run's input request (the current one unless `input_id` names another)."""
    run = _locked(run)
    if run.is_terminal:
        raise _finished_conflict(run, "given input")
    if input_id is None:
        if not (run.waiting_for and run.waiting_for.get("kind") == "input"):
            raise Conflict(
                f"Run {run.public_id} is not waiting for input.",
                code="not_waiting_for_input",
                details={"status": run.status},
            )
        input_id = run.waiting_for["id"]
    node = input_id.partition("@")[0]
    if spec_for(run.graph).nodes.get(node, {}).get("kind") != "input":
        raise NotFound(f"Graph {run.graph.name} has no input node {node!r}.")
    if Control.objects.filter(run=run, kind=ControlKind.INPUT, key=input_id).exists():
        raise Conflict(f"Input {input_id} was already given.", code="already_answered")
    Control.objects.create(
        run=run, kind=ControlKind.INPUT, key=input_id, by=by, payload={"value": value}
    )
    _wake_if_answered(run)
    return run


@retried
@transaction.atomic
def add_guidance(run: Run, message: str, *, by: str = "") -> Run:
    """Append a message to the run's state (`guidance`) before its next node."""
    if not isinstance(message, str) or not message.strip():
        raise ValidationFailed("message must be a non-empty string.", details={"field": "message"})
    run = _locked(run)
    if run.is_terminal or run.status == RunStatus.CANCELLING:
        raise _finished_conflict(run, "given guidance")
    Control.objects.create(run=run, kind=ControlKind.GUIDANCE, by=by, payload={"message": message})
    append_events(run, [], guidance_pending=True)
    run.guidance_pending = True
    return run


@retried
@transaction.atomic
def requeue_run(run: Run, *, by: str = "", reason: str = "") -> Run:
    """Operator: continue an interrupted (or stuck) run from its last checkpoint."""
    run = _locked(run)
    if run.status not in (RunStatus.INTERRUPTED, RunStatus.RUNNING, RunStatus.QUEUED):
        raise Conflict(
            f"Run {run.public_id} is {run.status}; only interrupted, running or "
            "queued runs can be requeued.",
            code="not_requeueable",
            details={"status": run.status},
        )
    requeue(
        run,
        reason=f"requeued by {by or 'operator'}" + (f": {reason}" if reason else ""),
        epoch=F("epoch") + 1,
        error=None,
        finished_at=None,
    )
    return run


@retried
@transaction.atomic
def mark_interrupted(
    run: Run,
    *,
    by: str = "",
    reason: str = "",
    evidence: dict[str, Any] | None = None,
    code: str = "orphaned",
) -> Run:
    """End an active run as `interrupted`, fencing out any worker that still has it."""
    run = _locked(run)
    if run.is_terminal:
        raise _finished_conflict(run, "marked interrupted")
    message = reason or f"Marked interrupted by {by or 'operator'}."
    finish(
        run,
        RunStatus.INTERRUPTED,
        err=error(code, message, evidence=evidence or {}),
        epoch=F("epoch") + 1,
    )
    return run
