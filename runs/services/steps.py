"""Writing steps: each step's Step row, checkpoint, events, usage and artifacts, committed
together in the caller's transaction and fenced by the segment's epoch.

A batch is one step, or a stretch of consecutive pure steps (transform, end: computed in
memory, no call out of the process) closed by the step after them. Each step is still
written whole in one transaction; a stretch of pure steps just shares it. If the worker dies
before the commit, the run resumes from the last committed checkpoint and computes those pure
steps again, which nobody can tell from the first time: nothing outside the process saw them.

Containment: each step's merged state is checked against the tenant's `max_state_bytes`
before it is written, from an upper bound kept with each update's size (the engine measured
it), so only a state that may be near the cap is serialised whole. Event data and a step
row's `update` are capped at RUNYARD["MAX_EVENT_BYTES"]; the checkpoint keeps the real state
(as the step's uncapped updates, or a full snapshot: runs/checkpoints.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from runs import checkpoints
from runs.engine import StepResult, Usage
from runs.engine.values import Unstorable, storable_copy, storable_size
from runs.events import Fenced, append_events, publish_on_commit
from runs.guarded_writes import Upsert, update_then_insert
from runs.models import Artifact, Checkpoint, Event, Run, Step
from runs.services import trees
from runs.services.lifecycle import as_decimal
from runs.sql import insert_rows
from tenants import limits

log = logging.getLogger(__name__)


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
    check, their usage for the ledger, and an upper bound of the last state's JSON size."""

    steps: list[PendingStep]
    check: limits.RunLimitCheck
    usage: Usage
    state_bytes: int


# Bytes a reducer may add per updated key beyond the update's own JSON: `add` of two short
# floats can print longer than either (0.1 + 0.2), `append` adds brackets and a comma.
KEY_SLACK = 32


def state_size(state: dict[str, Any]) -> int:
    """The state's size as compact JSON (ASCII-escaped: at least its UTF-8 size)."""
    return storable_size(state)


def _grown(p: PendingStep, bound: int) -> int:
    """An upper bound of the step's state size from the bound before it: a reducer makes a
    key's value at most the old value plus the update's (`replace` only drops the old)."""
    r = p.result
    if not r.update:
        return bound
    update_bytes = r.update_bytes or storable_size(r.update)
    return bound + update_bytes + KEY_SLACK * len(r.update)


def _over_state_limit(p: PendingStep, exc: limits.LimitExceeded) -> PendingStep:
    """The step whose merged state crossed `max_state_bytes`, as written instead: failed AT
    its node with the state from before it, so the oversized state is never stored."""
    r = p.result
    err = {"code": exc.code, "message": exc.message, "details": dict(exc.details)}
    failed = dataclasses.replace(
        r,
        status="failed",
        state=p.prev_state,
        position=p.prev_position or r.position,
        error=err,
        run_error=None,
        done=False,
        artifacts=[],
    )
    return PendingStep(failed, p.prev_state, p.prev_position, p.started_written)


def _writes(r: StepResult, prev_state: dict[str, Any]) -> list[dict[str, Any]] | None:
    """What turns `prev_state` into the step's state through the reducers; None if unknown."""
    if r.status == "completed":
        writes = r.updates if r.updates is not None else [r.update]
        # A node kind that merged its own state without saying how: store that state.
        return writes if writes or r.state is prev_state else None
    # Failed and suspended steps keep the state they started from (runs/engine/executor.py).
    return [] if r.state is prev_state else None


def capped(data: Any, *, size: int | None = None, limit: int | None = None) -> Any:
    """`data` kept under RUNYARD["MAX_EVENT_BYTES"] of JSON: its largest values (two levels
    deep, so an update keeps its keys) become `{"truncated": true, "bytes": n}`. Values the
    database cannot store are replaced too (an event must be written whatever a node sent).
    `size`, when known, spares a dump."""
    limit = int(settings.RUNYARD["MAX_EVENT_BYTES"]) if limit is None else limit
    if size is None:
        try:
            size = storable_size(data)
        except Unstorable:
            data = storable_copy(data)
            size = storable_size(data)
    if size <= limit:
        return data
    return _shrink(data, size, limit, depth=2)


def _shrink(value: Any, size: int, budget: int, *, depth: int) -> Any:
    marker = {"truncated": True, "bytes": size}
    if depth <= 0 or not isinstance(value, dict):
        return marker
    sizes = {k: storable_size(v) for k, v in value.items()}
    out, total = dict(value), size
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if total <= budget:
            break
        room = max(0, budget - (total - sizes[key]))
        out[key] = _shrink(value[key], sizes[key], room, depth=depth - 1)
        total += storable_size(out[key]) - sizes[key]
    return out if total <= budget else marker


def ts(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def step_events(p: PendingStep, shown: Any = None) -> list[tuple[str, dict[str, Any]]]:
    """The step's events, each kept under MAX_EVENT_BYTES. What this module builds itself is
    small and not measured (a hot path), except an error, which may quote a node's input.
    `shown` is the update as `shown_update` gives it, when the caller has it already."""
    r = p.result
    step_data = {"index": r.index, "node": r.node, "attempt": r.attempt}
    events: list[tuple[str, dict[str, Any]]] = []
    if not p.started_written:
        events.append(("step.started", step_data))
    events += [(etype, capped(data)) for etype, data in r.events]
    ended = {
        **step_data,
        "status": r.status,
        "duration_ms": max(0, int((r.finished_at - r.started_at) * 1000)),
        "usage": r.usage.to_dict(),
        "error": r.error,
        "next": (r.position or {}).get("node"),
    }
    events.append(
        (
            "step.completed" if r.status == "completed" else "step.failed",
            capped(ended) if r.error else ended,
        )
    )
    if r.update and r.status == "completed":
        update = shown_update(r) if shown is None else shown
        events.append(("state.updated", {"index": r.index, "node": r.node, "update": update}))
    return events


def shown_update(r: StepResult) -> Any:
    """The step's update as events and the step row show it: capped like event data."""
    if r.update_bytes and r.update_bytes < int(settings.RUNYARD["MAX_EVENT_BYTES"]) - 256:
        return r.update  # the engine measured it: small, and storable
    return capped(r.update, limit=int(settings.RUNYARD["MAX_EVENT_BYTES"]) - 256)


@dataclass(slots=True)
class Planned:
    """A batch's writes, computed before any statement is sent: the run's new counters for
    its fenced UPDATE, the events, step and checkpoint rows, and what `Written` reports."""

    written: Written
    run_updates: dict[str, Any]  # not the state: see `remember`
    state: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    step_rows: list[dict[str, Any]]
    checkpoint_rows: list[dict[str, Any]]
    chain: checkpoints.Chain
    tree_usage: tuple[int, int, Decimal]  # steps, tokens, cost added to the run's tree


def plan_steps(
    run: Run,
    batch: list[PendingStep],
    *,
    epoch: int,
    wall_started: dt.datetime,
    tree: trees.TreeUsage,
    state_bytes: int | None = None,
) -> Planned:
    """The writes of `batch` in order, up to and including the first step that crosses a limit
    (the run stops there; later steps of the batch were pure and are dropped unseen). Reads
    nothing but the tenant's budgets (and a resumed segment's last checkpoint); changes
    nothing, the run in memory included (`remember` does, once they are written).

    `state_bytes` bounds the JSON size of the state before the batch (measured when None).
    A step whose merged state passes the tenant's `max_state_bytes` is written failed, with
    the state from before it, and stops the run (`limit_exceeded.max_state_bytes`).
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
    chain = checkpoints.chain_for(run, batch[0].prev_state)
    every = checkpoints.snapshot_every()
    written: list[PendingStep] = []
    check = limits.RunLimitCheck()
    tenant = run.tenant
    cap = tenant.max_state_bytes
    bound = state_size(run.state) if state_bytes is None and cap is not None else state_bytes or 0
    for p in batch:
        over = None
        if cap is not None:
            bound = _grown(p, bound)
            if bound > cap:  # only now is the whole state worth a dump
                bound = state_size(p.result.state)
                over = limits.check_state_size(tenant, bound)
            if over is not None:
                p = _over_state_limit(p, over)
                bound = state_size(p.result.state)
        r, u = p.result, p.result.usage
        steps += 1
        tokens_in, tokens_out = tokens_in + u.tokens_in, tokens_out + u.tokens_out
        cost += as_decimal(u.cost_usd)
        usage.add(u)
        shown = shown_update(r) if r.update else r.update
        events += step_events(p, shown)
        check = limits.check_run_limits(
            run.tenant,
            steps=steps + tree.steps,
            tokens=tokens_in + tokens_out + tree.tokens,
            cost_usd=cost + tree.cost_usd,
            wall_seconds=wall_seconds,
            already_warned=warned,
            now=now,
            step_tokens=usage.tokens_in + usage.tokens_out,
            step_cost=usage.cost_usd,
        )
        if over is not None:
            check.exceeded = over
        for name, used, limit in check.warnings:
            warned.append(name)
            events.append(("limit.warning", {"limit": name, "used": used, "cap": limit}))
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
                # The checkpoint keeps the real update; the step row shows it capped.
                "update": shown,
                "error": r.error,
                "epoch": epoch,
            }
        )
        # A delta stores the step's raw updates; a step whose state is not "state before +
        # its updates" (failed on max_state_bytes: the state before it) is stored full.
        writes = None if over is not None else _writes(r, p.prev_state)
        row, chain = checkpoints.row(
            chain,
            run,
            index=r.index,
            prev_state=p.prev_state,
            state=r.state,
            position=r.position,
            writes=writes,
            now=now,
            every=every,
        )
        checkpoint_rows.append(row)
        written.append(p)
        if check.exceeded is not None:
            break
    last = written[-1].result
    # No `lease_expires_at` here: the watcher renews the lease on its beat (segment.py), and
    # an indexed column changed on every step made each step's UPDATE of the run rewrite all
    # of its ~20 index entries on PostgreSQL (no HOT update): ~40% of a step's time there.
    # Not the state: the step's checkpoint holds it (mostly as a delta), and a whole state
    # written again by every step made a step over 100 KB of state cost twice a small one's.
    # The row says its state is behind; the run's next status change writes it back.
    run_updates = {
        "state_behind": True,
        "position": last.position,
        "steps": steps,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": cost,
        "warned_limits": warned,
        "heartbeat_at": now,
    }
    tree_usage = (
        steps - run.steps,
        tokens_in + tokens_out - run.tokens_in - run.tokens_out,
        cost - run.cost_usd,
    )
    return Planned(
        Written(written, check, usage, bound),
        run_updates,
        last.state,
        events,
        step_rows,
        checkpoint_rows,
        chain,
        tree_usage,
    )


def remember(run: Run, planned: Planned) -> None:
    """Set the run in memory as `planned` wrote it (the caller restores it if the
    transaction fails). Its state in memory is current, its row's behind (`HELD`)."""
    u = planned.run_updates
    run.state, run.position, run.steps = planned.state, u["position"], u["steps"]
    run.state_behind = True
    run.__dict__[checkpoints.HELD] = True
    run.tokens_in, run.tokens_out, run.cost_usd = u["tokens_in"], u["tokens_out"], u["cost_usd"]
    run.warned_limits = u["warned_limits"]
    run.__dict__[checkpoints.CHAIN] = planned.chain  # restored with the run if the commit fails


def write_steps(
    run: Run,
    batch: list[PendingStep],
    *,
    epoch: int,
    fence: dict[str, Any],
    wall_started: dt.datetime,
    state_bytes: int | None = None,
) -> Written:
    """Write `batch` (see `plan_steps`: up to the first step that crosses a limit).

    Must run in a transaction. The fenced UPDATE of the run goes first: a worker that lost the
    run writes nothing at all. Updates `run` in memory; the caller restores it if the
    transaction fails.
    """
    tree = trees.tree_base(run)  # first: a descendant locks its root's row before its own
    planned = plan_steps(
        run, batch, epoch=epoch, wall_started=wall_started, tree=tree, state_bytes=state_bytes
    )
    append_events(run, planned.events, fence=fence, **planned.run_updates)
    tree_steps, tree_tokens, tree_cost = planned.tree_usage
    trees.add_tree_usage(run, steps=tree_steps, tokens=tree_tokens, cost_usd=tree_cost)
    remember(run, planned)
    written = planned.written.steps
    # Only artifacts need the steps' ids: otherwise nothing waits for these INSERTs.
    with_artifacts = any(p.result.artifacts for p in written)
    step_pks = insert_rows(Step, planned.step_rows, returning=with_artifacts)
    insert_rows(Checkpoint, planned.checkpoint_rows, returning=False)
    if with_artifacts:
        for p, pk in zip(written, step_pks, strict=True):
            if p.result.artifacts:
                store_artifacts(run, Step(pk=pk, run=run, index=p.result.index), p.result, fence)
    return planned.written


def can_write_at_once(run: Run) -> bool:
    """Whether `run`'s steps may be written by `write_at_once`: a root run that never started
    a child (a descendant's commit locks its root first: trees.py)."""
    return run.root_id is None and not run.tree_children


def write_at_once(run: Run, planned: Planned, *, fence: dict[str, Any]) -> None:
    """Write and commit `planned`: the run's fenced UPDATE, the step and checkpoint rows, the
    events and the ledger, as one statement on PostgreSQL (runs/guarded_writes.py). Call it
    outside a transaction, for a root run with no children, no artifacts, no budget to lock
    and nothing ending the run: the caller checks (runs/services/execute.py). Raises Fenced,
    having written nothing, when the run no longer matches `fence`."""
    now = planned.run_updates["heartbeat_at"]
    events = [
        {"run": run.pk, "tenant": run.tenant_id, "type": etype, "data": data, "created_at": now}
        for etype, data in planned.events
    ]
    numbered = update_then_insert(
        Run,
        run.pk,
        where=fence,
        sets=planned.run_updates,
        counter="last_seq",
        numbered=(Event, events, "seq"),
        inserts=[(Step, planned.step_rows), (Checkpoint, planned.checkpoint_rows)],
        upserts=ledger_upserts(run.tenant_id, **step_usage(run, planned.written)),
    )
    if numbered is None:
        raise Fenced(f"run {run.public_id} no longer matches {fence}")
    run.last_seq = numbered[-1][1]
    remember(run, planned)
    publish_on_commit(
        run,
        [(pk, seq, e["type"], e["data"]) for (pk, seq), e in zip(numbered, events, strict=True)],
        now,
    )


def ledger_upserts(tenant_id: int, **amounts: Any) -> list[Upsert]:
    """`limits.record_usage`'s ledger rows (`limits.ledger_rows`' arguments) as upserts for
    `update_then_insert`: one per ledger table, its rows together."""
    upserts: dict[type[Model], Upsert] = {}
    for model, keys, added in limits.ledger_rows(tenant_id, **amounts):
        if model not in upserts:
            parts = limits.upsert_parts(model, tuple(keys), tuple(added))
            upserts[model] = Upsert(model, *parts, [])
        upserts[model].rows.append(keys | added)
    return list(upserts.values())


def step_usage(run: Run, written: Written) -> dict[str, Any]:
    """The ledger amounts of `written`'s steps, as `limits.record_usage` takes them."""
    u = written.usage
    return {
        "shard": limits.usage_shard(run.pk),
        "steps": len(written.steps),
        "tokens_in": u.tokens_in,
        "tokens_out": u.tokens_out,
        "cost_usd": Decimal(str(round(u.cost_usd, 6))),
        "by_model": u.by_model,
    }


def record_step_usage(run: Run, written: Written) -> None:
    """The ledger is written last in a step's transaction: every transaction locks the tenant
    row before the ledger row (run creation does too), so the two can never deadlock."""
    limits.record_usage(run.tenant_id, **step_usage(run, written))


def record_unwritten_usage(run: Run, results: list[StepResult]) -> None:
    """Steps that will never be written (their commit was fenced: the lease was lost or the
    run cancelled meanwhile) still spent what their LLM calls cost: it goes to the ledger, in
    its own transaction, so budgets count what was really spent. Best effort: the caller is
    already handling a failure."""
    usage = Usage()
    for r in results:
        usage.add(r.usage)
    if not (usage.tokens_in or usage.tokens_out or usage.cost_usd):
        return
    try:
        with transaction.atomic():
            limits.record_usage(
                run.tenant_id,
                shard=limits.usage_shard(run.pk),
                tokens_in=usage.tokens_in,
                tokens_out=usage.tokens_out,
                cost_usd=Decimal(str(round(usage.cost_usd, 6))),
                by_model=usage.by_model,
            )
    except Exception:  # noqa: BLE001 - the run's own failure is what the caller reports
        log.exception("usage of unwritten steps of run %s was not recorded", run.public_id)


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
