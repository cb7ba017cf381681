"""Retries of a transient database error stay within the run lease, waits included."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import OperationalError

from runs.services import dbretry

# Not inside a test transaction: retries happen only outside any atomic block.
pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    """A virtual clock: sleeps and lock waits advance it without taking real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(dbretry, "monotonic", clock.monotonic)
    monkeypatch.setattr(dbretry, "sleep", clock.sleep)
    return clock


def locked_after_waiting(clock: Clock, wait: float, calls: list[float]) -> None:
    calls.append(clock.now)
    clock.sleep(wait)  # the try waited this long for the write lock, then gave up
    raise OperationalError("database is locked")


def test_retries_of_a_locked_database_end_within_the_lease(clock: Clock) -> None:
    wait = dbretry.busy_wait_seconds()
    calls: list[float] = []
    with pytest.raises(OperationalError):
        dbretry.retry_transient(lambda: locked_after_waiting(clock, wait, calls))
    assert clock.now < settings.RUNYARD["LEASE_SECONDS"]
    assert len(calls) >= 2  # it did retry


def test_no_retry_starts_that_could_outlast_the_budget(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbretry, "busy_wait_seconds", lambda: 3.0)
    calls: list[float] = []
    with pytest.raises(OperationalError):
        dbretry.retry_transient(lambda: locked_after_waiting(clock, 3.0, calls), budget=10.0)
    # Tries at 0, 3.05 and 6.15 (each waits 3 s); a fourth would start at 9.35 and could
    # wait until 12.35, past the budget, so the third one's error is final.
    assert calls == pytest.approx([0.0, 3.05, 6.15])
    assert clock.now < 10.0


def test_a_transient_error_within_the_budget_is_retried_to_success(clock: Clock) -> None:
    calls: list[float] = []

    def flaky() -> str:
        if len(calls) < 3:
            locked_after_waiting(clock, 0.1, calls)
        return "done"

    assert dbretry.retry_transient(flaky) == "done"
    assert len(calls) == 3
