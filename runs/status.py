"""Run statuses and the transitions services may make between them."""

from __future__ import annotations

from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    TIMED_OUT = "timed_out"


TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.INTERRUPTED,
        RunStatus.TIMED_OUT,
    }
)
ACTIVE = frozenset(s for s in RunStatus if s not in TERMINAL)

# status -> statuses it may move to. Services check this before every guarded UPDATE.
TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.QUEUED: frozenset(
        {
            RunStatus.QUEUED,
            RunStatus.RUNNING,
            RunStatus.CANCELLED,
            RunStatus.PAUSED,
            RunStatus.FAILED,
            RunStatus.INTERRUPTED,
            RunStatus.TIMED_OUT,
        }
    ),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.QUEUED,
            RunStatus.WAITING,
            RunStatus.PAUSED,
            RunStatus.CANCELLING,
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.INTERRUPTED,
            RunStatus.TIMED_OUT,
        }
    ),
    RunStatus.WAITING: frozenset(
        {
            RunStatus.QUEUED,
            RunStatus.CANCELLED,
            RunStatus.PAUSED,
            RunStatus.FAILED,
            RunStatus.INTERRUPTED,
            RunStatus.TIMED_OUT,
        }
    ),
    RunStatus.PAUSED: frozenset(
        {
            RunStatus.QUEUED,
            RunStatus.WAITING,
            RunStatus.CANCELLED,
            RunStatus.FAILED,
            RunStatus.INTERRUPTED,
            RunStatus.TIMED_OUT,
        }
    ),
    RunStatus.CANCELLING: frozenset({RunStatus.CANCELLED, RunStatus.INTERRUPTED, RunStatus.FAILED}),
    # An interrupted run may be resumed (or requeued by an operator) from its last checkpoint,
    # and a failed run retried at its failed node (services.retry_run).
    RunStatus.INTERRUPTED: frozenset({RunStatus.QUEUED}),
    RunStatus.FAILED: frozenset({RunStatus.QUEUED}),
}


def can_transition(src: str, dst: str) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())
