"""Bounded retries of transactions that hit transient database errors."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import OperationalError, connection

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

# Looked up here, so a test can run the retries on a virtual clock without patching the `time`
# module for every other thread in the process.
monotonic = time.monotonic
sleep = time.sleep

# PostgreSQL serialization failure and deadlock; SQLite reports busy/locked as text only.
TRANSIENT_SQLSTATES = {"40001", "40P01"}
TRANSIENT_TEXT = ("database is locked", "database is busy", "database table is locked")


def is_transient(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    if getattr(cause, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    return any(text in str(exc).lower() for text in TRANSIENT_TEXT)


def busy_wait_seconds() -> float:
    """How long one try can wait for SQLite's write lock before failing (0 elsewhere)."""
    if connection.vendor != "sqlite":
        return 0.0
    return float(connection.settings_dict.get("OPTIONS", {}).get("timeout", 5.0))


def retry_transient(
    fn: Callable[[], T],
    *,
    attempts: int = 8,
    base: float = 0.05,
    cap: float = 2.0,
    budget: float | None = None,
) -> T:
    """Run `fn` (which opens its own transaction) again after a transient error.

    Each try rolls back whole, so a retry never sees half of an earlier try. Past the bound
    the last error propagates and nothing was written. The bound is in time too: no try starts
    that could still be waiting (its backoff plus SQLite's busy timeout) once `budget` seconds
    (default: the run lease) have passed since the first, so a worker gives up on a commit
    before its lease could have expired behind it.
    """
    if budget is None:
        budget = float(settings.RUNYARD["LEASE_SECONDS"])
    started = monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OperationalError as exc:
            if attempt == attempts or not is_transient(exc) or connection.in_atomic_block:
                raise
            delay = min(cap, base * 2 ** (attempt - 1))
            if monotonic() - started + delay + busy_wait_seconds() >= budget:
                raise
            log.info("transient database error (%s); retry %d in %.2fs", exc, attempt, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def retried(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate a service that opens its own transaction (`@transaction.atomic` under this):
    a transient error (SQLite busy, a PostgreSQL serialization failure) runs it again, whole,
    within retry_transient's bounds, instead of reaching the caller (an API's 503). Called
    inside another transaction it runs once: the outer transaction is the one to retry."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return retry_transient(lambda: fn(*args, **kwargs))

    return wrapper
