"""Operator actions on runs: what each does, and applying one to a run with its audit row.

Every action calls the same service the API and dashboard call (runs.services), so the admin
never writes a status itself. A service that refuses (Conflict, InvalidTransition) or loses a
race with a worker (Fenced) changes nothing; the operator is told why and the refusal is
audited like a change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from django.db import transaction

from runs.events import Fenced
from runs.models import Run
from runs.reconcile import evidence_of
from runs.services import (
    ServiceError,
    cancel_run,
    mark_interrupted,
    requeue_run,
    resume_run,
)
from runs.status import ACTIVE, RunStatus
from tenants.services import record_audit

Result = Literal["changed", "unchanged", "refused"]


@dataclass(frozen=True)
class Operation:
    name: str
    label: str
    # What the confirmation page says the action does.
    help: str
    asks_cancel_action: bool
    call: Callable[..., Run]
    # Statuses where the service changes the run, and where it answers "nothing to do".
    applies_to: frozenset[str]
    noop_on: frozenset[str] = frozenset()

    @property
    def audit_action(self) -> str:
        return f"run.{self.name}"

    def preview(self, run: Run) -> tuple[Result, str]:
        """What applying this to `run` as it is now would do (the service has the last word)."""
        if self.name == "resume" and run.status == RunStatus.RUNNING and run.pause_requested:
            return "changed", "withdraws the pause request"
        if run.status in self.applies_to:
            return "changed", "applies"
        if run.status in self.noop_on:
            return "unchanged", f"nothing to do: already {run.status}"
        return "refused", f"does not apply to a {run.status} run"


def _cancel(run: Run, *, by: str, reason: str, cancel_action: str) -> Run:
    return cancel_run(run, action=cancel_action, by=by, reason=reason)


def _force_cancel(run: Run, *, by: str, reason: str, cancel_action: str) -> Run:
    return cancel_run(run, action=cancel_action, by=by, reason=reason, force=True)


def _resume(run: Run, *, by: str, reason: str, cancel_action: str) -> Run:
    return resume_run(run, by=by)


def _requeue(run: Run, *, by: str, reason: str, cancel_action: str) -> Run:
    return requeue_run(run, by=by, reason=reason)


def _mark_interrupted(run: Run, *, by: str, reason: str, cancel_action: str) -> Run:
    message = f"Marked interrupted by {by}: {reason}" if reason else ""
    return mark_interrupted(run, by=by, reason=message, evidence=evidence_of(run))


_ACTIVE = frozenset(ACTIVE)

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation(
            name="cancel",
            label="Cancel",
            help="Queued, waiting and paused runs end at once; a running run becomes "
            "cancelling and its worker stops at the next safe point. Interrupt keeps the "
            "state; rollback also restores the thread's state from before the run.",
            asks_cancel_action=True,
            call=_cancel,
            applies_to=frozenset(
                {RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED}
            ),
            noop_on=frozenset({RunStatus.CANCELLING, RunStatus.CANCELLED}),
        ),
        Operation(
            name="force_cancel",
            label="Force cancel",
            help="Ends any active run now, without waiting for its worker, and fences the "
            "worker out (it writes nothing more).",
            asks_cancel_action=True,
            call=_force_cancel,
            applies_to=_ACTIVE,
            noop_on=frozenset({RunStatus.CANCELLED}),
        ),
        Operation(
            name="resume",
            label="Resume",
            help="A paused run goes back to waiting (if it still waits for an answer) or to "
            "the queue; on a running run it withdraws a pause request not yet acted on.",
            asks_cancel_action=False,
            call=_resume,
            applies_to=frozenset({RunStatus.PAUSED}),
        ),
        Operation(
            name="requeue",
            label="Requeue",
            help="Puts an interrupted, running or queued run back in the queue to continue "
            "from its last checkpoint; a worker that still holds it is fenced out.",
            asks_cancel_action=False,
            call=_requeue,
            applies_to=frozenset({RunStatus.INTERRUPTED, RunStatus.RUNNING, RunStatus.QUEUED}),
        ),
        Operation(
            name="mark_interrupted",
            label="Mark interrupted",
            help="Ends an active run as interrupted with its lease evidence, fencing out any "
            "worker that still has it. It can be requeued later.",
            asks_cancel_action=False,
            call=_mark_interrupted,
            applies_to=_ACTIVE,
        ),
    ]
}


@dataclass(frozen=True)
class Outcome:
    run: Run
    operation: Operation
    result: Result
    status_before: str
    status_after: str
    message: str

    @property
    def text(self) -> str:
        return f"Run {self.run.public_id} ({self.run.tenant.slug}): {self.message}"


def _snapshot(run: Run) -> tuple[Any, ...]:
    return (run.status, run.epoch, run.pause_requested, run.cancel_action)


def _describe(before: Run, after: Run) -> str:
    if after.status == before.status == RunStatus.RUNNING:
        return "pause request withdrawn; it keeps running"
    if after.status == RunStatus.CANCELLING:
        return f"{before.status} → cancelling; the worker stops at its next safe point"
    if after.status == RunStatus.QUEUED:
        return f"{before.status} → queued; it continues from its last checkpoint"
    if after.status == RunStatus.WAITING:
        waits = (after.waiting_for or {}).get("id", "")
        return f"{before.status} → waiting{f' for {waits}' if waits else ''}"
    return f"{before.status} → {after.status}"


def apply_operation(
    operation: Operation,
    run: Run,
    *,
    user: Any,
    reason: str,
    cancel_action: str = "interrupt",
) -> Outcome:
    """Apply one operator action to one run through its service, and audit it either way."""
    by = user.get_username()
    options: dict[str, Any] = {"via": "admin"}
    if operation.asks_cancel_action:
        options["cancel_action"] = cancel_action
    try:
        with transaction.atomic():
            # The status before is read under the row lock the service takes next.
            # Only the run row: the tenant row carries hot admission counters.
            before = (
                Run.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=run.pk)
            )
            after = operation.call(before, by=by, reason=reason, cancel_action=cancel_action)
            after.refresh_from_db()
            if _snapshot(after) == _snapshot(before):
                outcome = Outcome(
                    after,
                    operation,
                    "unchanged",
                    before.status,
                    after.status,
                    f"unchanged: already {after.status}, nothing to do",
                )
            else:
                outcome = Outcome(
                    after,
                    operation,
                    "changed",
                    before.status,
                    after.status,
                    _describe(before, after),
                )
            _audit(outcome, user=user, reason=reason, options=options)
            return outcome
    except (ServiceError, Fenced) as exc:
        message = exc.message if isinstance(exc, ServiceError) else "the run changed meanwhile"
        current = Run.objects.select_related("tenant").get(pk=run.pk)
        outcome = Outcome(
            current,
            operation,
            "refused",
            current.status,
            current.status,
            f"not changed: {message}",
        )
        _audit(outcome, user=user, reason=reason, options=options)
        return outcome


def _audit(outcome: Outcome, *, user: Any, reason: str, options: dict[str, Any]) -> None:
    record_audit(
        outcome.operation.audit_action,
        by=user,
        tenant=outcome.run.tenant,
        target=outcome.run,
        reason=reason,
        status_before=outcome.status_before,
        status_after=outcome.status_after,
        data={**options, "result": outcome.result, "message": outcome.message},
    )
