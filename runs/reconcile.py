"""The reconciler: finds runs the platform owes work and resolves each one.

- a lease that expired (the worker died): resume from the last checkpoint, counted against
  MAX_RECOVERIES, then `interrupted` with the evidence;
- a run dispatched but never claimed (the broker lost the task): dispatched again;
- a wait past its deadline: the approval's default applies, a sleep wakes, an input fails.

- a child run (subgraph) is never resumed or redispatched here: while its parent is active,
  the parent's worker (or the parent's own recovery, re-running its subgraph node) takes the
  child over, and resuming it here too would run it twice, outside the root's slot. Once the
  parent has ended, an active child is cancelled (`parent_ended`).

Runs at worker start, on the scheduler's tick, from the admin and as `reconcile_runs`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from observability import hooks as observe
from runs.models import Control, ControlKind, Run
from runs.services.errors import ServiceError
from runs.services.lifecycle import error, finish, requeue
from runs.status import ACTIVE, TERMINAL, RunStatus

log = logging.getLogger(__name__)


@dataclass
class Finding:
    run_id: str
    tenant: str
    problem: str  # lease_expired | never_claimed | deadline_passed | parent_ended
    action: str  # resume | interrupt | redispatch | approve | reject | wake | fail | cancel
    evidence: dict[str, Any] = field(default_factory=dict)
    result: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def evidence_of(run: Run) -> dict[str, Any]:
    return {
        "status": run.status,
        "epoch": run.epoch,
        "lease_owner": run.lease_owner,
        "lease_expires_at": _iso(run.lease_expires_at),
        "heartbeat_at": _iso(run.heartbeat_at),
        "dispatched_at": _iso(run.dispatched_at),
        "last_step": run.steps,
        "claims": run.claims,
        "recoveries": run.recoveries,
        "waiting_for": run.waiting_for,
        "wait_deadline": _iso(run.wait_deadline),
    }


def candidates(now: dt.datetime | None = None) -> list[Finding]:
    """Every run the reconciler would act on, with the action it would take."""
    now = now or timezone.now()
    conf: dict[str, Any] = settings.RUNYARD
    grace = dt.timedelta(seconds=float(conf["DISPATCH_GRACE_SECONDS"]))
    max_recoveries = int(conf["MAX_RECOVERIES"])
    found: list[Finding] = []
    expired = (
        Run.objects.filter(
            status__in=[RunStatus.RUNNING, RunStatus.CANCELLING], lease_expires_at__lt=now
        )
        .filter(root__isnull=True)
        .select_related("tenant")
    )
    for run in expired:
        if run.status == RunStatus.CANCELLING:
            action = "cancel"
        else:
            action = "resume" if run.recoveries < max_recoveries else "interrupt"
        found.append(
            Finding(str(run.public_id), run.tenant.slug, "lease_expired", action, evidence_of(run))
        )
    unclaimed = Run.objects.filter(
        status=RunStatus.QUEUED, dispatched_at__lt=now - grace, root__isnull=True
    ).select_related("tenant")
    for run in unclaimed:
        found.append(
            Finding(
                str(run.public_id), run.tenant.slug, "never_claimed", "redispatch", evidence_of(run)
            )
        )
    overdue = Run.objects.filter(
        status=RunStatus.WAITING, wait_deadline__lt=now, root__isnull=True
    ).select_related("tenant")
    for run in overdue:
        kind = (run.waiting_for or {}).get("kind")
        if kind == "approval":
            action = (run.waiting_for or {}).get("default") or "reject"
        elif kind == "sleep":
            action = "wake"
        else:
            action = "fail"
        found.append(
            Finding(
                str(run.public_id), run.tenant.slug, "deadline_passed", action, evidence_of(run)
            )
        )
    orphans = Run.objects.filter(
        root__isnull=False, status__in=ACTIVE, parent__status__in=TERMINAL
    ).select_related("tenant", "parent")
    for run in orphans:
        evidence = {**evidence_of(run), "parent_status": run.parent.status if run.parent else None}
        found.append(
            Finding(str(run.public_id), run.tenant.slug, "parent_ended", "cancel", evidence)
        )
    return found


def reconcile_once(
    *, dry_run: bool = False, only: set[str] | None = None, now: dt.datetime | None = None
) -> list[Finding]:
    """Find and (unless `dry_run`) resolve orphaned runs. `only` limits it to these run ids."""
    findings = [f for f in candidates(now) if only is None or f.run_id in only]
    if dry_run:
        return findings
    for finding in findings:
        try:
            finding.result = _resolve(finding)
            observe.reconciled(finding)
        except ServiceError as exc:
            finding.result = f"skipped: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - one bad run must not stop the others
            log.exception("reconcile of run %s failed", finding.run_id)
            finding.result = f"error: {exc}"
    return findings


@transaction.atomic
def _resolve(finding: Finding) -> str:
    run = (
        Run.objects.select_for_update(of=("self",))
        .select_related("tenant", "graph", "thread")
        .get(public_id=finding.run_id)
    )
    # Re-check under the lock: the run may have moved since it was listed.
    if (
        evidence_of(run)["epoch"] != finding.evidence["epoch"]
        or run.status != finding.evidence["status"]
    ):
        return "skipped: the run changed"
    fence = {"epoch": run.epoch}
    if finding.problem == "parent_ended":
        from runs.services.controls import cancel_run

        # Force: the child's worker, if any, is its parent's, which has moved on.
        cancel_run(run, by="reconciler", force=True, reason="its parent run ended")
        return "cancelled"
    if finding.problem == "lease_expired":
        if finding.action == "cancel":
            finish(
                run,
                RunStatus.CANCELLED,
                fence=fence,
                err=error(
                    "cancelled",
                    "Cancelled; the worker died while cancelling.",
                    evidence=finding.evidence,
                ),
            )
            return "cancelled"
        if finding.action == "resume":
            requeue(
                run,
                reason="lease_expired",
                fence=fence,
                event="run.resurrected",
                epoch=F("epoch") + 1,
                recoveries=F("recoveries") + 1,
                data={"evidence": finding.evidence},
            )
            return "requeued from the last checkpoint"
        finish(
            run,
            RunStatus.INTERRUPTED,
            fence=fence,
            err=error(
                "orphaned",
                "The worker stopped renewing its lease and the run ran out of recoveries.",
                evidence=finding.evidence,
            ),
            epoch=F("epoch") + 1,
        )
        return "interrupted"
    if finding.problem == "never_claimed":
        requeue(run, reason="never_claimed", fence=fence, data={"evidence": finding.evidence})
        return "dispatched again"
    waiting = run.waiting_for or {}
    if finding.action in ("approve", "reject"):
        Control.objects.get_or_create(
            run=run,
            kind=ControlKind.APPROVAL,
            key=waiting["id"],
            defaults={"by": "deadline", "payload": {"decision": finding.action}},
        )
        requeue(
            run,
            reason="deadline",
            fence=fence,
            event="run.resumed",
            data={"applied": finding.action},
        )
        return f"default {finding.action} applied"
    if finding.action == "wake":
        Control.objects.get_or_create(
            run=run,
            kind=ControlKind.WAKE,
            key=waiting["id"],
            defaults={"by": "deadline", "payload": {"decision": "wake"}},
        )
        requeue(run, reason="deadline", fence=fence, event="run.resumed")
        return "woken"
    finish(
        run,
        RunStatus.FAILED,
        fence=fence,
        err=error("deadline", f"No input for {waiting.get('id')} before its deadline."),
    )
    return "failed at deadline"
