"""Bounded retries of transactions that hit transient database errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection

log = logging.getLogger(__name__)
T = TypeVar("T")

# PostgreSQL serialization failure and deadlock; SQLite reports busy/locked as text only.
TRANSIENT_SQLSTATES = {"40001", "40P01"}
TRANSIENT_TEXT = ("database is locked", "database is busy", "database table is locked")


def is_transient(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    if getattr(cause, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    return any(text in str(exc).lower() for text in TRANSIENT_TEXT)


def retry_transient(
    fn: Callable[[], T], *, attempts: int = 8, base: float = 0.05, cap: float = 2.0
) -> T:
    """Run `fn` (which opens its own transaction) again after a transient error.

    Each try rolls back whole, so a retry never sees half of an earlier try. Past the bound
    the last error propagates and nothing was written.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OperationalError as exc:
            if attempt == attempts or not is_transient(exc) or connection.in_atomic_block:
                raise
            delay = min(cap, base * 2 ** (attempt - 1))
            log.info("transient database error (%s); retry %d in %.2fs", exc, attempt, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
