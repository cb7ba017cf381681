"""Resurrection policy: how often a failed run resumes, after what cooldown, and which errors
are fatal (never resurrected).

A run whose node failed for good (after its retries, with no `on_error` edge) resumes at that
node with the state from before it, up to `max_resurrections` times: the spec's value when it
says, else the tenant's (default 3), and never more than the tenant's. Each resurrection waits
`RESURRECTION_COOLDOWN_SECONDS` queued (the dispatcher skips the run until its `not_before`),
so a failing dependency gets a moment and no worker sleeps through it.

Fatal errors are those a retry cannot fix: the engine's own `fatal` flag (configuration,
validation, expressions, limits), an error code (or its cause's code) matching
`FATAL_ERROR_CODES`, or a message containing one of `FATAL_ERROR_PATTERNS` (credentials,
permissions, quotas: "permission denied" from a function is fatal even though the function
raised a plain exception).
"""

from __future__ import annotations

import datetime as dt
from fnmatch import fnmatchcase
from typing import Any

from django.conf import settings
from django.utils import timezone

from runs.engine import GraphSpec
from tenants.models import Tenant

# How much of each message is searched for the patterns: messages may quote whole responses.
MESSAGE_CHARS = 4000


def allowed(spec: GraphSpec, tenant: Tenant) -> int:
    """Resurrections a run of `spec` may have: the spec's ask, capped by the tenant's."""
    cap = int(tenant.max_resurrections)
    wanted = spec.max_resurrections
    return cap if wanted is None else min(int(wanted), cap)


def cooldown_seconds() -> float:
    return max(0.0, float(settings.RUNYARD.get("RESURRECTION_COOLDOWN_SECONDS", 2)))


def not_before(cooldown: float) -> dt.datetime | None:
    return timezone.now() + dt.timedelta(seconds=cooldown) if cooldown > 0 else None


def fatal_reason(err: dict[str, Any]) -> str | None:
    """Why the run error `err` must not be resurrected; None when it may be."""
    if err.get("fatal"):
        return "fatal error"
    raw_cause = err.get("cause")
    cause: dict[str, Any] = raw_cause if isinstance(raw_cause, dict) else {}
    conf = settings.RUNYARD
    codes = [str(c) for c in (err.get("code"), cause.get("code")) if c]
    for pattern in conf.get("FATAL_ERROR_CODES") or ():
        for code in codes:
            if fnmatchcase(code, pattern):
                return f"error code {code!r} is fatal ({pattern!r})"
    text = " ".join(
        str(m)[:MESSAGE_CHARS].lower() for m in (err.get("message"), cause.get("message")) if m
    )
    for pattern in conf.get("FATAL_ERROR_PATTERNS") or ():
        if pattern and pattern.lower() in text:
            return f"message matches {pattern!r}"
    return None
