"""django-q2 entry points. Thin: each calls one service by id."""

from __future__ import annotations

from runs.dispatch import dispatch_once
from runs.reconcile import reconcile_once
from runs.services.execute import run_segment


def execute_run(run_pk: int) -> str:
    """Execute one segment of a run. A redelivered task finds it claimed and does nothing."""
    return run_segment(run_pk)


def dispatch_runs() -> int:
    return dispatch_once()


def reconcile_runs() -> int:
    return len(reconcile_once())
