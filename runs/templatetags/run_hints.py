"""Hints the runs list and the run page show about a run as it is now."""

from __future__ import annotations

import datetime as dt

from django import template

from runs.models import Run
from runs.status import RunStatus

register = template.Library()

# Statuses in which a worker holds the run under a lease it must keep renewing.
LEASED = frozenset({RunStatus.RUNNING, RunStatus.CANCELLING})


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


@register.filter
def stale_lease(run: Run, now: dt.datetime | None) -> str:
    """What to tell a person about a run whose worker stopped renewing its lease (it crashed,
    or lost the database): "" while the lease is fresh, or for a run no worker holds."""
    expires = run.lease_expires_at
    if run.status not in LEASED or expires is None or now is None or expires >= now:
        return ""
    return (
        f"Worker lost — lease expired {ago((now - expires).total_seconds())} ago; "
        "the reconciler will resume the run or mark it interrupted."
    )
