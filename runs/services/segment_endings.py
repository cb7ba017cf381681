"""How a segment ends: finished, failed (a tenant limit, or resurrected instead), waiting for a
human or a timer, paused, handing its turn back, or cancelled. Guidance, applied between steps,
is here too: like an ending, it is a control the loop acts on outside a step.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from runs import draining
from runs.engine import (
    StepResult,
)
from runs.events import Fenced, append_events
from runs.models import Control, ControlKind, Run
from runs.services import resurrection
from runs.services.dbretry import retry_transient
from runs.services.lifecycle import (
    error,
    finish,
    requeue,
    transition,
)
from runs.services.segment import SegmentBase
from runs.services.steps import (
    capped,
)
from runs.status import RunStatus
from tenants import limits

log = logging.getLogger(__name__)


# The statuses a segment's own run can have while this worker still holds it.
ACTIVE_HERE = (RunStatus.RUNNING, RunStatus.CANCELLING)


class SegmentEndings(SegmentBase):
    """The endings of a segment; the loop (`runs.services.execute.Segment`) picks one."""

    def _commit_pending(self) -> str | None:
        raise NotImplementedError

    def _run_ends(self, result: StepResult, check: limits.RunLimitCheck) -> bool:
        """Whether `_after_step` will end the run (or its segment) rather than go on."""
        return bool(
            result.done
            or result.run_error
            or self.tree_limit is not None
            or check.exceeded is not None
        )

    def _after_step(
        self,
        result: StepResult,
        check: limits.RunLimitCheck,
        prev_state: dict[str, Any],
        prev_position: dict[str, Any] | None,
    ) -> str | None:
        run = self.run
        if result.done:
            # In the step's transaction, whose UPDATE of the run holds its row: the end's
            # UPDATE is checked when the pipeline ends instead of waited for (one round trip).
            finish(run, RunStatus.SUCCEEDED, fence={"epoch": self.epoch}, held=True)
            return "succeeded"
        if result.run_error and self.tree_limit is None:
            return self._fail_or_resurrect(result, prev_state, prev_position)
        exc = self.tree_limit or check.exceeded
        if exc is not None:
            return self._fail_limit(exc, in_transaction=True)
        return None

    def _stop_if_budget_used_up(self) -> str | None:
        """A run that starts (or resumes) once its tenant's budget is used up stops before its
        next step spends anything; one in flight stops at its step's commit (check_spend)."""
        try:
            limits.check_budgets(self.run.tenant, refusing="the run")
            return None
        except limits.LimitExceeded as exc:
            return self._fail_limit(exc)

    def _fail_limit(
        self, exc: limits.LimitExceeded, *, in_transaction: bool = False, **updates: Any
    ) -> str:
        def commit() -> str:
            with transaction.atomic():
                finish(
                    self.run,
                    RunStatus.FAILED,
                    fence={"epoch": self.epoch},
                    err=error(exc.code, exc.message, **exc.details),
                    extra_events=[
                        (
                            "limit.exceeded",
                            {"limit": exc.limit, "message": exc.message, **exc.details},
                        )
                    ],
                    **updates,
                )
            return "failed"

        return commit() if in_transaction else retry_transient(commit)

    def _ended_at_position(self) -> str:
        """The engine had nothing to run: the position has no next node (a fork of a run's
        final checkpoint). The run ends here with its state, as a LangGraph run resumed from
        a finished checkpoint returns that state; it never sits running with nothing to do."""
        self._commit_pending()  # nothing is pending unless a step was deferred; never lose it
        position = self.run.position or {}
        if position.get("node") is not None:  # cannot happen: the engine yields a failed step
            raise RuntimeError(f"run stopped at node {position.get('node')!r} with no step")

        def commit() -> str:
            with transaction.atomic():
                finish(self.run, RunStatus.SUCCEEDED, fence={"epoch": self.epoch})
            return "succeeded"

        return retry_transient(commit)

    def _fail_or_resurrect(
        self, result: StepResult, prev_state: dict[str, Any], prev_position: dict[str, Any] | None
    ) -> str:
        run, err = self.run, dict(result.run_error or {})
        most = resurrection.allowed(self.spec, run.tenant)
        why = resurrection.fatal_reason(err)
        if why is None and run.resurrections < most:
            # Resume at the failed node with the state from before it; step numbers go on.
            # The run waits its cooldown queued: the dispatcher skips it until `not_before`.
            position = {**(prev_position or {}), "step": result.index}
            attempt, cooldown = run.resurrections + 1, resurrection.cooldown_seconds()
            requeue(
                run,
                reason="resurrected",
                fence={"epoch": self.epoch},
                event="run.resurrected",
                state=prev_state,
                position=position,
                resurrections=attempt,
                not_before=resurrection.not_before(cooldown),
                data={
                    "error": err,
                    "attempt": attempt,
                    "max": most,
                    "node": position.get("node") or result.node,
                    "cooldown_seconds": cooldown,
                },
            )
            return "resurrected"
        if why is not None and not err.get("fatal"):
            err.update(fatal=True, fatal_reason=why)
        elif why is None and most:
            err["resurrections"] = {"attempts": run.resurrections, "max": most}
        finish(run, RunStatus.FAILED, fence={"epoch": self.epoch}, err=err)
        return "failed"

    def _suspend(self, result: StepResult) -> str:
        susp = result.suspension
        assert susp is not None

        def commit() -> str:
            with transaction.atomic():
                run, now = self.run, timezone.now()
                same = bool(run.waiting_for and run.waiting_for.get("id") == susp.id)
                deadline = (
                    run.wait_deadline
                    if same
                    else (now + dt.timedelta(seconds=susp.timeout) if susp.timeout else None)
                )
                waiting_for = {
                    "kind": susp.kind,
                    "id": susp.id,
                    "node": susp.node,
                    "message": susp.message,
                    "default": susp.default,
                    "deadline": deadline.isoformat() if deadline else None,
                    "data": susp.data,
                }
                events: list[tuple[str, dict[str, Any]]] = []
                # A message or its data may be as large as an expression can build.
                shown = capped(waiting_for)
                if not same and susp.kind in ("approval", "input"):
                    events.append((f"{susp.kind}.requested", shown))
                events.append(("run.waiting", {"waiting_for": shown}))
                transition(
                    run,
                    RunStatus.WAITING,
                    events=events,
                    fence={"epoch": self.epoch},
                    waiting_for=waiting_for,
                    wait_deadline=deadline,
                    lease_owner="",
                    lease_expires_at=None,
                    position=result.position,
                )
                # A decision that landed while we were suspending must not be left unseen.
                if self.resolve(susp) is not None:
                    self.consumed = []
                    requeue(run, reason="answered")
                    return "requeued"
                return "waiting"

        return retry_transient(commit)

    def _pause(self) -> str:
        with transaction.atomic():
            transition(
                self.run,
                RunStatus.PAUSED,
                events=[("run.paused", {})],
                fence={"epoch": self.epoch},
                pause_requested=False,
                lease_owner="",
                lease_expires_at=None,
            )
        return "paused"

    def _yield_turn(self) -> str:
        with transaction.atomic():
            requeue(self.run, reason="time_slice", fence={"epoch": self.epoch})
        return "yielded"

    def _hand_back(self) -> str:
        """This worker is stopping: the run goes back to the queue and is dispatched at once,
        to continue from its last committed step on another worker. Not a recovery: nothing
        was lost. A child run is left as it is: its parent's next owner takes it over."""
        if self.run.parent_id is not None:
            return "handed_back"

        def commit() -> str:
            with transaction.atomic():
                requeue(self.run, reason="shutdown", fence=self._fence())
            return "handed_back"

        try:
            return retry_transient(commit)
        except Fenced:  # a cancel landed meanwhile, or the run is no longer ours
            return self._on_cancelled("commit_fenced")

    def drain_tick(self) -> None:
        """The watcher's, while this process drains: once the grace is over, cancel the step
        in flight; the loop then hands the run back (`execute`, reason `shutdown`)."""
        if draining.draining_for() >= draining.grace_seconds():
            self.token.cancel("shutdown")

    def abandon(self) -> None:
        """The watcher's, when the step ignored its cancellation and the process is about to
        end: hand the run back from here. The stuck step dies with the process; had it
        committed, the status guard would have fenced it."""
        if self.run.parent_id is not None:
            return
        with transaction.atomic():
            run = (
                Run.objects.select_related("tenant")
                .filter(pk=self.run.pk, epoch=self.epoch, status=RunStatus.RUNNING)
                .first()
            )
            if run is not None:
                requeue(
                    run, reason="shutdown", fence={"epoch": self.epoch}, data={"abandoned": True}
                )

    def _apply_guidance(self) -> None:
        with transaction.atomic():
            controls = list(
                Control.objects.filter(
                    run=self.run, kind=ControlKind.GUIDANCE, consumed_at__isnull=True
                ).order_by("id")
            )
            state = dict(self.run.state)
            messages = [c.payload.get("message") for c in controls]
            if messages:
                state["guidance"] = list(state.get("guidance") or []) + messages
            append_events(
                self.run,
                [("guidance.received", capped({"messages": messages}))] if messages else [],
                fence=self._fence(),
                state=state,
                state_behind=False,
                guidance_pending=False,
            )
            Control.objects.filter(pk__in=[c.pk for c in controls]).update(
                consumed_at=timezone.now()
            )
            self.run.state, self.run.state_behind = state, False
            self.guidance_pending = False

    def _on_cancelled(self, reason: str) -> str:
        if self.fenced or reason == "fenced":
            return "fenced"

        def commit() -> str:
            with transaction.atomic():
                run = self.run
                row = Run.objects.filter(pk=run.pk).values("status", "epoch", "cancel_action").get()
                wanted = (RunStatus.CANCELLING,) if reason == "commit_fenced" else ACTIVE_HERE
                if row["epoch"] != self.epoch or row["status"] not in wanted:
                    log.info("run %s: fenced out at epoch %s", run.public_id, self.epoch)
                    return "fenced"
                run.status, run.cancel_action = row["status"], row["cancel_action"]
                if reason == "max_wall_seconds" and run.status == RunStatus.RUNNING:
                    cap = run.tenant.max_wall_seconds
                    msg = f"The run crossed max_wall_seconds={cap}."
                    finish(
                        run,
                        RunStatus.TIMED_OUT,
                        fence={"epoch": self.epoch},
                        err=error("limit_exceeded.max_wall_seconds", msg),
                        extra_events=[
                            ("limit.exceeded", {"limit": "max_wall_seconds", "message": msg})
                        ],
                    )
                    return "timed_out"
                finish(
                    run,
                    RunStatus.CANCELLED,
                    fence={"epoch": self.epoch},
                    err=error("cancelled", f"Cancelled ({run.cancel_action or 'interrupt'})."),
                )
                return "cancelled"

        return retry_transient(commit)
