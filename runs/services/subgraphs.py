"""Subgraph nodes: a child run with its own steps, executed inline by the parent's worker.

The child is a real Run (its own steps, events and checkpoints; cancelled with its parent),
driven by the parent's worker inside the concurrency slot its root holds: children are never
dispatched (the dispatcher skips them) and never resumed by the reconciler while their parent
can still do it. A child that waits for a human (or is paused) is not supported yet: it is
cancelled and the subgraph node fails with `subgraph_suspended`.

Admission (#15): every child goes through the tenant gate (`limits.admit_child_run`): the
root's `tree_children` counter caps the tree at the tenant's `max_child_runs`, depth is capped
at MAX_DEPTH_CEILING whatever a stored spec says, and the budgets apply. A refusal, or a child
that failed on a tenant limit, fails the subgraph node with that `limit_exceeded.*` code,
fatal, and marks the parent's segment (`tree_limit`) so the parent run fails with the same
code at that step's commit, even when an `on_error` edge or a `parallel` caught the error.

Idempotence: each child is keyed (`child_key`) by the parent's step index, the step's top
node and attempt, the parent's resurrection count and the engine's call id (node, visit,
attempt within the step). Re-running that step after a crash finds the child: a succeeded one
gives its state, an active or interrupted one is taken over and continued from its last
checkpoint, a failed one fails the node again. A resurrection or a retry is a new key, so it
starts a fresh child.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any, Protocol

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from runs import checkpoints
from runs.engine import CancelToken, NodeError, RunCancelled
from runs.engine.nodes.subgraph import MAX_DEPTH_CEILING
from runs.events import Fenced, append_events
from runs.models import Graph, Run
from runs.services.claim import claim_run, worker_id
from runs.services.dbretry import retry_transient
from runs.services.graphs import get_graph, spec_for
from runs.services.lifecycle import audit_run, error, fail_unexpected, finish, requeue
from runs.services.trees import take_child_slot
from runs.sql import guarded_update
from runs.status import TERMINAL, RunStatus
from tenants import limits

log = logging.getLogger(__name__)


class Segment(Protocol):
    """What a subgraph call needs of its parent's segment (`runs.services.execute.Segment`),
    named here so this module does not import the segment that calls it. A child's segment is
    built by calling the parent's class with the claimed child run."""

    run: Run
    token: CancelToken
    lock: threading.Lock
    current: tuple[int, str, int, float] | None
    wall_started: dt.datetime
    tree_limit: limits.LimitExceeded | None

    def __init__(self, run: Run) -> None: ...

    def execute(self) -> str: ...


# A child is taken over at most this often per call (each take-over is a claim, resurrection
# or recovery of its own, all bounded elsewhere): a safety net against a loop, not a limit.
MAX_TAKEOVERS = 50

# Children this process is driving right now: a second call in the same step with the same key
# (one node reached through two nested parallels) must not take over its sibling's child.
_driving: set[int] = set()
_driving_lock = threading.Lock()


def run_child(
    parent_segment: Segment,
    graph_name: str,
    data: dict[str, Any],
    depth: int,
    *,
    call: str = "",
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Run (or continue) the child run of one subgraph call to its end; return its state.

    `cancel` is the calling node's token (a branch's, under a parallel): its cancellation
    stops the child too. Raises NodeError when the child cannot start or did not succeed,
    RunCancelled when the call is cancelled meanwhile.
    """
    token = cancel or parent_segment.token
    token.raise_if_cancelled()
    try:
        return _run_child(parent_segment, token, graph_name, data, depth, call)
    finally:
        if threading.current_thread() is not threading.main_thread():
            # A parallel branch's helper thread: its connection would otherwise stay open
            # until the pool retires the thread, one per branch of a wide fan-out.
            connection.close()


def _run_child(
    parent_segment: Segment,
    token: CancelToken,
    graph_name: str,
    data: dict[str, Any],
    depth: int,
    call: str,
) -> dict[str, Any]:
    parent = parent_segment.run
    key = _base_key(parent_segment, call)
    # Admissions of one process take turns, so a fan-out's branches reach the database one
    # at a time and those past the cap are refused from memory, with no connection of their own.
    with _admission_lock:
        _refuse_known_over(parent_segment)
        child: Run | None = None
        n = 0
        while key:
            candidate = key if n == 0 else f"{key}/{n}"
            child = Run.objects.filter(parent=parent, child_key=_stored(candidate)).first()
            if child is None or _start_driving(child.pk):
                key = candidate
                break
            n += 1  # this process drives that one already: a second call under the same key
        if child is None:
            try:
                graph = get_graph(parent.tenant, graph_name)
            except Exception as exc:
                raise NodeError(
                    "subgraph_not_found", str(exc), retryable=False, fatal=True
                ) from exc
            child = _start_child(parent_segment, graph, data, depth, _stored(key) if key else "")
    try:
        return _drive(parent_segment, token, child, graph_name)
    finally:
        with _driving_lock:
            _driving.discard(child.pk)


# What this process knows of each tree it drives: children it admitted, and a refusal. A
# fan-out past the cap (a parallel of subgraphs of itself) is then refused without touching
# the database: each refused branch used to open a connection of its own for the lookup and
# the guarded UPDATE, and a wide tree took PostgreSQL past max_connections for every tenant.
# The root's row stays the authority; this only answers early when the answer is known.
_trees_lock = threading.Lock()
_admission_lock = threading.Lock()
_trees_taken: OrderedDict[int, int] = OrderedDict()
_trees_refused: OrderedDict[int, limits.LimitExceeded] = OrderedDict()
TREES_KEPT = 1024


def _remember(table: OrderedDict[int, Any], root_pk: int, value: Any) -> None:
    with _trees_lock:
        table[root_pk] = value
        table.move_to_end(root_pk)
        while len(table) > TREES_KEPT:
            table.popitem(last=False)


def _refuse_known_over(parent_segment: Segment) -> None:
    """Fail the call at once when this process already knows the tree cannot take a child:
    a limit refused one before (the tree's run fails with it anyway), or this process
    admitted `max_child_runs` children of the root itself."""
    run = parent_segment.run
    root_pk, cap = run.root_id or run.pk, run.tenant.max_child_runs
    with _trees_lock:
        refused = _trees_refused.get(root_pk)
        taken = _trees_taken.get(root_pk, 0)
    if refused is None and cap is not None and taken >= cap:
        refused = limits.LimitExceeded(
            "max_child_runs",
            f"The run tree already started {cap} child runs "
            f"(max_child_runs of tenant {run.tenant.slug}).",
            details={"cap": cap},
        )
    if refused is not None:
        raise _limit_error(parent_segment, refused)


def _base_key(parent_segment: Segment, call: str) -> str:
    """The step-level part of the child's key; empty (no reuse) outside a known step."""
    with parent_segment.lock:
        current = parent_segment.current
    if current is None or not call:
        return ""
    index, node, attempt, _ = current
    return f"{index}:{node}#{attempt}:r{parent_segment.run.resurrections}:{call}"


def _stored(key: str) -> str:
    # Node names are up to 100 characters; a key that does not fit is stored as its hash.
    return key if len(key) <= 200 else hashlib.sha256(key.encode()).hexdigest()


def _start_driving(child_pk: int) -> bool:
    with _driving_lock:
        if child_pk in _driving:
            return False
        _driving.add(child_pk)
        return True


def _start_child(
    parent_segment: Segment, graph: Graph, data: dict[str, Any], depth: int, key: str
) -> Run:
    """Admit and create the child (one transaction), or fail the node with the limit."""
    parent = parent_segment.run
    root_pk = parent.root_id or parent.pk
    # A stored spec may predate the ceiling: clamp it here, where the tenant gate enforces it.
    max_depth = min(spec_for(parent.graph).max_depth, MAX_DEPTH_CEILING)

    def create() -> Run:
        with transaction.atomic():
            limits.admit_child_run(
                parent.tenant,
                depth=depth,
                max_depth=max_depth,
                take_child=lambda cap: take_child_slot(root_pk, cap),
            )
            child = Run.objects.create(
                tenant=parent.tenant,
                graph=graph,
                graph_hash=graph.hash,
                parent=parent,
                root_id=root_pk,
                child_key=key,
                depth=depth,
                input=data,
                metadata={"parent_run": str(parent.public_id)},
                dispatched_at=timezone.now(),
                priority=parent.priority,
                created_by=f"run:{parent.public_id}",
            )
            child.tenant = parent.tenant
            append_events(
                child,
                [
                    (
                        "run.queued",
                        {
                            "graph": graph.name,
                            "version": graph.version,
                            "parent": str(parent.public_id),
                        },
                    )
                ],
            )
            audit_run(child, "run.created", graph=graph)
            return child

    try:
        child = retry_transient(create)
    except limits.LimitExceeded as exc:
        _remember(_trees_refused, root_pk, exc)
        raise _limit_error(parent_segment, exc) from None
    except IntegrityError:
        # A fenced-out worker of this parent started the same call meanwhile: use its child.
        child = Run.objects.get(parent=parent, child_key=key)
    with _trees_lock:
        taken = _trees_taken.get(root_pk, 0) + 1
    _remember(_trees_taken, root_pk, taken)
    if parent.root_id is None:
        with parent_segment.lock:
            parent.tree_children += 1  # the root's next step reads its tree counters
    _start_driving(child.pk)
    return child


def _limit_error(parent_segment: Segment, exc: limits.LimitExceeded) -> NodeError:
    parent_segment.tree_limit = exc
    return NodeError(exc.code, exc.message, retryable=False, fatal=True, details=exc.details)


def _drive(
    parent_segment: Segment, token: CancelToken, child: Run, graph_name: str
) -> dict[str, Any]:
    """Execute the child inline until it ends; take it over first if a dead worker held it."""
    for _ in range(MAX_TAKEOVERS):
        child = Run.objects.select_related("tenant", "graph").get(pk=child.pk)
        if token.cancelled:
            _stop_unstarted(child, token.reason or "cancelled")
            raise RunCancelled(token.reason or "cancelled")
        if child.status == RunStatus.SUCCEEDED:
            return dict(checkpoints.current_state(child))
        if child.status in TERMINAL and child.status != RunStatus.INTERRUPTED:
            raise _failure(parent_segment, child, graph_name)
        if child.status in (RunStatus.WAITING, RunStatus.PAUSED):
            from runs.services.controls import cancel_run

            what = (child.waiting_for or {}).get("kind") or child.status
            cancel_run(child, by="parent", reason=f"subgraph runs cannot be {child.status}")
            raise NodeError(
                "subgraph_suspended",
                f"Subgraph {graph_name} run {child.public_id} stopped for {what}; "
                "waiting or pausing inside a subgraph is not supported.",
                retryable=False,
            )
        if child.status == RunStatus.QUEUED and child.not_before is not None:
            # A resurrected child's cooldown: children are never dispatched, so its parent's
            # step (in flight, heartbeat running) waits it out, cancellably.
            wait = (child.not_before - timezone.now()).total_seconds()
            if wait > 0 and token.wait(wait):
                _stop_unstarted(child, token.reason or "cancelled")
                raise RunCancelled(token.reason or "cancelled")
        claimed = _take_over(child)
        if claimed is None:
            continue  # it moved meanwhile: look again
        segment = type(parent_segment)(claimed)
        # The parent's cancellation reaches the child's in-flight node too, and the tree's
        # wall time counts from the root's start.
        segment.token = token.child()
        segment.wall_started = parent_segment.wall_started
        try:
            segment.execute()
        except Exception as exc:
            log.exception("child run %s crashed", claimed.public_id)
            fail_unexpected(claimed, exc)
        finally:
            segment.token.detach()
    raise NodeError("subgraph_failed", f"Subgraph {graph_name} run {child.public_id} never ended.")


def _stop_unstarted(child: Run, reason: str) -> None:
    """A child whose call was cancelled before it ran (again) ends cancelled; the reconciler
    would only do so once the parent ended. A fenced parent's children are left for the
    parent's next owner to take over."""
    if reason == "fenced" or child.status != RunStatus.QUEUED:
        return
    try:
        with transaction.atomic():
            finish(
                child,
                RunStatus.CANCELLED,
                fence={"epoch": child.epoch},
                err=error("cancelled", f"The subgraph call was cancelled ({reason})."),
            )
    except Fenced:
        pass  # it moved meanwhile: whoever moved it owns it


def _take_over(child: Run) -> Run | None:
    """Make this worker the child's owner: claim a queued child, requeue an interrupted one,
    end a cancelling one, or fence out the dead worker of a running one (epoch bump). None
    when the child changed meanwhile."""
    if child.status == RunStatus.QUEUED:
        # Children are never dispatched: mark it dispatched to this worker and claim it.
        Run.objects.filter(pk=child.pk, status=RunStatus.QUEUED, dispatched_at=None).update(
            dispatched_at=timezone.now()
        )
        return claim_run(child.pk)
    fence = {"epoch": child.epoch}
    if child.status == RunStatus.INTERRUPTED:
        with transaction.atomic():
            requeue(child, reason="parent_recovered", fence=fence)
        return None
    if child.status == RunStatus.CANCELLING:
        with transaction.atomic():
            finish(
                child,
                RunStatus.CANCELLED,
                fence=fence,
                err=error("cancelled", f"Cancelled ({child.cancel_action or 'interrupt'})."),
            )
        return None
    worker, now = worker_id(), timezone.now()
    lease = dt.timedelta(seconds=float(settings.RUNYARD["LEASE_SECONDS"]))
    with transaction.atomic():
        taken = guarded_update(
            Run,
            child.pk,
            where={"status": RunStatus.RUNNING, "epoch": child.epoch},
            sets={"lease_owner": worker, "lease_expires_at": now + lease, "heartbeat_at": now},
            increments={"epoch": 1, "claims": 1},
        )
        if not taken:
            return None
        run = Run.objects.select_related("tenant", "graph", "thread").get(pk=child.pk)
        append_events(
            run,
            [("run.started", {"claim": run.claims, "worker": worker, "taken_over": True})],
            fence={"epoch": run.epoch},
        )
    return run


def _failure(parent_segment: Segment, child: Run, graph_name: str) -> NodeError:
    err = child.error or {}
    code = str(err.get("code") or "")
    message = (
        f"Subgraph {graph_name} run {child.public_id} ended {child.status}: "
        f"{err.get('message', '')}"
    )
    if code.startswith("limit_exceeded."):
        # A tenant limit stops the whole tree, not just this branch of it.
        limit = code.removeprefix("limit_exceeded.")
        details = {k: v for k, v in err.items() if k not in ("code", "message")}
        return _limit_error(parent_segment, limits.LimitExceeded(limit, message, details=details))
    return NodeError("subgraph_failed", message, retryable=False)
