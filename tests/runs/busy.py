"""A busy database on demand: dbretry's clock made virtual, and runs-table writes that fail the
way SQLite fails a writer that did not get the lock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import OperationalError, connection

from runs.services import dbretry


class Clock:
    """dbretry's own clock names, virtual: backoffs take no real time (the `time` module
    other threads use is left alone)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def virtual_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Run dbretry's backoffs on a Clock (lock waits count as nothing)."""
    clock = Clock()
    monkeypatch.setattr(dbretry, "monotonic", clock.monotonic)
    monkeypatch.setattr(dbretry, "sleep", clock.sleep)
    monkeypatch.setattr(dbretry, "busy_wait_seconds", lambda: 0.0)
    return clock


@contextmanager
def locked_runs_table(times: int | None) -> Iterator[list[str]]:
    """The next `times` UPDATEs of the runs table (every one, with None) fail the way SQLite
    fails a writer that did not get the lock; the statement never reaches the database."""
    failed: list[str] = []

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        update = sql.lstrip().upper().startswith("UPDATE") and "runs_run" in sql
        if update and (times is None or len(failed) < times):
            failed.append(sql)
            raise OperationalError("database is locked")
        return execute(sql, params, many, ctx)

    with connection.execute_wrapper(wrapper):
        yield failed
