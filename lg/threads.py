"""Threads as the protocol sees them: Runyard threads, their runs' checkpoints, and the
StateUpdate checkpoints `update_state` and `copy` write.

A thread's status: `interrupted` while a run on it waits on an approval or input, `busy`
while another run is active, `error` when its newest run failed, else `idle`. Its values: the
state of its active run once that run started, else the state its runs left (Thread.state).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, Exists, OuterRef, QuerySet, Subquery, Value, When
from django.utils import timezone

from lg import shapes
from lg.assistants import metadata_filter, page_of
from lg.errors import Refused, conflict, not_found
from lg.models import StateUpdate
from runs import checkpoints
from runs.engine import apply_update
from runs.engine.values import storable_size
from runs.models import Checkpoint, Graph, Run, Thread
from runs.services import spec_for
from runs.status import RunStatus
from tenants import limits
from tenants.models import Tenant

BUSY = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING, RunStatus.PAUSED)
FAILED = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.INTERRUPTED)
SORTS = {
    "thread_id": "public_id",
    "status": "lg_status",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "state_updated_at": "updated_at",
}
# Ties in checkpoint times (a batch of steps commits at once) are looked past this far.
TIE_SLACK = 200


def with_status(qs: QuerySet[Thread]) -> QuerySet[Thread]:
    """Annotates `lg_status` in the database (so search can filter and sort by it) from the
    thread's runs through the (thread, status) index."""
    runs = Run.objects.filter(thread=OuterRef("pk"))
    return qs.annotate(
        lg_waiting=Exists(runs.filter(status=RunStatus.WAITING)),
        lg_busy=Exists(runs.filter(status__in=BUSY)),
        lg_last=Subquery(runs.order_by("-created_at", "-id").values("status")[:1]),
    ).annotate(
        lg_status=Case(
            When(lg_waiting=True, then=Value("interrupted")),
            When(lg_busy=True, then=Value("busy")),
            When(lg_last__in=FAILED, then=Value("error")),
            default=Value("idle"),
        )
    )


def get_thread(tenant: Tenant, thread_id: str) -> Thread:
    try:
        public_id = uuid.UUID(str(thread_id))
    except ValueError:
        raise not_found("Thread", thread_id) from None
    thread = with_status(Thread.objects.for_tenant(tenant).filter(public_id=public_id)).first()
    if thread is None:
        raise not_found("Thread", thread_id)
    return thread


def active_run(thread: Thread) -> Run | None:
    return (
        Run.objects.filter(thread=thread)
        .active()
        .select_related("graph", "thread")
        .order_by("-created_at", "-id")
        .first()
    )


def _values_and_interrupts(thread: Thread, run: Run | None) -> tuple[dict[str, Any], list[Any]]:
    if run is not None and run.started_at is not None:
        return checkpoints.current_state(run), shapes.waiting_interrupts(run)
    return thread.state, []


def thread_out(thread: Thread) -> dict[str, Any]:
    status = getattr(thread, "lg_status", None)
    if status is None:
        thread = get_thread(thread.tenant, str(thread.public_id))
        status = thread.lg_status  # type: ignore[attr-defined]
    run = active_run(thread) if status in ("busy", "interrupted") else None
    values, interrupts = _values_and_interrupts(thread, run)
    return shapes.thread_out(thread, status=status, values=values, interrupts=interrupts)


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Refused(f"`{field}` must be a JSON object.")
    return value


def create_thread(tenant: Tenant, payload: dict[str, Any]) -> Thread:
    for option in ("supersteps", "ttl"):
        if payload.get(option):
            raise Refused(
                f"`{option}` is not supported: Runyard threads are kept until deleted, and "
                "state is written by runs or POST /threads/{id}/state."
            )
    metadata = _object(payload.get("metadata"), "metadata")
    if_exists = payload.get("if_exists") or "raise"
    if if_exists not in ("raise", "do_nothing"):
        raise Refused("`if_exists` must be raise or do_nothing.")
    wanted = payload.get("thread_id")
    if not wanted:
        return Thread.objects.create(tenant=tenant, metadata=metadata)
    try:
        public_id = uuid.UUID(str(wanted))
    except ValueError:
        raise Refused("`thread_id` must be a UUID.") from None
    existing = Thread.objects.filter(public_id=public_id).first()
    if existing is not None:
        if existing.tenant_id == tenant.pk and if_exists == "do_nothing":
            return existing
        raise conflict(f"Thread {public_id} already exists.")
    try:
        with transaction.atomic():
            return Thread.objects.create(tenant=tenant, public_id=public_id, metadata=metadata)
    except IntegrityError:  # a concurrent request made it first
        made = Thread.objects.filter(public_id=public_id, tenant=tenant).first()
        if made is not None and if_exists == "do_nothing":
            return made
        raise conflict(f"Thread {public_id} already exists.") from None


def ensure_thread(tenant: Tenant, thread_id: str, *, if_not_exists: str | None) -> Thread:
    """The thread a run names; with if_not_exists=create, made on the spot."""
    if if_not_exists not in (None, "create", "reject"):
        raise Refused("`if_not_exists` must be create or reject.")
    try:
        return get_thread(tenant, thread_id)
    except Refused:
        if if_not_exists != "create":
            raise
    create_thread(tenant, {"thread_id": thread_id, "if_exists": "do_nothing"})
    return get_thread(tenant, thread_id)


@transaction.atomic
def update_thread(thread: Thread, payload: dict[str, Any]) -> Thread:
    if payload.get("ttl"):
        raise Refused("`ttl` is not supported: Runyard threads are kept until deleted.")
    metadata = _object(payload.get("metadata"), "metadata")
    locked = Thread.objects.select_for_update().get(pk=thread.pk)
    locked.metadata = {**locked.metadata, **metadata}
    locked.save(update_fields=["metadata", "updated_at"])
    return get_thread(thread.tenant, str(thread.public_id))


@transaction.atomic
def delete_thread(thread: Thread) -> None:
    """Deletes the thread and its runs; refused while one of them is active (cancel first)."""
    locked = Thread.objects.select_for_update().get(pk=thread.pk)
    if Run.objects.filter(thread=locked).active().exists():
        raise conflict(
            f"Thread {thread.public_id} has an active run; cancel it before deleting the thread."
        )
    Run.objects.filter(thread=locked).delete()
    locked.delete()


def search(tenant: Tenant, payload: dict[str, Any], *, count: bool = False) -> Any:
    if payload.get("extract"):
        raise Refused("`extract` is not supported; read the values with `select`.")
    qs = with_status(Thread.objects.for_tenant(tenant))
    for key, value in metadata_filter(payload.get("metadata")).items():
        qs = qs.filter(**{f"metadata__{key}": value})
    for key, value in metadata_filter(payload.get("values")).items():
        qs = qs.filter(**{f"state__{key}": value})
    status = payload.get("status")
    if status:
        if status not in shapes.THREAD_STATUSES:
            raise Refused(f"`status` must be one of {list(shapes.THREAD_STATUSES)}.")
        qs = qs.filter(lg_status=status)  # type: ignore[misc] # annotated by with_status
    ids = payload.get("ids")
    if ids:
        if not isinstance(ids, list) or len(ids) > 1000:
            raise Refused("`ids` must be a list of at most 1000 thread ids.")
        parsed = []
        for value in ids:
            try:
                parsed.append(uuid.UUID(str(value)))
            except ValueError:
                continue
        qs = qs.filter(public_id__in=parsed)
    if count:
        return qs.count()
    limit, offset = page_of(payload)
    sort_by = payload.get("sort_by") or "created_at"
    order = payload.get("sort_order") or "desc"
    if not isinstance(sort_by, str) or sort_by not in SORTS or order not in ("asc", "desc"):
        raise Refused(f"`sort_by` must be one of {sorted(SORTS)} and `sort_order` asc or desc.")
    sign = "-" if order == "desc" else ""
    page = list(qs.order_by(sign + SORTS[sort_by], sign + "id")[offset : offset + limit])
    out = [_listed(thread) for thread in page]
    select = payload.get("select")
    if select:
        if not isinstance(select, list) or not all(isinstance(k, str) for k in select):
            raise Refused("`select` must be a list of field names.")
        out = [{k: t[k] for k in select if k in t} for t in out]
    return out


def _listed(thread: Thread) -> dict[str, Any]:
    status = thread.lg_status  # type: ignore[attr-defined]
    run = active_run(thread) if status in ("busy", "interrupted") else None
    values, interrupts = _values_and_interrupts(thread, run)
    return shapes.thread_out(thread, status=status, values=values, interrupts=interrupts)


@transaction.atomic
def copy_thread(thread: Thread) -> Thread:
    """A new thread with this one's metadata and values (its checkpoint history stays with
    the runs that made it); its first checkpoint is a StateUpdate of source `copy`."""
    copy = Thread.objects.create(
        tenant=thread.tenant, metadata=dict(thread.metadata), state=dict(thread.state)
    )
    StateUpdate.objects.create(thread=copy, values=copy.state, source="copy")
    return copy


# --- checkpoints and state ----------------------------------------------------------------------


@dataclass
class Point:
    """One checkpoint of a thread: a run's step, or a StateUpdate."""

    public_id: uuid.UUID
    created_at: dt.datetime
    key: tuple[Any, ...]
    values: dict[str, Any]
    next: list[str]
    metadata: dict[str, Any]


def _point_of_checkpoint(cp: Checkpoint) -> Point:
    node = (cp.position or {}).get("node")
    return Point(
        cp.public_id,
        cp.created_at,
        (cp.created_at, cp.run_id, cp.step_index, 0),
        cp.state,
        [node] if node else [],
        {
            "source": "input" if cp.step_index == 0 else "loop",
            "step": cp.step_index - 1,
            "run_id": str(cp.run.public_id),
            "graph_id": cp.run.graph.name,
            "graph_version": cp.run.graph.version,
        },
    )


def _point_of_update(update: StateUpdate) -> Point:
    meta: dict[str, Any] = {"source": update.source, "step": None}
    if update.as_node:
        meta["writes"] = {update.as_node: None}
    return Point(
        update.public_id,
        update.created_at,
        (update.created_at, 0, 0, update.pk),
        update.values,
        [],
        meta,
    )


def _points(thread: Thread, *, before: Point | None, limit: int) -> list[Point]:
    """Newest first: at most `limit` points older than `before`."""
    cps = Checkpoint.objects.filter(thread=thread).select_related("run__graph")
    ups = StateUpdate.objects.filter(thread=thread)
    if before is not None:
        cps = cps.filter(created_at__lte=before.created_at)
        ups = ups.filter(created_at__lte=before.created_at)
    fetch = limit + (TIE_SLACK if before is not None else 0)
    points = [
        _point_of_checkpoint(c)
        for c in cps.order_by("-created_at", "-run_id", "-step_index")[:fetch]
    ] + [_point_of_update(u) for u in ups.order_by("-created_at", "-id")[:fetch]]
    if before is not None:
        points = [p for p in points if p.key < before.key]
    points.sort(key=lambda p: p.key, reverse=True)
    return points[:limit]


def find_point(thread: Thread, checkpoint_id: Any) -> Point:
    try:
        public_id = uuid.UUID(str(checkpoint_id))
    except ValueError:
        raise not_found("Checkpoint", checkpoint_id) from None
    cp = (
        Checkpoint.objects.filter(thread=thread, public_id=public_id)
        .select_related("run__graph")
        .first()
    )
    if cp is not None:
        return _point_of_checkpoint(cp)
    update = StateUpdate.objects.filter(thread=thread, public_id=public_id).first()
    if update is None:
        raise not_found("Checkpoint", checkpoint_id)
    return _point_of_update(update)


def checkpoint_id_of(value: Any) -> Any:
    """A checkpoint named the ways the SDK does: an id, a Checkpoint, or a RunnableConfig."""
    if isinstance(value, dict):
        if isinstance(value.get("configurable"), dict):
            value = value["configurable"]
        return value.get("checkpoint_id")
    return value


def _state(
    thread: Thread, point: Point | None, parent: Point | None, **live: Any
) -> dict[str, Any]:
    values = live.get("values", point.values if point else thread.state)
    return {
        "values": values,
        "next": live.get("next", point.next if point else []),
        "checkpoint": shapes.checkpoint_ref(thread.public_id, point.public_id if point else None)
        or {
            "thread_id": str(thread.public_id),
            "checkpoint_ns": "",
            "checkpoint_id": None,
            "checkpoint_map": None,
        },
        "metadata": point.metadata if point else {},
        "created_at": point.created_at if point else None,
        "parent_checkpoint": shapes.checkpoint_ref(thread.public_id, parent.public_id)
        if parent
        else None,
        "tasks": live.get("tasks", []),
        "interrupts": live.get("interrupts", []),
    }


def current_state(thread: Thread) -> dict[str, Any]:
    points = _points(thread, before=None, limit=2)
    point = points[0] if points else None
    parent = points[1] if len(points) > 1 else None
    run = active_run(thread)
    if run is None or run.started_at is None:
        # The thread's own values win over its newest checkpoint's: a rollback restores them
        # without writing a checkpoint.
        return _state(thread, point, parent, values=thread.state)
    interrupts = shapes.waiting_interrupts(run)
    node = (run.waiting_for or {}).get("node") or (run.position or {}).get("node")
    tasks = []
    if node:
        step = (run.position or {}).get("step", 0)
        tasks.append(
            {
                "id": shapes.task_id(run, step),
                "name": node,
                "path": ["__pregel_pull", node],
                "error": None,
                "interrupts": interrupts,
                "checkpoint": None,
                "state": None,
                "result": None,
            }
        )
    return _state(
        thread,
        point,
        parent,
        values=checkpoints.current_state(run),
        next=[node] if node else [],
        tasks=tasks,
        interrupts=interrupts,
    )


def state_at(thread: Thread, checkpoint_id: Any) -> dict[str, Any]:
    point = find_point(thread, checkpoint_id)
    older = _points(thread, before=point, limit=1)
    return _state(thread, point, older[0] if older else None)


def history(thread: Thread, payload: dict[str, Any]) -> list[dict[str, Any]]:
    limit = payload.get("limit", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise Refused("`limit` must be an integer from 1 to 1000.")
    before = None
    if payload.get("before"):
        before = find_point(thread, checkpoint_id_of(payload["before"]))
    wanted = metadata_filter(payload.get("metadata"))
    if payload.get("checkpoint") and checkpoint_id_of(payload["checkpoint"]):
        start = find_point(thread, checkpoint_id_of(payload["checkpoint"]))
        points = [start, *_points(thread, before=start, limit=limit)]
    else:
        points = _points(thread, before=before, limit=limit + 1)
    if wanted:
        points = [p for p in points if all(p.metadata.get(k) == v for k, v in wanted.items())]
    out = []
    for i, point in enumerate(points[:limit]):
        parent = points[i + 1] if i + 1 < len(points) else None
        out.append(_state(thread, point, parent))
    return out


def _spec_of_thread(thread: Thread) -> Any:
    run = Run.objects.filter(thread=thread).select_related("graph").order_by("-created_at").first()
    if run is not None:
        return spec_for(run.graph)
    name = thread.metadata.get("graph_id")
    if isinstance(name, str):
        graph = (
            Graph.objects.for_tenant(thread.tenant)
            .filter(name=name[:100])
            .order_by("-version")
            .first()
        )
        if graph is not None:
            return spec_for(graph)
    return None


@transaction.atomic
def update_state(thread: Thread, payload: dict[str, Any]) -> dict[str, Any]:
    """A new checkpoint: the thread's values with `values` merged through the reducers of the
    thread's graph (its newest run's, or metadata `graph_id`'s); plain replace per key when it
    has none. Refused while a run on the thread is active: its state belongs to that run (an
    interrupt's `command.update` patches it instead)."""
    values = payload.get("values")
    if isinstance(values, list) and len(values) == 1 and isinstance(values[0], dict):
        values = values[0]
    values = _object(values, "values")
    as_node = payload.get("as_node") or ""
    if not isinstance(as_node, str) or len(as_node) > 100:
        raise Refused("`as_node` must be a node name.")
    locked = Thread.objects.select_for_update().get(pk=thread.pk)
    run = Run.objects.filter(thread=locked).active().first()
    if run is not None:
        raise conflict(
            f"Thread {thread.public_id} has an active run ({run.public_id}, {run.status}); "
            "resume its interrupt with command.update instead, or cancel it first."
        )
    wanted = checkpoint_id_of(payload.get("checkpoint_id") or payload.get("checkpoint"))
    if wanted:
        latest = _points(locked, before=None, limit=1)
        if not latest or str(latest[0].public_id) != str(wanted):
            find_point(locked, wanted)  # 404 for an unknown one
            raise Refused(
                "Updating state at an older checkpoint is not supported; start a run with "
                "`checkpoint_id` to fork from it instead."
            )
    spec = _spec_of_thread(locked)
    try:
        state = apply_update(spec, locked.state, values) if spec else {**locked.state, **values}
    except Exception as exc:  # a reducer refusing the value (engine NodeError)
        raise Refused(f"The update does not fit the thread's state: {exc}") from None
    # The same containment a run's state has (DESIGN §5): updates cannot grow it past the cap.
    too_big = limits.check_state_size(thread.tenant, storable_size(state))
    if too_big is not None:
        raise too_big
    Thread.objects.filter(pk=locked.pk).update(state=state, updated_at=timezone.now())
    update = StateUpdate.objects.create(thread=locked, values=state, as_node=as_node)
    return {"checkpoint": shapes.checkpoint_ref(thread.public_id, update.public_id)}
