"""Runyard rows in the protocol's shapes (langgraph_sdk.schema): runs, threads, checkpoints."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist

from runs.models import Run, Thread
from runs.status import RunStatus

# Runyard run status -> the protocol's RunStatus. A run waiting on a human has stopped for
# now (LangGraph ends the run at an interrupt and the thread is "interrupted"): "interrupted"
# tells the SDK it will not go on by itself. Cancelled runs are "interrupted" as LangGraph's
# cancel leaves them; a run Runyard marked interrupted (orphaned, evidence kept) failed.
RUN_STATUS: dict[str, str] = {
    RunStatus.QUEUED: "pending",
    RunStatus.RUNNING: "running",
    RunStatus.CANCELLING: "running",
    RunStatus.WAITING: "interrupted",
    RunStatus.PAUSED: "interrupted",
    RunStatus.SUCCEEDED: "success",
    RunStatus.FAILED: "error",
    RunStatus.CANCELLED: "interrupted",
    RunStatus.INTERRUPTED: "error",
    RunStatus.TIMED_OUT: "timeout",
}
# The protocol's status filters -> Runyard's.
RUN_STATUS_FILTER = {
    "pending": [RunStatus.QUEUED],
    "running": [RunStatus.RUNNING, RunStatus.CANCELLING],
    "success": [RunStatus.SUCCEEDED],
    "error": [RunStatus.FAILED, RunStatus.INTERRUPTED],
    "timeout": [RunStatus.TIMED_OUT],
    "interrupted": [RunStatus.WAITING, RunStatus.PAUSED, RunStatus.CANCELLED],
}
THREAD_STATUSES = ("idle", "busy", "interrupted", "error")


def checkpoint_ref(thread_id: Any, checkpoint_id: Any) -> dict[str, Any] | None:
    if checkpoint_id is None:
        return None
    return {
        "thread_id": str(thread_id),
        "checkpoint_ns": "",
        "checkpoint_id": str(checkpoint_id),
        "checkpoint_map": None,
    }


def checkpoint_config(thread_id: Any, checkpoint_id: Any) -> dict[str, Any] | None:
    if checkpoint_id is None:
        return None
    return {
        "configurable": {
            "thread_id": str(thread_id),
            "checkpoint_ns": "",
            "checkpoint_id": str(checkpoint_id),
        }
    }


def interrupt_of(waiting_for: dict[str, Any]) -> dict[str, Any]:
    """An approval or input a run waits on, as a LangGraph Interrupt. `value` says what answers
    it: `command.resume` = {"decision": "approve"|"reject", "patch"?, "route"?} for an
    approval, the value itself for an input."""
    kind = waiting_for.get("kind")
    value: dict[str, Any] = {
        "kind": kind,
        "node": waiting_for.get("node"),
        "message": waiting_for.get("message"),
        "deadline": waiting_for.get("deadline"),
        "default": waiting_for.get("default"),
    }
    data = waiting_for.get("data") or {}
    if kind == "approval":
        value["routes"] = data.get("routes") or []
        value["on_reject"] = data.get("on_reject")
    interrupt: dict[str, Any] = {"value": value, "id": str(waiting_for.get("id"))}
    if kind == "approval":
        interrupt["response_schema"] = {
            "type": "object",
            "required": ["decision"],
            "properties": {
                "decision": {"enum": ["approve", "reject"]},
                "patch": {"type": "object"},
                "route": {"enum": value["routes"]},
            },
        }
    return interrupt


def waiting_interrupts(run: Run | None) -> list[dict[str, Any]]:
    if run is None or run.status != RunStatus.WAITING or not run.waiting_for:
        return []
    if run.waiting_for.get("kind") not in ("approval", "input"):
        return []
    return [interrupt_of(run.waiting_for)]


def task_id(run: Run, index: int | str) -> str:
    return f"{run.public_id}:{index}"


def run_out(run: Run, *, assistant_id: str | None = None) -> dict[str, Any]:
    options = getattr(run, "_lg_options", None)
    if options is None:
        options = getattr(run, "lg_options", None) if _has_options(run) else None
    kwargs = dict(options.kwargs) if options is not None else {"input": run.input}
    if options is not None:
        kwargs["stream_mode"] = options.stream_mode
    error = run.error or {}
    return {
        "run_id": str(run.public_id),
        "thread_id": str(run.thread.public_id) if run.thread_id and run.thread else None,
        "assistant_id": assistant_id
        or (options.assistant_id if options is not None else str(run.graph.public_id)),
        "created_at": run.created_at,
        "updated_at": run.finished_at or run.started_at or run.created_at,
        "status": RUN_STATUS.get(run.status, "running"),
        "metadata": run.metadata,
        "multitask_strategy": run.multitask_strategy,
        "kwargs": kwargs,
        "cancel_reason": error.get("message") if run.status == RunStatus.CANCELLED else None,
    }


def _has_options(run: Run) -> bool:
    try:
        run.lg_options  # noqa: B018 - a reverse one-to-one raises when absent
    except ObjectDoesNotExist:
        return False
    return True


def thread_out(
    thread: Thread, *, status: str, values: dict[str, Any], interrupts: list[dict[str, Any]]
) -> dict[str, Any]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for interrupt in interrupts:
        by_task.setdefault(interrupt["id"], []).append(interrupt)
    return {
        "thread_id": str(thread.public_id),
        "created_at": thread.created_at,
        "updated_at": thread.updated_at,
        "state_updated_at": thread.updated_at,
        "metadata": thread.metadata,
        "status": status,
        "values": values,
        "interrupts": by_task,
        "config": {},
        "context": {},
    }
