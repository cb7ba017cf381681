"""Executing one segment of a run inside a django-q2 task.

A segment claims the run (guarded UPDATE that bumps `epoch`), drives the engine, and commits
each step in one transaction fenced by that epoch. It ends when the run ends, waits, pauses,
is cancelled, loses its lease, or has used its time slice (then it goes back to the
dispatcher, so long runs take turns with other tenants' runs).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone

from runs.engine import (
    CancelToken,
    Executor,
    HttpPolicy,
    NodeError,
    Resolution,
    RunCancelled,
    RunContext,
    StepResult,
    Suspension,
    apply_update,
    initial_state,
)
from runs.engine.pricing import price_table
from runs.events import Fenced, append_events
from runs.models import Checkpoint, Control, ControlKind, Run
from runs.services.dbretry import retry_transient
from runs.services.graphs import spec_for
from runs.services.lifecycle import (
    error,
    finish,
    release_queue_slot,
    requeue,
    transition,
)
from runs.services.steps import (
    KEY_SLACK,
    PendingStep,
    artifact_files_kept_on_commit,
    capped,
    record_step_usage,
    record_unwritten_usage,
    state_size,
    write_steps,
)
from runs.services.watcher import watcher
from runs.sql import NOT_NULL, guarded_update, insert_rows
from runs.status import RunStatus
from tenants import limits

log = logging.getLogger(__name__)

# A stretch of pure steps is committed together once it is this old (seconds), so live
# viewers still see progress.
PURE_BATCH_SECONDS = 0.05

# The statuses a segment's own run can have while this worker still holds it.
ACTIVE_HERE = (RunStatus.RUNNING, RunStatus.CANCELLING)

SUSPENSION_CONTROL = {
    "approval": ControlKind.APPROVAL,
    "input": ControlKind.INPUT,
    "sleep": ControlKind.WAKE,
}


def conf(name: str) -> float:
    return float(settings.RUNYARD[name])


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def claim_run(run_pk: int, *, worker: str | None = None) -> Run | None:
    """Take a dispatched run: one guarded UPDATE; None when someone else has it."""
    worker = worker or worker_id()

    def claim() -> Run | None:
        with transaction.atomic():
            return _claim(run_pk, worker)

    return retry_transient(claim)


def claim_next(*, worker: str | None = None) -> Run | None:
    """Dispatch the next run owed a slot to this worker and claim it, in one transaction;
    None when nothing is owed (or the cluster is at capacity)."""
    from runs.dispatch import dispatch_here

    worker = worker or worker_id()

    def claim() -> Run | None:
        with transaction.atomic():
            run_pk = dispatch_here()
            return None if run_pk is None else _claim(run_pk, worker)

    return retry_transient(claim)


def _claim(run_pk: int, worker: str) -> Run | None:
    """The guarded claim; in the caller's transaction."""
    now = timezone.now()
    taken = guarded_update(
        Run,
        run_pk,
        where={"status": RunStatus.QUEUED, "dispatched_at": NOT_NULL},
        sets={
            "status": RunStatus.RUNNING,
            "lease_owner": worker,
            "lease_expires_at": now + dt.timedelta(seconds=conf("LEASE_SECONDS")),
            "heartbeat_at": now,
        },
        increments={"epoch": 1, "claims": 1},
    )
    if not taken:
        return None
    run = Run.objects.select_related("tenant", "graph", "thread").get(pk=run_pk)
    updates: dict[str, Any] = {}
    if run.started_at is None:
        updates = _first_claim(run, now)
    append_events(
        run,
        [("run.started", {"claim": run.claims, "worker": worker})],
        fence={"epoch": run.epoch},
        **updates,
    )
    for key, value in updates.items():
        setattr(run, key, value)
    release_queue_slot(run)  # a started run no longer counts as queued
    return run


def _first_claim(run: Run, now: dt.datetime) -> dict[str, Any]:
    """Initial state is built when the run starts, so an enqueued run on a thread sees the
    state its predecessor left."""
    spec = spec_for(run.graph)
    thread_state = dict(run.thread.state) if run.thread else {}
    if run.position:  # a fork: the checkpoint's state, with this run's input merged in
        state = apply_update(spec, run.state, run.input)
        position = run.position
    else:
        state = apply_update(spec, {**initial_state(spec, {}), **thread_state}, run.input)
        position = {"node": spec.start, "step": 0, "visits": {}}
    insert_rows(
        Checkpoint,
        [
            {
                "public_id": uuid.uuid4(),
                "run": run.pk,
                "thread": run.thread_id,
                "step_index": 0,
                "state": state,
                "position": position,
                "created_at": now,
            }
        ],
    )
    return {
        "state": state,
        "position": position,
        "started_at": now,
        "thread_state_before": thread_state if run.thread else None,
    }


class Segment:
    """One claimed stretch of a run's execution in this worker."""

    def __init__(self, run: Run, *, slice_started: float | None = None) -> None:
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
        self.deltas: list[tuple[str, str]] = []
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
        """Events a slow step shows before it commits: step.started and llm deltas."""
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
            if self.deltas:
                merged: dict[str, str] = {}
                for node, text in self.deltas:
                    merged[node] = merged.get(node, "") + text
                events += [("llm.delta", {"node": n, "text": t}) for n, t in merged.items()]
                self.deltas = []
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
        with self.lock:
            self.deltas.append((node, text))

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
        from runs.services.subgraphs import run_child

        return run_child(self, graph_name, data, depth, **call)

    def context(self) -> RunContext:
        tenant = self.run.tenant
        return RunContext(
            cancel=self.token,
            resolve=self.resolve,
            on_step_start=self.on_step_start,
            on_delta=self.on_delta,
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

    # --- the loop -----------------------------------------------------------------------------

    def execute(self) -> str:
        watcher.add(self)
        try:
            return self._stop_if_budget_used_up() or self._loop()
        except Fenced:
            if not self.fenced:  # a commit's guard failed: maybe a cancel landed meanwhile
                return self._on_cancelled("commit_fenced")
            log.info("run %s: fenced out at epoch %s", self.run.public_id, self.epoch)
            return "fenced"
        except RunCancelled as exc:
            return self._on_cancelled(exc.reason)
        finally:
            watcher.remove(self)

    def _loop(self) -> str:
        while True:
            if self.guidance_pending:
                self._apply_guidance()
            # Measured once per (re)start: the state may come from input and a thread, a
            # fork's checkpoint, or guidance; each step then adds its update's size.
            if self.run.tenant.max_state_bytes is not None:
                self.state_bytes = state_size(self.run.state)
                over = limits.check_state_size(self.run.tenant, self.state_bytes)
                if over is not None:
                    # Over from the start (input on a thread's state): the thread keeps the
                    # state it had, or every later run on it would fail the same way.
                    before = self.run.thread_state_before if self.run.thread_id else None
                    return self._fail_limit(over, **({} if before is None else {"state": before}))
            restart = False
            prev_state, prev_position = self.run.state, self.run.position
            executor = Executor(self.spec, self.context())
            for result in executor.run(self.run.state, self.run.position):
                if self.fenced:
                    record_unwritten_usage(self.run, [p.result for p in self.pending] + [result])
                    raise Fenced("lease lost")
                if result.status == "suspended":
                    return self._commit_pending() or self._suspend(result)
                with self.lock:
                    self.current = None
                    if not self.pending:
                        self.batch_started = time.monotonic()
                    self.pending.append(
                        PendingStep(
                            result,
                            prev_state,
                            prev_position,
                            started_written=result.index in self.started_emitted,
                        )
                    )
                prev_state, prev_position = result.state, result.position
                if self._may_defer(executor, result):
                    continue
                outcome = self._commit_pending()
                if outcome:
                    return outcome
                if self.pause_requested:
                    return self._pause()
                # A child runs inside its parent's turn; only a root hands the turn back.
                if self.run.parent_id is None and (
                    time.monotonic() - self.started_mono > conf("SEGMENT_SECONDS")
                ):
                    return self._yield_turn()
                if self.guidance_pending:
                    restart = True
                    break
            if not restart:
                return self._ended_at_position()

    def _fence(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "status": RunStatus.RUNNING}

    def _may_defer(self, executor: Executor, result: StepResult) -> bool:
        """Whether this step's commit may wait for the next one's: only a plain completed pure
        step followed by another pure step, in a short stretch, with no control pending."""
        if (
            result.status != "completed"
            or result.done
            or result.run_error is not None
            or result.artifacts
            or self.consumed
        ):
            return False
        nodes = executor.plan.nodes
        following = result.position.get("node")
        if not nodes[result.node].kind.pure or following not in nodes:
            return False
        if not nodes[following].kind.pure:
            return False
        if len(self.pending) >= conf("PURE_BATCH_STEPS"):
            return False
        cap = self.run.tenant.max_state_bytes
        if cap is not None:
            # A stretch of pure steps lives in memory until its commit: once the state might
            # have passed the cap, commit now (and measure) instead of computing on.
            grown = sum(p.result.update_bytes for p in self.pending)
            if self.state_bytes + grown + KEY_SLACK * len(self.pending) > cap:
                return False
        if time.monotonic() - self.batch_started > PURE_BATCH_SECONDS:
            return False
        return not (self.pause_requested or self.guidance_pending or self.token.cancelled)

    def _commit_pending(self) -> str | None:
        """Commit the executed steps not yet written, in one transaction. Returns the run's
        outcome when the last of them ended it (or a limit stopped it)."""
        batch = self.pending
        if not batch:
            return None
        run = self.run

        def commit() -> str | None:
            saved = run.__dict__.copy()
            try:
                with artifact_files_kept_on_commit(), transaction.atomic():
                    written = write_steps(
                        run,
                        batch,
                        epoch=self.epoch,
                        fence=self._fence(),
                        wall_started=self.wall_started,
                        state_bytes=self.state_bytes,
                    )
                    self.state_bytes = written.state_bytes
                    if self.consumed:
                        Control.objects.filter(pk__in=self.consumed).update(
                            consumed_at=timezone.now()
                        )
                    last = written.steps[-1]
                    if written.check.exceeded is None:
                        u = written.usage
                        written.check.exceeded = limits.check_spend(
                            run.tenant, tokens=u.tokens_in + u.tokens_out, cost_usd=u.cost_usd
                        )
                    outcome = self._after_step(
                        last.result, written.check, last.prev_state, last.prev_position
                    )
                    record_step_usage(run, written)
                    return outcome
            except BaseException:
                run.__dict__.update(saved)  # the transaction rolled back; so does the run
                raise

        try:
            outcome = retry_transient(commit)
        except Exception:
            record_unwritten_usage(run, [p.result for p in batch])
            raise
        with self.lock:
            self.pending = []
        self.consumed = []
        return outcome

    def _after_step(
        self,
        result: StepResult,
        check: limits.RunLimitCheck,
        prev_state: dict[str, Any],
        prev_position: dict[str, Any] | None,
    ) -> str | None:
        run = self.run
        if result.done:
            finish(run, RunStatus.SUCCEEDED, fence={"epoch": self.epoch})
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
        fatal = bool(err.get("fatal"))
        if not fatal and run.resurrections < self.spec.max_resurrections:
            # Resume at the failed node with the state from before it; step numbers go on.
            position = {**(prev_position or {}), "step": result.index}
            requeue(
                run,
                reason="resurrected",
                fence={"epoch": self.epoch},
                event="run.resurrected",
                state=prev_state,
                position=position,
                resurrections=run.resurrections + 1,
                data={"error": err, "attempt": run.resurrections + 1},
            )
            return "resurrected"
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
                guidance_pending=False,
            )
            Control.objects.filter(pk__in=[c.pk for c in controls]).update(
                consumed_at=timezone.now()
            )
            self.run.state = state
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


def run_segment(run_pk: int) -> str:
    """Claim and execute the run until it ends, waits, pauses, or hands its turn back. Then,
    while this queue task's time slice lasts, take on the next run the dispatcher owes a
    worker (a backlog then costs no broker round trip per run). Returns the first outcome."""
    close_old_connections()
    task_started = time.monotonic()
    outcome = _execute_one(run_pk, task_started)
    from runs.dispatch import dispatch_once

    try:
        while time.monotonic() - task_started < conf("SEGMENT_SECONDS"):
            run = claim_next()
            if run is None:
                break
            _execute_claimed(run, task_started)
        dispatch_once()
    except Exception:  # noqa: BLE001 - the scheduler dispatches on its next tick anyway
        log.warning("dispatch after segment failed", exc_info=True)
    return outcome


def _execute_one(run_pk: int, task_started: float) -> str:
    try:
        run = claim_run(run_pk)
    except Exception as exc:
        log.exception("run %s could not be claimed", run_pk)
        return _fail_unclaimable(run_pk, exc)
    if run is None:
        return "not_claimed"
    return _execute_claimed(run, task_started)


def _execute_claimed(run: Run, task_started: float) -> str:
    try:
        return Segment(run, slice_started=task_started).execute()
    except NodeError as exc:  # a node error escaping the engine is a bug in a node kind
        return _fail_unexpected(run, exc)
    except Exception as exc:
        log.exception("run %s crashed in its segment", run.public_id)
        return _fail_unexpected(run, exc)


def _fail_unclaimable(run_pk: int, exc: BaseException) -> str:
    """A run whose start itself fails (e.g. its graph no longer parses here) ends failed
    instead of being dispatched again forever."""
    with transaction.atomic():
        run = Run.objects.select_related("tenant").filter(pk=run_pk).first()
        if run is None or run.status != RunStatus.QUEUED:
            return "not_claimed"
        finish(
            run,
            RunStatus.FAILED,
            fence={"epoch": run.epoch},
            err=error("start_failed", f"{type(exc).__name__}: {exc}", fatal=True),
        )
    return "failed"


def _fail_unexpected(run: Run, exc: BaseException) -> str:
    try:
        with transaction.atomic():
            current = Run.objects.filter(pk=run.pk, epoch=run.epoch).values("status").first()
            if current is None:
                return "fenced"
            run.status = current["status"]
            finish(
                run,
                RunStatus.FAILED,
                fence={"epoch": run.epoch},
                err=error("internal_error", f"{type(exc).__name__}: {exc}"),
            )
    except Exception:  # noqa: BLE001 - the reconciler resolves it from the lease evidence
        log.exception("could not record the failure of run %s", run.public_id)
        return "crashed"
    return "failed"
