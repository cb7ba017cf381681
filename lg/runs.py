"""Runs through the protocol: options checked (honoured, mapped or refused with a 422), the
assistant resolved to a graph version, then Runyard's own services start, resume or cancel.

A `webhook` is Runyard's run webhook (webhooks/): checked against the tenant's HTTP
allow-list when the run is created (422 saying why), told of the run's status changes
(waiting on a human, succeeded, failed, cancelled...), signed like every Runyard webhook.

A `command.resume` answers the approval or input the thread's waiting run is stopped at: the
run goes on (the same run id) from where it waited, as Runyard's runs do; `command.update`
becomes the approval's state patch and `command.goto` its route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from lg import assistants, threads
from lg.errors import Refused, conflict, not_found
from lg.models import RunOptions
from runs import services
from runs.api.common import ensure_json_size
from runs.checkpoints import current_state
from runs.models import Checkpoint, Run, Thread
from runs.services.create import STRATEGIES
from runs.status import TERMINAL, RunStatus
from tenants.auth import TenantContext

# `tools` is accepted and stays quiet: Runyard's nodes are not LangChain tools (useStream asks
# for it as soon as a UI reads tool progress).
STREAM_MODES = (
    "values",
    "updates",
    "messages-tuple",
    "messages",
    "tools",
    "custom",
    "events",
    "debug",
    "tasks",
    "checkpoints",
)
# Options the protocol has and Runyard does not honour: refused, never silently dropped.
REFUSED = {
    "interrupt_before": "Runyard graphs stop for humans at approval and input nodes; "
    "interrupt_before/interrupt_after are not supported.",
    "interrupt_after": "Runyard graphs stop for humans at approval and input nodes; "
    "interrupt_before/interrupt_after are not supported.",
    "feedback_keys": "LangSmith feedback keys are not supported.",
    "langsmith_tracer": "LangSmith tracing is not supported.",
}
KNOWN = {
    "assistant_id",
    "input",
    "command",
    "config",
    "context",
    "metadata",
    "stream_mode",
    "stream_subgraphs",
    "stream_resumable",
    "checkpoint",
    "checkpoint_id",
    "checkpoint_during",
    "multitask_strategy",
    "if_not_exists",
    "on_disconnect",
    "on_completion",
    "after_seconds",
    "durability",
    "strict_resume",
    "thread_id",
    "webhook",
    *REFUSED,
}
MAX_BATCH = 100


@dataclass
class Started:
    run: Run
    cursor: int  # the run's last seq before this request: a stream starts after it
    modes: list[str] = field(default_factory=list)
    on_disconnect: str = "continue"
    subgraphs: bool = False


def stream_modes(value: Any, default: list[str]) -> list[str]:
    if value is None:
        return list(default)
    modes = [value] if isinstance(value, str) else value
    if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
        raise Refused("`stream_mode` must be a mode or a list of modes.")
    unknown = [m for m in modes if m not in STREAM_MODES]
    if unknown:
        raise Refused(
            f"stream_mode {unknown} is not supported; Runyard streams {list(STREAM_MODES)} "
            "(LLM tokens come as `messages-tuple` or `messages`)."
        )
    return list(dict.fromkeys(modes))


def check_options(payload: dict[str, Any], *, threaded: bool) -> None:
    unknown = sorted(set(payload) - KNOWN)
    if unknown:
        raise Refused(f"Unknown run options {unknown}.")
    for option, why in REFUSED.items():
        if payload.get(option):
            raise Refused(why)
    if payload.get("after_seconds"):
        raise Refused("after_seconds (delayed runs) is not supported; start the run later.")
    if payload.get("on_completion") not in (None, "delete", "keep"):
        raise Refused("`on_completion` must be delete or keep.")
    if threaded and payload.get("on_completion"):
        raise Refused("`on_completion` applies to stateless runs (POST /runs) only.")
    if payload.get("on_disconnect") not in (None, "cancel", "continue"):
        raise Refused("`on_disconnect` must be cancel or continue.")
    if payload.get("durability") not in (None, "sync", "async", "exit"):
        raise Refused("`durability` must be sync, async or exit.")
    if payload.get("multitask_strategy") not in (None, *STRATEGIES):
        raise Refused("`multitask_strategy` must be reject, interrupt, rollback or enqueue.")
    if not isinstance(payload.get("assistant_id"), str) or not payload["assistant_id"]:
        raise Refused("`assistant_id` is required: a graph's name or an assistant's id.")
    if payload.get("input") is not None and not isinstance(payload["input"], dict):
        raise Refused("`input` must be a JSON object (or null).")
    if payload.get("metadata") is not None and not isinstance(payload["metadata"], dict):
        raise Refused("`metadata` must be a JSON object.")
    if payload.get("webhook") is not None and not isinstance(payload["webhook"], str):
        raise Refused("`webhook` must be an http or https URL.")
    # The limits /api/v1 applies to the same fields (413 past them).
    for name in ("input", "metadata", "config", "context", "command"):
        ensure_json_size(payload.get(name), name)


def start_run(
    ctx: TenantContext,
    payload: dict[str, Any],
    *,
    thread_id: str | None,
    default_modes: list[str] | None = None,
) -> Started:
    """Start (or, with `command.resume`, continue) a run; see the module docstring."""
    check_options(payload, threaded=thread_id is not None)
    modes = stream_modes(payload.get("stream_mode"), default_modes or ["values"])
    resolved = assistants.resolve(ctx.tenant, payload["assistant_id"][:100])
    config = assistants.check_config(payload.get("config"))
    context = payload.get("context")
    if context is not None and not isinstance(context, dict):
        raise Refused("`context` must be a JSON object.")
    thread = None
    if thread_id is not None:
        thread = threads.ensure_thread(
            ctx.tenant, thread_id, if_not_exists=payload.get("if_not_exists")
        )
    kwargs = {
        "input": payload.get("input"),
        "command": payload.get("command"),
        "config": config,
        "context": context or {},
        "stream_mode": modes,
        "stream_subgraphs": bool(payload.get("stream_subgraphs")),
        "durability": payload.get("durability"),
        "on_disconnect": payload.get("on_disconnect"),
        "webhook": payload.get("webhook"),
    }
    on_disconnect = payload.get("on_disconnect") or "continue"
    command = payload.get("command")
    if command:
        if thread is None:
            raise Refused("A `command` resumes an interrupt of a thread: use a thread's runs.")
        if payload.get("webhook"):
            raise Refused(
                "A `webhook` belongs to a new run: a `command` goes on with the waiting run, "
                "which keeps the webhook it was started with."
            )
        run, cursor = resume(ctx, thread, command, resolved)
        RunOptions.objects.get_or_create(
            run=run,
            defaults={
                "assistant_id": resolved.assistant_id,
                "stream_mode": modes,
                "kwargs": kwargs,
            },
        )
        return Started(run, cursor, modes, on_disconnect, bool(payload.get("stream_subgraphs")))
    from_checkpoint = None
    wanted = threads.checkpoint_id_of(payload.get("checkpoint_id") or payload.get("checkpoint"))
    if wanted:
        if thread is None:
            raise Refused("`checkpoint_id` forks a thread's checkpoint: use a thread's runs.")
        from_checkpoint = _fork_point(thread, wanted)
    with transaction.atomic():
        run = services.create_run(
            ctx.tenant,
            graph=resolved.graph_name,
            version=resolved.graph_version,
            input=payload.get("input") or {},
            thread_id=str(thread.public_id) if thread is not None else None,
            multitask_strategy=payload.get("multitask_strategy") or "reject",
            from_checkpoint=from_checkpoint,
            metadata=payload.get("metadata") or {},
            by=ctx.actor_label,
            webhook=payload.get("webhook") or "",
            created_by=ctx.principal,
        )
        options = RunOptions.objects.create(
            run=run, assistant_id=resolved.assistant_id, stream_mode=modes, kwargs=kwargs
        )
    run._lg_options = options  # type: ignore[attr-defined]
    return Started(run, 0, modes, on_disconnect, bool(payload.get("stream_subgraphs")))


def _fork_point(thread: Thread, checkpoint_id: Any) -> str | None:
    """A run's checkpoint forks from there; the newest StateUpdate is the thread's state, so a
    run from it is a plain run on the thread; an older StateUpdate cannot be forked."""
    point = threads.find_point(thread, checkpoint_id)
    if Checkpoint.objects.filter(thread=thread, public_id=point.public_id).exists():
        return str(point.public_id)
    newest = threads._points(thread, before=None, limit=1)
    if newest and newest[0].public_id == point.public_id:
        return None
    raise Refused(
        f"Checkpoint {checkpoint_id} is an older state update; Runyard forks from a run's "
        "checkpoints or the thread's newest state."
    )


def _resume_value(command: dict[str, Any], interrupt_id: str) -> Any:
    value = command["resume"]
    # LangGraph also takes {interrupt_id: value} to answer one interrupt among several.
    if isinstance(value, dict) and set(value) == {interrupt_id}:
        value = value[interrupt_id]
    return value


def _as_update(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, list):
        pairs = [p for p in value if isinstance(p, list | tuple) and len(p) == 2]
        if len(pairs) != len(value) or not all(isinstance(k, str) for k, _ in pairs):
            raise Refused("`command.update` must be an object or a list of [key, value] pairs.")
        return {str(k): v for k, v in pairs}
    if not isinstance(value, dict):
        raise Refused("`command.update` must be a JSON object.")
    return value


def resume(
    ctx: TenantContext, thread: Thread, command: Any, resolved: assistants.Resolved
) -> tuple[Run, int]:
    if not isinstance(command, dict):
        raise Refused("`command` must be a JSON object.")
    unknown = sorted(set(command) - {"resume", "update", "goto"})
    if unknown:
        raise Refused(f"Unknown command fields {unknown}.")
    if "resume" not in command:
        raise Refused(
            "A command without `resume` is not supported: Runyard takes `update` and `goto` as "
            "the patch and route of an approval being answered."
        )
    run = (
        Run.objects.filter(thread=thread, status=RunStatus.WAITING)
        .select_related("tenant", "graph", "thread")
        .order_by("-created_at")
        .first()
    )
    waiting = (run.waiting_for or {}) if run is not None else {}
    if run is None or waiting.get("kind") not in ("approval", "input"):
        raise conflict(f"Thread {thread.public_id} has no interrupt waiting for an answer.")
    if run.graph.name != resolved.graph_name:
        raise conflict(
            f"The interrupt belongs to a run of graph {run.graph.name}, not {resolved.graph_name}."
        )
    cursor = run.last_seq
    interrupt_id = str(waiting["id"])
    value = _resume_value(command, interrupt_id)
    update = _as_update(command.get("update"))
    goto = command.get("goto")
    if goto is not None and not isinstance(goto, str):
        raise Refused("`command.goto` must be a node name (Send is not supported).")
    if waiting["kind"] == "input":
        if update is not None or goto is not None:
            raise Refused("An input interrupt takes `resume` only (no update or goto).")
        services.submit_input(run, value, input_id=interrupt_id, by=ctx.actor_label)
        return run, cursor
    decision, patch, route = _decision(value)
    if update:
        patch = {**(patch or {}), **update}
    services.decide_approval(
        run,
        interrupt_id,
        decision=decision,
        patch=patch,
        route=route if route is not None else goto,
        by=ctx.actor_label,
    )
    return run, cursor


def _decision(value: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    if value is True or value in ("approve", "approved", "yes"):
        return "approve", None, None
    if value is False or value in ("reject", "rejected", "no"):
        return "reject", None, None
    if isinstance(value, dict) and value.get("decision") in ("approve", "reject"):
        patch, route = value.get("patch"), value.get("route")
        if patch is not None and not isinstance(patch, dict):
            raise Refused("`resume.patch` must be a JSON object.")
        if route is not None and not isinstance(route, str):
            raise Refused("`resume.route` must be a node name.")
        return value["decision"], patch, route
    raise Refused(
        'An approval is resumed with {"decision": "approve"|"reject", "patch"?, "route"?} '
        '(or "approve"/"reject", true/false).'
    )


def get_run(ctx: TenantContext, thread_id: str | None, run_id: str) -> Run:
    run = services.get_run(ctx.tenant, run_id)
    if thread_id is not None and (run.thread is None or str(run.thread.public_id) != thread_id):
        raise not_found("Run", run_id)
    return run


def list_runs(
    ctx: TenantContext, thread_id: str, *, limit: int, offset: int, status: str | None
) -> list[Run]:
    from lg import shapes

    thread = threads.get_thread(ctx.tenant, thread_id)
    if not 0 < limit <= 1000 or not 0 <= offset <= 1_000_000:
        raise Refused("`limit` must be 1-1000 and `offset` 0-1000000.")
    qs = Run.objects.filter(thread=thread).select_related("graph", "thread", "lg_options")
    if status:
        if status not in shapes.RUN_STATUS_FILTER:
            raise Refused(f"`status` must be one of {sorted(shapes.RUN_STATUS_FILTER)}.")
        qs = qs.filter(status__in=shapes.RUN_STATUS_FILTER[status])
    return list(qs.order_by("-created_at", "-id")[offset : offset + limit])


@transaction.atomic
def delete_run(run: Run) -> None:
    locked = Run.objects.select_for_update().get(pk=run.pk)
    if locked.status not in TERMINAL:
        raise conflict(f"Run {run.public_id} is {locked.status}; cancel it before deleting it.")
    locked.delete()


def cancel_many(ctx: TenantContext, payload: dict[str, Any], *, action: str) -> int:
    """Bulk cancel by ids (optionally of one thread) or by status (pending, running, all),
    at most 1000 runs per call."""
    status = payload.get("status")
    run_ids = payload.get("run_ids")
    thread_id = payload.get("thread_id")
    if status:
        wanted = {
            "pending": [RunStatus.QUEUED],
            "running": [RunStatus.RUNNING],
            "all": [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED],
        }.get(str(status))
        if wanted is None:
            raise Refused("`status` must be pending, running or all.")
        qs = Run.objects.for_tenant(ctx.tenant).filter(status__in=wanted, parent__isnull=True)
        if thread_id:
            qs = qs.filter(thread=threads.get_thread(ctx.tenant, str(thread_id)))
        runs = list(qs.select_related("tenant", "graph", "thread")[:1000])
    elif isinstance(run_ids, list) and run_ids and len(run_ids) <= 1000:
        runs = [get_run(ctx, str(thread_id) if thread_id else None, str(r)) for r in run_ids]
    else:
        raise Refused("Give `run_ids` (at most 1000) or `status`.")
    for run in runs:
        if run.status not in TERMINAL:
            services.cancel_run(run, action=action, by=ctx.actor_label)
    return len(runs)


def final_values(run: Run) -> dict[str, Any]:
    """What `/wait` and `/join` answer: the run's state; with `__interrupt__` while it waits
    on a human, and `__error__` when it failed."""
    from lg import shapes

    if run.status in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.INTERRUPTED):
        err = run.error or {}
        return {
            "__error__": {
                "error": err.get("code", run.status),
                "message": err.get("message", f"The run ended {run.status}."),
            }
        }
    values = dict(current_state(run))
    interrupts = shapes.waiting_interrupts(run)
    if interrupts:
        values["__interrupt__"] = interrupts
    if run.status == RunStatus.CANCELLED and run.thread_id and run.cancel_action == "rollback":
        values = dict(Thread.objects.get(pk=run.thread_id).state)
    return values
