"""Starting runs: validation, hooks, admission and the thread's multitask strategy."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import IntegrityError, transaction

from runs import hooks
from runs.engine import validate_input
from runs.engine.values import Unstorable, storable_size
from runs.events import append_first_events
from runs.models import Checkpoint, Graph, Run, Thread
from runs.services.dbretry import retry_transient
from runs.services.errors import BlockedByHook, Conflict, NotFound, ValidationFailed, public_id
from runs.services.graphs import get_graph, problems_to_details, spec_for
from runs.services.lifecycle import audit_run
from runs.sql import pipelined, send_instance
from runs.status import RunStatus
from tenants import limits
from tenants.models import AuditLog, Tenant

STRATEGIES = ("reject", "interrupt", "rollback", "enqueue")
PRIORITIES = range(1, 6)  # 1-5, higher first
DEFAULT_PRIORITY = 3


def _body_hash(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_thread(
    tenant: Tenant, *, metadata: dict[str, Any] | None = None, state: dict[str, Any] | None = None
) -> Thread:
    return Thread.objects.create(tenant=tenant, metadata=metadata or {}, state=state or {})


def get_thread(tenant: Tenant, thread_id: Any) -> Thread:
    thread = (
        Thread.objects.for_tenant(tenant).filter(public_id=public_id(thread_id, "Thread")).first()
    )
    if thread is None:
        raise NotFound(f"Thread {thread_id} does not exist.")
    return thread


def create_run(
    tenant: Tenant,
    *,
    graph: str,
    version: int | None = None,
    input: dict[str, Any] | None = None,
    thread_id: Any = None,
    multitask_strategy: str = "reject",
    from_checkpoint: Any = None,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str = "",
    by: str = "",
    parent: Run | None = None,
    webhook: str = "",
    webhook_include_state: bool = True,
    priority: int = DEFAULT_PRIORITY,
    created_by: str = "",
) -> Run:
    """Validate and admit a new run, write it `queued` with its event, dispatch on commit.

    Raises ValidationFailed (bad input), NotFound (graph, thread, checkpoint), Conflict (busy
    thread with `reject`, idempotency key reused with another body, fork across versions),
    BlockedByHook, or LimitExceeded. Nothing is written unless the run is created whole.

    A fork of a run's final checkpoint (no next node) ends at once, succeeded, with that
    state and the input merged in; a checkpoint where routing failed is refused (Conflict
    `checkpoint_not_resumable`). Input or metadata holding what the database cannot store
    (NaN, infinities, NUL) is refused (`invalid_json_value`) whoever calls.

    `webhook`: a URL told of the run's events (webhooks/), checked against the tenant's HTTP
    allow-list and private-address rule (422 `webhook_refused`).

    `priority` (1-5, higher first) orders the tenant's queued runs at dispatch. `created_by`
    says who started the run ("user:<login>", "key:<name>", "cron:<id>", "trigger:<event>";
    default `by`): stored on the run, shown to pre_run hooks in the request as `created_by`,
    and the actor of the run's audit rows.
    """
    input = input if input is not None else {}
    if not isinstance(input, dict):
        raise ValidationFailed("Run input must be a JSON object.", details={"field": "input"})
    _ensure_storable(input, "input")
    _ensure_storable(metadata, "metadata")
    if type(priority) is not int or priority not in PRIORITIES:
        raise ValidationFailed(
            f"priority must be an integer from 1 to 5 (higher first), got {priority!r}.",
            details={"field": "priority"},
        )
    created_by = (created_by or by)[:200]
    if multitask_strategy not in STRATEGIES:
        raise ValidationFailed(
            f"multitask_strategy must be one of {', '.join(STRATEGIES)}.",
            details={"field": "multitask_strategy"},
        )
    request = {
        "graph": graph,
        "version": version,
        "input": input,
        "thread_id": thread_id,
        "multitask_strategy": multitask_strategy,
        "from_checkpoint": from_checkpoint,
        "metadata": metadata or {},
    }
    if priority != DEFAULT_PRIORITY:  # in the idempotency hash only when given
        request["priority"] = priority
    if webhook:
        from webhooks.services import check_destination

        request["webhook"] = check_destination(tenant, webhook, field="webhook")
        if not webhook_include_state:
            request["webhook_include_state"] = False
    body_hash = _body_hash(request)
    if idempotency_key:
        existing = _idempotent_match(tenant, idempotency_key, body_hash)
        if existing is not None:
            return existing

    checkpoint = None
    if from_checkpoint:
        checkpoint = (
            Checkpoint.objects.select_related("run__graph")
            .filter(public_id=public_id(from_checkpoint, "Checkpoint"), run__tenant=tenant)
            .first()
        )
        if checkpoint is None:
            raise NotFound(f"Checkpoint {from_checkpoint} does not exist.")
        graph_row = _graph_for_fork(tenant, checkpoint, graph, version)
        _ensure_resumable(checkpoint)
    else:
        graph_row = get_graph(tenant, graph, version)
    spec = spec_for(graph_row)
    # A fork's state comes from its checkpoint, whose run's input was checked when it
    # started: a fork asks for no input again, and input given to one is still checked.
    problems = validate_input(spec, input) if checkpoint is None or input else []
    if problems:
        raise ValidationFailed(
            "Run input does not match the graph's input_schema: "
            + "; ".join(f"{p.where}: {p.message}" for p in problems[:5]),
            code="invalid_input",
            details=problems_to_details(problems),
        )
    refusal = hooks.refusal_for(tenant, {**request, "priority": priority, "created_by": created_by})
    if refusal:
        AuditLog.objects.create(
            tenant=tenant,
            actor_label=created_by or "api",
            action="run.blocked_by_hook",
            target_type="graph",
            target_id=f"{graph_row.name}@{graph_row.version}",
            reason=refusal,
            data={"request": request},
        )
        raise BlockedByHook(refusal)

    def write() -> Run:
        with transaction.atomic():
            return _admit_and_write(
                tenant,
                graph_row,
                request,
                body_hash,
                idempotency_key,
                checkpoint,
                by,
                parent,
                priority=priority,
                created_by=created_by,
            )

    try:
        return retry_transient(write)
    except IntegrityError:
        if idempotency_key:  # a concurrent request with the same key won the race
            existing = _idempotent_match(tenant, idempotency_key, body_hash)
            if existing is not None:
                return existing
        raise


def fork_run(run: Run, *, step: int, by: str = "") -> Run:
    """Start a new run from the checkpoint `run` made at step `step` (0: where it started),
    on the same graph version and thread, with no new input. Raises NotFound for a step the
    run has no checkpoint of, and whatever create_run raises (a busy thread is a 409)."""
    checkpoint = Checkpoint.objects.filter(run=run, step_index=step).first()
    if checkpoint is None:
        raise NotFound(f"Run {run.public_id} has no checkpoint at step {step}.")
    return create_run(
        run.tenant,
        graph=run.graph.name,
        version=run.graph.version,
        from_checkpoint=str(checkpoint.public_id),
        metadata={"forked_from_run": str(run.public_id), "forked_from_step": step},
        by=by,
    )


def _ensure_storable(value: Any, field: str) -> None:
    try:
        storable_size(value)
    except Unstorable as exc:
        path = f"{field}.{exc.path}" if exc.path else field
        raise ValidationFailed(
            f"Run {field} holds a value that cannot be stored at `{path}`: {exc.reason}.",
            code="invalid_json_value",
            details={"field": field, "path": path},
        ) from None


def _idempotent_match(tenant: Tenant, key: str, body_hash: str) -> Run | None:
    existing = Run.objects.for_tenant(tenant).filter(idempotency_key=key).first()
    if existing is None:
        return None
    if existing.idempotency_hash != body_hash:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_key_reused",
            details={"run_id": str(existing.public_id)},
        )
    return existing


def _graph_for_fork(
    tenant: Tenant, checkpoint: Checkpoint, name: str, version: int | None
) -> Graph:
    pinned = checkpoint.run.graph
    if name != pinned.name:
        raise Conflict(
            f"Checkpoint {checkpoint.public_id} belongs to graph {pinned.name}, not {name}.",
            code="checkpoint_graph_mismatch",
        )
    if version is not None and version != pinned.version:
        raise Conflict(
            f"Checkpoint {checkpoint.public_id} was made by {pinned.name}@{pinned.version}; "
            f"a fork must run on the same version, not @{version}.",
            code="checkpoint_version_mismatch",
            details={"checkpoint_version": pinned.version, "requested_version": version},
        )
    return pinned


def _ensure_resumable(checkpoint: Checkpoint) -> None:
    """A checkpoint with no next node is either a run's final one (its run succeeded: a fork
    of it ends at once, succeeded with that state, like LangGraph resuming a finished
    checkpoint) or where routing failed (nothing to resume: refused)."""
    if (checkpoint.position or {}).get("node") is not None:
        return
    if checkpoint.run.status == RunStatus.SUCCEEDED:
        return
    err = checkpoint.run.error or {}
    raise Conflict(
        f"Checkpoint {checkpoint.public_id} has no next node: its run stopped there "
        f"({err.get('code', checkpoint.run.status)}). Fork from an earlier checkpoint to run "
        "that part again.",
        code="checkpoint_not_resumable",
        details={"run_status": checkpoint.run.status, "run_error": err.get("code")},
    )


def _admit_and_write(
    tenant: Tenant,
    graph_row: Graph,
    request: dict[str, Any],
    body_hash: str,
    idempotency_key: str,
    checkpoint: Checkpoint | None,
    by: str,
    parent: Run | None,
    *,
    priority: int,
    created_by: str,
) -> Run:
    from runs.dispatch import send_dispatch_in_transaction

    thread_id = request["thread_id"]
    if not thread_id and checkpoint is not None and checkpoint.thread is not None:
        thread_id = checkpoint.thread.public_id  # a fork continues on its thread
    # On PostgreSQL the admission's UPDATE and the run's INSERT go in one round trip (after the
    # BEGIN's own: psycopg waits for a BEGIN sent in a pipeline). The tenant's row is locked
    # first, then the thread's: the order retry_run takes.
    with pipelined() as pipe:
        admitted = limits.send_admission(tenant)
        thread = None
        if thread_id:
            admitted()  # a full queue is told before a busy thread
            pipe.end()  # the thread's checks read and write through the ORM
            thread = _take_thread(tenant, thread_id, request["multitask_strategy"], by)
        run = Run(
            tenant=tenant,
            graph=graph_row,
            graph_hash=graph_row.hash,
            thread=thread,
            parent=parent,
            depth=(parent.depth + 1) if parent else 0,
            input=request["input"],
            metadata=request["metadata"],
            multitask_strategy=request["multitask_strategy"],
            priority=priority,
            created_by=created_by,
            graph_limit_id=graph_row.limit_id,
            holds_queue_slot=True,
            idempotency_key=idempotency_key,
            idempotency_hash=body_hash if idempotency_key else "",
        )
        if checkpoint is not None:
            # A fork starts at the checkpoint's position with its state; input merges on top.
            run.state = checkpoint.state
            run.position = {**checkpoint.position, "step": 0}
            run.metadata = {**run.metadata, "forked_from": str(checkpoint.public_id)}
        run.last_seq = 1  # its run.queued event, written below
        # On PostgreSQL the INSERT, the audit row and the dispatcher's reads go with the
        # admission, all read after (the candidates query runs after the INSERT, so it sees
        # the new run): one round trip; the usage row, the event and the dispatcher's slot a
        # second (the pipeline's end), the COMMIT a third.
        read_pk = send_instance(run)
        audit_run(run, "run.created", graph=graph_row)
        dispatch = send_dispatch_in_transaction() if parent is None else None
        admitted()  # a refusal rolls the INSERT back with the transaction
        read_pk()
        run.tenant = tenant
        if request.get("webhook"):
            from webhooks.services import attach_to_run

            pipe.end()  # the subscription is written through the ORM
            attach_to_run(
                run, request["webhook"], include_state=request.get("webhook_include_state", True)
            )
        # These writes are sent without waiting (the event's id is read when it is published,
        # after the commit), and go in one round trip with the dispatcher's slot (a block of
        # its own when the webhook ended the pipeline): the block's end, before the COMMIT.
        with pipelined():
            limits.record_usage(tenant.pk, runs=1, shard=limits.usage_shard(run.pk))
            append_first_events(
                run, [("run.queued", {"graph": graph_row.name, "version": graph_row.version})]
            )
            settle = dispatch() if dispatch is not None else None
    if settle is not None:
        settle()  # the slot's result, in by now
    return run


def _take_thread(tenant: Tenant, thread_id: Any, strategy: str, by: str) -> Thread:
    """The thread a new run goes on, locked: its row lock serialises concurrent starts on
    one thread. Conflict `thread_busy` when it has an active run and `strategy` is reject;
    interrupt and rollback cancel that run instead."""
    from runs.services.controls import cancel_run

    thread = get_thread(tenant, thread_id)
    thread = Thread.objects.select_for_update().get(pk=thread.pk)
    active = list(Run.objects.filter(thread=thread).active().select_related("tenant"))
    if active and strategy == "reject":
        raise Conflict(
            f"Thread {thread.public_id} already has an active run "
            f"({active[0].public_id}, {active[0].status}).",
            code="thread_busy",
            details={"run_id": str(active[0].public_id)},
        )
    if strategy in ("interrupt", "rollback"):
        for other in active:
            cancel_run(other, action=strategy, by=by or "multitask")
    return thread
