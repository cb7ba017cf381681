"""Writing steps: each step's Step row, checkpoint, events, usage and artifacts, committed
together in the caller's transaction and fenced by the segment's epoch.

A batch is one step, or a stretch of consecutive pure steps (transform, end: computed in
memory, no call out of the process) closed by the step after them. Each step is still
written whole in one transaction; a stretch of pure steps just shares it. If the worker dies
before the commit, the run resumes from the last committed checkpoint and computes those pure
steps again, which nobody can tell from the first time: nothing outside the process saw them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from runs.engine import StepResult, Usage
from runs.events import append_events
from runs.models import Artifact, Checkpoint, Run, Step
from runs.services.lifecycle import as_decimal
from runs.sql import insert_rows
from tenants import limits


@dataclass(slots=True)
class PendingStep:
    """An executed step waiting for its commit, with what resurrecting it would need."""

    result: StepResult
    prev_state: dict[str, Any]
    prev_position: dict[str, Any] | None
    #: step.started was already written live by the watcher (a slow step).
    started_written: bool


@dataclass(slots=True)
class Written:
    """What `write_steps` committed: the steps (a prefix of the batch), the last one's limit
    check, and their usage for the ledger."""

    steps: list[PendingStep]
    check: limits.RunLimitCheck
    usage: Usage


def ts(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def step_events(p: PendingStep) -> list[tuple[str, dict[str, Any]]]:
    r = p.result
    step_data = {"index": r.index, "node": r.node, "attempt": r.attempt}
    events: list[tuple[str, dict[str, Any]]] = []
    if not p.started_written:
        events.append(("step.started", step_data))
    events += r.events
    events.append(
        (
            "step.completed" if r.status == "completed" else "step.failed",
            {
                **step_data,
                "status": r.status,
                "duration_ms": max(0, int((r.finished_at - r.started_at) * 1000)),
                "usage": r.usage.to_dict(),
                "error": r.error,
                "next": (r.position or {}).get("node"),
            },
        )
    )
    if r.update:
        events.append(("state.updated", {"index": r.index, "node": r.node, "update": r.update}))
    return events


def write_steps(
    run: Run,
    batch: list[PendingStep],
    *,
    epoch: int,
    fence: dict[str, Any],
    wall_started: dt.datetime,
) -> Written:
    """Write `batch` in order, up to and including the first step that crosses a limit (the
    run stops there; later steps of the batch were pure and are dropped unseen).

    Must run in a transaction. The fenced UPDATE of the run goes first: a worker that lost the
    run writes nothing at all. Updates `run` in memory; the caller restores it if the
    transaction fails.
    """
    now = timezone.now()
    steps, tokens_in, tokens_out = run.steps, run.tokens_in, run.tokens_out
    cost = run.cost_usd
    warned = list(run.warned_limits)
    wall_seconds = (now - wall_started).total_seconds()
    usage = Usage()
    events: list[tuple[str, dict[str, Any]]] = []
    step_rows: list[dict[str, Any]] = []
    checkpoint_rows: list[dict[str, Any]] = []
    written: list[PendingStep] = []
    check = limits.RunLimitCheck()
    for p in batch:
        r, u = p.result, p.result.usage
        steps += 1
        tokens_in, tokens_out = tokens_in + u.tokens_in, tokens_out + u.tokens_out
        cost += as_decimal(u.cost_usd)
        usage.add(u)
        events += step_events(p)
        check = limits.check_run_limits(
            run.tenant,
            steps=steps,
            tokens=tokens_in + tokens_out,
            cost_usd=cost,
            wall_seconds=wall_seconds,
            already_warned=warned,
            now=now,
            step_tokens=usage.tokens_in + usage.tokens_out,
            step_cost=usage.cost_usd,
        )
        for name, used, cap in check.warnings:
            warned.append(name)
            events.append(("limit.warning", {"limit": name, "used": used, "cap": cap}))
        step_rows.append(
            {
                "run": run.pk,
                "index": r.index,
                "node": r.node,
                "status": r.status,
                "attempt": r.attempt,
                "started_at": ts(r.started_at),
                "finished_at": ts(r.finished_at),
                "duration_ms": max(0, int((r.finished_at - r.started_at) * 1000)),
                "usage": u.to_dict(),
                "update": r.update,
                "error": r.error,
                "epoch": epoch,
            }
        )
        checkpoint_rows.append(
            {
                "public_id": uuid.uuid4(),
                "run": run.pk,
                "thread": run.thread_id,
                "step_index": r.index,
                "state": r.state,
                "position": r.position,
                "created_at": now,
            }
        )
        written.append(p)
        if check.exceeded is not None:
            break
    last = written[-1].result
    lease = dt.timedelta(seconds=float(settings.RUNYARD["LEASE_SECONDS"]))
    append_events(
        run,
        events,
        fence=fence,
        state=last.state,
        position=last.position,
        steps=steps,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
        warned_limits=warned,
        heartbeat_at=now,
        lease_expires_at=now + lease,
    )
    run.state, run.position, run.steps = last.state, last.position, steps
    run.tokens_in, run.tokens_out, run.cost_usd = tokens_in, tokens_out, cost
    run.warned_limits = warned
    step_pks = insert_rows(Step, step_rows)
    insert_rows(Checkpoint, checkpoint_rows)
    for p, pk in zip(written, step_pks, strict=True):
        if p.result.artifacts:
            store_artifacts(run, Step(pk=pk, run=run, index=p.result.index), p.result, fence)
    return Written(written, check, usage)


def record_step_usage(run: Run, written: Written) -> None:
    """The ledger is written last in a step's transaction: every transaction locks the tenant
    row before the ledger row (run creation does too), so the two can never deadlock."""
    u = written.usage
    limits.record_usage(
        run.tenant_id,
        shard=limits.usage_shard(run.pk),
        steps=len(written.steps),
        tokens_in=u.tokens_in,
        tokens_out=u.tokens_out,
        cost_usd=Decimal(str(round(u.cost_usd, 6))),
        by_model=u.by_model,
    )


class ArtifactFiles(threading.local):
    """The files `store_artifacts` wrote in the transaction now open in this thread."""

    names: list[str] | None = None


_written = ArtifactFiles()


@contextmanager
def artifact_files_kept_on_commit() -> Iterator[None]:
    """Wrap a step's transaction (outside its `atomic`): if it fails, commit included, the
    artifact files it wrote are deleted, so no file outlives its rolled-back row. A process
    that dies in the middle leaves files with no row at worst, never a row with no file."""
    outer, names = _written.names, list[str]()
    _written.names = names
    try:
        yield
    except BaseException:
        for name in names:
            default_storage.delete(name)
        raise
    else:
        if outer is not None:  # nested: the outer transaction can still roll them back
            outer.extend(names)
    finally:
        _written.names = outer


def store_artifacts(run: Run, step: Step, result: StepResult, fence: dict[str, Any]) -> None:
    """Artifact contents go through Django's storage; the rows and events into the step's
    transaction, which must be inside `artifact_files_kept_on_commit`."""
    written = _written.names
    if written is None:
        raise RuntimeError("store_artifacts outside artifact_files_kept_on_commit()")
    events = []
    for art in result.artifacts:
        row = Artifact(
            tenant_id=run.tenant_id,
            run=run,
            step=step,
            name=art.name,
            content_type=art.content_type,
            size=len(art.data),
            sha256=hashlib.sha256(art.data).hexdigest(),
        )
        row.file.save(art.name, ContentFile(art.data), save=False)
        written.append(str(row.file.name))
        row.save()
        events.append(
            (
                "artifact.created",
                {
                    "id": str(row.public_id),
                    "name": art.name,
                    "content_type": art.content_type,
                    "size": row.size,
                    "sha256": row.sha256,
                    "step": step.index,
                },
            )
        )
    append_events(run, events, fence=fence)
