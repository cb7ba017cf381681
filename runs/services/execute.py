"""Executing one segment of a run inside a django-q2 task.

A segment claims the run (guarded UPDATE that bumps `epoch`), drives the engine, and commits
each step in one transaction fenced by that epoch. It ends when the run ends, waits, pauses,
is cancelled, loses its lease, or has used its time slice (then it goes back to the
dispatcher, so long runs take turns with other tenants' runs).

The pieces: `claim` (taking the run), `segment` (a segment's state, watcher tick and engine
callbacks), `segment_endings` (how it ends), and here the loop that commits steps, plus
`run_segment`, the queue task's entry point, with its failure fallbacks.
"""

from __future__ import annotations

import logging
import time

from django.db import close_old_connections, transaction
from django.utils import timezone

from observability import hooks as observe
from runs.draining import draining
from runs.engine import (
    Executor,
    NodeError,
    RunCancelled,
    StepResult,
)
from runs.events import Fenced
from runs.models import Control, Run
from runs.services.claim import claim_next, claim_run, conf, hand_back_dispatch
from runs.services.dbretry import retry_transient
from runs.services.lifecycle import (
    error,
    fail_unexpected,
    finish,
)
from runs.services.segment_endings import SegmentEndings
from runs.services.steps import (
    KEY_SLACK,
    PendingStep,
    Written,
    artifact_files_kept_on_commit,
    can_write_at_once,
    plan_steps,
    record_step_usage,
    record_unwritten_usage,
    state_size,
    write_at_once,
    write_steps,
)
from runs.services.trees import NO_TREE
from runs.services.watcher import watcher
from runs.sql import pipelined
from runs.status import RunStatus
from tenants import limits

log = logging.getLogger(__name__)


# A stretch of pure steps is committed together once it is this old (seconds), so live
# viewers still see progress.
PURE_BATCH_SECONDS = 0.05


class Segment(SegmentEndings):
    """One claimed stretch of a run's execution in this worker."""

    # --- the loop -----------------------------------------------------------------------------

    def execute(self) -> str:
        with observe.executing(self):  # log lines (and the span) name the run
            return self._execute()

    def _execute(self) -> str:
        watcher.add(self)
        try:
            if draining() and self.run.parent_id is None:  # the stop came as it was claimed
                return self._hand_back()
            return self._stop_if_budget_used_up() or self._loop()
        except Fenced:
            if not self.fenced:  # a commit's guard failed: maybe a cancel landed meanwhile
                return self._on_cancelled("commit_fenced")
            log.info("run %s: fenced out at epoch %s", self.run.public_id, self.epoch)
            return "fenced"
        except RunCancelled as exc:
            if exc.reason == "shutdown":  # the drain's grace is over (runs/draining.py)
                return self._commit_pending() or self._hand_back()
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
                # This worker is stopping: another continues the run from this step at once.
                # A child runs on inside its parent's step (the grace bounds it).
                if draining() and self.run.parent_id is None:
                    return self._hand_back()
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
        committed: list[PendingStep] = []

        def commit() -> str | None:
            saved = run.__dict__.copy()
            try:
                at_once = self._write_at_once(batch)
                if at_once is not None:
                    self.state_bytes = at_once.state_bytes
                    committed[:] = at_once.steps
                    return None
                # The pipeline inside the atomic block: psycopg syncs an open pipeline each
                # time autocommit is switched (a round trip), as atomic does on entry and exit.
                with artifact_files_kept_on_commit(), transaction.atomic(), pipelined() as pipe:
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
                    if self._run_ends(last.result, written.check) and not last.result.done:
                        # Failing or resurrecting it goes through the ORM, which reads
                        # results (an UPDATE's count); a success is `finish`, which reads
                        # nothing but its own guarded UPDATE's result.
                        pipe.end()
                    outcome = self._after_step(
                        last.result, written.check, last.prev_state, last.prev_position
                    )
                    record_step_usage(run, written)
                    committed[:] = written.steps
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
        observe.steps_committed(self, committed)
        return outcome

    def _write_at_once(self, batch: list[PendingStep]) -> Written | None:
        """Write and commit `batch` at once (`write_at_once`: one statement on PostgreSQL)
        when its rows are all it writes: no control consumed, no artifact, no budget to lock,
        nothing ending the run. None: nothing was written, the transaction's way must do it."""
        run = self.run
        if self.consumed or not can_write_at_once(run):
            return None
        if any(p.result.artifacts for p in batch):
            return None
        planned = plan_steps(
            run,
            batch,
            epoch=self.epoch,
            wall_started=self.wall_started,
            tree=NO_TREE,
            state_bytes=self.state_bytes,
        )
        written = planned.written
        u = written.usage
        spent = u.tokens_in + u.tokens_out > 0 or u.cost_usd > 0
        if self._run_ends(written.steps[-1].result, written.check) or (
            spent and limits.has_budgets(run.tenant)
        ):
            return None
        write_at_once(run, planned, fence=self._fence())
        return written


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
                if draining():  # owed runs go to workers that are not stopping
                    dispatch_once()
                break  # otherwise nothing is owed now: nothing for dispatch_once either
            _execute_claimed(run, task_started)
        else:
            dispatch_once()  # the time slice is over: runs still owed go to the broker
    except Exception:  # noqa: BLE001 - the scheduler dispatches on its next tick anyway
        log.warning("dispatch after segment failed", exc_info=True)
    return outcome


def _execute_one(run_pk: int, task_started: float) -> str:
    if draining():
        return hand_back_dispatch(run_pk)
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
        return fail_unexpected(run, exc)
    except Exception as exc:
        log.exception("run %s crashed in its segment", run.public_id)
        return fail_unexpected(run, exc)


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
