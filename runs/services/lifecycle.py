"""Shared steps of every status change: guarded transition, slot release, finish, requeue."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from decimal import Decimal
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from observability import hooks as observe
from runs import checkpoints, hooks
from runs.events import append_events
from runs.models import Run, Thread
from runs.services.errors import InvalidTransition
from runs.sql import execute, guarded_update, insert_instance
from runs.status import TERMINAL, RunStatus, can_transition
from tenants import limits
from tenants.models import AuditLog, GraphLimit, Tenant

log = logging.getLogger(__name__)

# Statuses whose run.<status> event completion webhooks announce (webhooks/outbox.py).
WEBHOOK_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.WAITING,
        RunStatus.INTERRUPTED,
        RunStatus.TIMED_OUT,
    }
)


def release_run_slot(run: Run) -> None:
    """Give back the run's concurrency slots (its tenant's and its graph's) exactly once (a
    guarded flag flip)."""
    if guarded_update(Run, run.pk, where={"holds_slot": True}, sets={"holds_slot": False}):
        limits.release_run_slot(run.tenant_id)
        if run.graph_limit_id is not None:
            limits.release_graph_slot(run.graph_limit_id)
    run.holds_slot = False


def audit_run(run: Run, action: str, *, graph: Any = None, **data: Any) -> None:
    """The run's audit row (its creation or its end): one INSERT in the caller's transaction,
    the actor being whoever started the run."""
    if graph is not None:
        data = {"graph": graph.name, "version": graph.version, **data}
    row = AuditLog(
        tenant_id=run.tenant_id,
        actor_label=run.created_by,
        action=action,
        target_type="run",
        target_id=str(run.public_id),
        status_after=run.status,
        data={"priority": run.priority, **data},
    )
    insert_instance(row, returning=False)  # every run's start and end: a plain INSERT


def release_queue_slot(run: Run) -> None:
    """Give back the run's queue slot exactly once (a guarded flag flip)."""
    flipped = guarded_update(
        Run, run.pk, where={"holds_queue_slot": True}, sets={"holds_queue_slot": False}
    )
    if flipped:
        limits.release_queue_slot(run.tenant_id)
    run.holds_queue_slot = False


def release_slots(run: Run) -> None:
    """Give back both of the run's slots (`release_run_slot` and `release_queue_slot`). On
    PostgreSQL one statement that nothing waits for inside a pipeline (`_release_sql`)."""
    if connection.vendor != "postgresql":
        release_run_slot(run)
        release_queue_slot(run)
        return
    execute(_release_sql(), [run.pk, run.pk], fetch=None, prepared=True)
    run.holds_slot = run.holds_queue_slot = False


@functools.cache
def _release_sql() -> str:
    """`release_run_slot` then `release_queue_slot` as one statement: the run's flags as they
    are (read under the row's lock: a concurrent release waits, then finds them cleared),
    both cleared, and each counter that a set flag held given back, under the same guards as
    tenants/limits/ (`release_run_slot`, `release_graph_slot`, `release_queue_slot`).

    Rows are locked run, tenant, then graph, as everywhere: the graph's UPDATE (the main
    statement, run first) waits for the tenant's (`EXISTS ... t`). Left to itself PostgreSQL
    runs a CTE nobody reads after the main statement: graph before tenant, against the
    dispatcher's tenant before graph, deadlocked under load."""
    q = connection.ops.quote_name
    run, tenant, graph = (q(m._meta.db_table) for m in (Run, Tenant, GraphLimit))
    slot, queue = q("holds_slot"), q("holds_queue_slot")
    running, queued = q("running_count"), q("queued_count")

    def less(counter: str, flag: str) -> str:
        given_back = f"o.{flag} AND {counter} > 0"
        return f"{counter} = CASE WHEN {given_back} THEN {counter} - 1 ELSE {counter} END"

    return (
        f"WITH o AS (SELECT {q('id')}, {q('tenant_id')}, {q('graph_limit_id')}, {slot}, {queue} "  # noqa: S608 - names from model meta
        f"FROM {run} WHERE {q('id')} = %s FOR UPDATE), "
        f"r AS (UPDATE {run} SET {slot} = false, {queue} = false FROM o "
        f"WHERE {run}.{q('id')} = %s AND (o.{slot} OR o.{queue})), "
        f"t AS (UPDATE {tenant} SET {less(running, slot)}, {less(queued, queue)} FROM o "
        f"WHERE {tenant}.{q('id')} = o.{q('tenant_id')} AND (o.{slot} OR o.{queue}) "
        "RETURNING 1) "
        f"UPDATE {graph} SET {running} = {running} - 1 FROM o "
        f"WHERE {graph}.{q('id')} = o.{q('graph_limit_id')} AND o.{slot} AND {running} > 0 "
        "AND EXISTS (SELECT 1 FROM t)"
    )


def transition(
    run: Run,
    to: str,
    *,
    events: list[tuple[str, dict[str, Any]]],
    fence: dict[str, Any] | None = None,
    held: bool = False,
    **updates: Any,
) -> Run:
    """Move `run` from its current status to `to` with a guarded UPDATE, plus its events.

    Must run in a transaction. The guard is the status read (and any extra `fence`), so a
    concurrent change makes this raise Fenced instead of overwriting it. `held`: the
    transaction holds the run's row already (see `append_events`). The worker's own run,
    whose steps left its row's state behind (`checkpoints.HELD`), has its state written back.
    """
    src = run.status
    if not can_transition(src, to):
        raise InvalidTransition(
            f"Run {run.public_id} is {src}; it cannot become {to}.",
            details={"status": src, "wanted": to},
        )
    if "state" in updates:
        updates.setdefault("state_behind", False)
    elif run.state_behind and run.__dict__.get(checkpoints.HELD):
        # The worker's run: its steps' commits left the row's state behind; written back now.
        updates |= {"state": run.state, "state_behind": False}
    guard = {"status": src, **(fence or {})}
    append_events(run, events, fence=guard, held=held, status=to, **updates)
    run.status = to
    for key, value in updates.items():
        if not hasattr(value, "resolve_expression"):
            setattr(run, key, value)
    if to in TERMINAL or to in (RunStatus.WAITING, RunStatus.PAUSED):
        release_slots(run)
    if to in WEBHOOK_STATUSES:
        # Completion webhooks: their outbox rows commit with this change, or not at all.
        from webhooks.outbox import enqueue_for_run

        enqueue_for_run(run, f"run.{to}", events)
    return run


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **extra}


def finish(
    run: Run,
    to: str,
    *,
    err: dict[str, Any] | None = None,
    fence: dict[str, Any] | None = None,
    extra_events: list | None = None,
    held: bool = False,
    **updates: Any,
) -> Run:
    """End a run in `to` (a terminal status). Updates its thread; post_run hooks on commit.
    `held`: the transaction holds the run's row already (see `append_events`)."""
    now = timezone.now()
    data: dict[str, Any] = {"status": to}
    if err:
        data["error"] = err
    events = list(extra_events or []) + [(f"run.{to}", data)]
    transition(
        run,
        to,
        events=events,
        fence=fence,
        held=held,
        error=err,
        finished_at=now,
        lease_expires_at=None,
        lease_owner="",
        waiting_for=None,
        wait_deadline=None,
        **updates,
    )
    if run.thread_id:
        sync_thread_state(run)
    audit_run(run, "run.ended", **({"error": err.get("code")} if err else {}))
    transaction.on_commit(partial(_notify_finished, run.pk))
    observe.run_finished(run, to)
    return run


def sync_thread_state(run: Run) -> None:
    """A thread's state follows its runs; a rollback restores what it was before the run."""
    if run.cancel_action == "rollback" and run.thread_state_before is not None:
        state = run.thread_state_before
    else:
        state = checkpoints.current_state(run)
    if run.thread_id is not None:
        Thread.objects.filter(id=run.thread_id).update(state=state, updated_at=timezone.now())


def _notify_finished(run_pk: int) -> None:
    if not hooks.has_post_run_hooks():
        return
    run = Run.objects.select_related("tenant", "graph").get(pk=run_pk)
    hooks.notify_finished(run)


def requeue(
    run: Run,
    *,
    reason: str,
    fence: dict[str, Any] | None = None,
    event: str = "run.queued",
    not_before: dt.datetime | None = None,
    **updates: Any,
) -> Run:
    """Put an active run back in the queue to continue from its last checkpoint; with
    `not_before`, the dispatcher leaves it queued until then (a resurrection's cooldown)."""
    data = updates.pop("data", {})
    if not_before is not None:
        data = {**data, "not_before": not_before.isoformat()}
    transition(
        run,
        RunStatus.QUEUED,
        events=[(event, {"reason": reason, **data})],
        fence=fence,
        dispatched_at=None,
        not_before=not_before,
        lease_owner="",
        lease_expires_at=None,
        waiting_for=None,
        wait_deadline=None,
        **updates,
    )
    release_run_slot(run)
    from runs.dispatch import dispatch_on_commit

    dispatch_on_commit()
    return run


def as_decimal(value: float | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(round(value, 6)))


def fail_unexpected(run: Run, exc: BaseException) -> str:
    """A segment that crashed (a bug, not a node's error) fails its run, unless it lost the run
    meanwhile; if even that cannot be written, the reconciler resolves it from the lease."""
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
