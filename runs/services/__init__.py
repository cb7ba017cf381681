"""Use cases on runs. The only code that changes a run's status."""

from runs.services.controls import (
    add_guidance,
    cancel_run,
    decide_approval,
    get_run,
    mark_interrupted,
    pause_run,
    requeue_run,
    resume_run,
    retry_run,
    submit_input,
)
from runs.services.create import create_run, create_thread, fork_run, get_thread
from runs.services.errors import (
    BlockedByHook,
    Conflict,
    InvalidTransition,
    NotFound,
    ServiceError,
    ValidationFailed,
)
from runs.services.execute import claim_run, run_segment
from runs.services.graphs import create_graph_version, get_graph, latest_versions, spec_for

__all__ = [
    "BlockedByHook",
    "Conflict",
    "InvalidTransition",
    "NotFound",
    "ServiceError",
    "ValidationFailed",
    "add_guidance",
    "cancel_run",
    "claim_run",
    "create_graph_version",
    "create_run",
    "create_thread",
    "decide_approval",
    "fork_run",
    "get_graph",
    "get_run",
    "get_thread",
    "latest_versions",
    "mark_interrupted",
    "pause_run",
    "requeue_run",
    "resume_run",
    "retry_run",
    "run_segment",
    "spec_for",
    "submit_input",
]
