"""Races that only real concurrent transactions show; CI runs these on PostgreSQL too."""

from __future__ import annotations

import contextlib
import queue as queue_mod
import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection, transaction
from django.utils import timezone

from runs import dispatch
from runs.events import append_events
from runs.models import Event, Run
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from runs.tasks import execute_run
from tenants import limits
from tests.runs.conftest import chain_spec, slow_spec

pytestmark = pytest.mark.django_db(transaction=True)


def in_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def body(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]


def test_event_seq_stays_gap_free_with_concurrent_writers(tenant, queue) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")

    def write(i: int) -> None:
        r = Run.objects.select_related("tenant").get(pk=run.pk)
        for j in range(25):
            with transaction.atomic():
                append_events(r, [("state.updated", {"writer": i, "n": j})] * 2)

    in_threads(6, write)
    seqs = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 1 + 1 + 6 * 25 * 2))  # run.queued + everything written
    assert Run.objects.get(pk=run.pk).last_seq == seqs[-1]


def test_slots_are_never_overtaken_by_racing_acquirers(tenant) -> None:
    tenant.max_concurrent_runs = 5
    tenant.save()
    won = []

    def grab(i: int) -> None:
        for _ in range(20):
            if limits.acquire_run_slot(tenant.pk):
                won.append(i)

    in_threads(8, grab)
    tenant.refresh_from_db()
    assert len(won) == 5 and tenant.running_count == 5


def test_max_concurrent_runs_holds_with_four_workers_racing(tenant, monkeypatch, settings) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": 50}
    tenant.max_concurrent_runs = 2
    tenant.runs_per_minute = None
    tenant.save()
    create_graph_version(tenant, slow_spec(latency_ms=80))
    tasks: queue_mod.Queue[int] = queue_mod.Queue()
    monkeypatch.setattr(dispatch, "enqueue_run", tasks.put)
    runs = [create_run(tenant, graph="slow") for _ in range(16)]
    observed: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            observed.append(Run.objects.filter(tenant=tenant, status=RunStatus.RUNNING).count())
            time.sleep(0.005)
        connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()

    def work(i: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (
                Run.objects.filter(pk__in=[r.pk for r in runs])
                .exclude(status=RunStatus.SUCCEEDED)
                .count()
                == 0
            ):
                return
            dispatch.dispatch_once()  # every worker also dispatches, racing the others
            with contextlib.suppress(queue_mod.Empty):
                execute_run(tasks.get(timeout=0.05))

    try:
        in_threads(4, work)
    finally:
        stop.set()
        watcher.join()
    assert Run.objects.filter(tenant=tenant, status=RunStatus.SUCCEEDED).count() == 16
    assert max(observed) <= 2, max(observed)
    assert max(observed) == 2  # and the cap was actually reached
    tenant.refresh_from_db()
    assert tenant.running_count == 0


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite serialises every writer anyway"
)
def test_concurrent_runs_of_one_tenant_do_not_wait_on_each_others_ledger_row(tenant) -> None:
    """A step's ledger UPDATE holds its row until commit: two runs in other shards go on."""
    holding, release = threading.Event(), threading.Event()

    def slow_step() -> None:
        with transaction.atomic():
            limits.record_usage(tenant.pk, steps=1, shard=limits.usage_shard(1))
            holding.set()
            release.wait(30)

    other = threading.Thread(target=lambda: (slow_step(), connection.close()))
    other.start()
    try:
        assert holding.wait(10)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            limits.record_usage(tenant.pk, steps=1, shard=limits.usage_shard(2))
            with pytest.raises(Exception, match="lock timeout"), transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '200ms'")
                limits.record_usage(tenant.pk, steps=1, shard=limits.usage_shard(1))
    finally:
        release.set()
        other.join(30)
    today = timezone.now().date()
    assert limits.usage_between(tenant.pk, today, today).steps == 2
