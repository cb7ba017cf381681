"""The bounded busy retry: "database is locked" N times then success, giving up past the bound
(in tries and in time) with nothing written, and the run controls retried instead of failing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import OperationalError, connection, connections, transaction

from runs.models import Event, Run
from runs.services import cancel_run, create_run, dbretry, pause_run, resume_run
from runs.status import RunStatus
from tenants.models import Tenant
from tests.runs.busy import Clock, locked_runs_table, virtual_clock
from tests.runs.conftest import InlineQueue, chain_spec

# Not inside a test transaction: retries happen only outside any atomic block.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return virtual_clock(monkeypatch)


def test_locked_n_times_then_success(clock: Clock) -> None:
    tries: list[int] = []

    def write() -> str:
        tries.append(1)
        if len(tries) <= 4:
            raise OperationalError("database is locked")
        return "written"

    assert dbretry.retry_transient(write) == "written"
    assert len(tries) == 5
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4])  # exponential backoff


def test_gives_up_after_the_bound_on_tries(clock: Clock) -> None:
    tries: list[int] = []

    def write() -> None:
        tries.append(1)
        raise OperationalError("database is locked")

    with pytest.raises(OperationalError, match="locked"):
        dbretry.retry_transient(write, attempts=5)
    assert len(tries) == 5
    assert len(clock.sleeps) == 4 and max(clock.sleeps) <= 2.0


def test_gives_up_after_the_bound_on_time(clock: Clock) -> None:
    tries: list[float] = []

    def write() -> None:
        tries.append(clock.now)
        clock.now += 1.0  # each try waited a second for the lock
        raise OperationalError("database is locked")

    with pytest.raises(OperationalError):
        dbretry.retry_transient(write, attempts=100, budget=4.0)
    assert clock.now < 4.0 + 1.0
    assert 2 <= len(tries) < 100


def test_other_errors_are_not_retried(clock: Clock) -> None:
    tries: list[int] = []

    def write() -> None:
        tries.append(1)
        raise OperationalError("no such table: runs_nothing")

    with pytest.raises(OperationalError, match="no such table"):
        dbretry.retry_transient(write)
    assert len(tries) == 1 and clock.sleeps == []


def test_inside_a_transaction_the_outer_one_is_retried_not_the_inner(clock: Clock) -> None:
    tries: list[int] = []

    def write() -> None:
        tries.append(1)
        raise OperationalError("database is locked")

    with pytest.raises(OperationalError), transaction.atomic():
        dbretry.retry_transient(write)
    assert len(tries) == 1


@pytest.mark.skipif(
    "connection.vendor != 'sqlite'", reason="SQLite's write lock, held by another connection"
)
def test_a_real_sqlite_write_lock_is_waited_out(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    # Each try waits 50 ms for the lock, then SQLite says "database is locked".
    monkeypatch.setattr(dbretry, "busy_wait_seconds", lambda: 0.05)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 50")
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("PRAGMA busy_timeout = 0")
                cursor.execute("BEGIN IMMEDIATE")
                holding.set()
                release.wait(10)
                cursor.execute("ROLLBACK")
        finally:
            other.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert holding.wait(10)
    threading.Timer(0.4, release.set).start()
    try:
        cancelled = cancel_run(Run.objects.get(pk=run.pk), by="test")
    finally:
        release.set()
        holder.join(10)
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 20000")
    assert cancelled.status == RunStatus.CANCELLED
    assert Event.objects.filter(run=run, type="run.cancelled").count() == 1


# --- the run controls ----------------------------------------------------------------------------


def test_a_control_on_a_busy_database_is_retried_whole(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, clock: Clock
) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    with locked_runs_table(times=2) as failed:
        cancelled = cancel_run(Run.objects.get(pk=run.pk), by="test")
    assert len(failed) == 2 and len(clock.sleeps) == 2
    assert cancelled.status == RunStatus.CANCELLED
    # The failed tries rolled back whole: one cancel, one event, counters released once.
    assert Event.objects.filter(run=run, type="run.cancelled").count() == 1
    tenant.refresh_from_db()
    assert (tenant.queued_count, tenant.running_count) == (0, 0)


def test_pause_and_resume_are_retried_too(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, clock: Clock
) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    with locked_runs_table(times=1):
        assert pause_run(Run.objects.get(pk=run.pk), by="test").status == RunStatus.PAUSED
    with locked_runs_table(times=1):
        assert resume_run(Run.objects.get(pk=run.pk), by="test").status == RunStatus.QUEUED
    assert len(clock.sleeps) == 2
    assert "succeeded" in queue.drain()
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_a_control_past_the_bound_fails_with_nothing_written(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, clock: Clock
) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    with locked_runs_table(times=None) as failed, pytest.raises(OperationalError):
        cancel_run(Run.objects.get(pk=run.pk), by="test")
    assert len(failed) == 8  # retry_transient's default bound
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert not Event.objects.filter(run=run, type="run.cancelled").exists()
