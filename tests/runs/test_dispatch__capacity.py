"""The cluster-wide dispatch capacity holds under racing dispatchers, and its default is the
workers of every qcluster sharing the database."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.signals import post_spawn

from runs import dispatch, workers
from runs.models import Run
from runs.services import create_graph_version, create_run
from runs.services.execute import claim_next
from runs.services.lifecycle import release_run_slot, release_slots
from tenants import cluster
from tenants.models import GraphLimit, Tenant, WorkerCluster
from tests.factories import make_tenant
from tests.runs.conftest import chain_spec
from tests.runs.test_concurrency import in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def in_flight() -> tuple[int, int]:
    """(runs flagged holding a slot, the tenants' counters summed): both must stay in step."""
    flagged = Run.objects.filter(holds_slot=True).count()
    counted = Tenant.objects.aggregate(n=Sum("running_count"))["n"] or 0
    return flagged, counted


def queue_runs(tenants: int, runs_each: int) -> list[Tenant]:
    made = []
    for i in range(tenants):
        t = make_tenant(f"racer-{i}", max_concurrent_runs=10, runs_per_minute=None)
        create_graph_version(t, chain_spec())
        for _ in range(runs_each):
            create_run(t, graph="chain")
        made.append(t)
    return made


def test_capacity_holds_with_four_dispatchers_racing(monkeypatch, settings) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": 8}
    enqueued: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_run", enqueued.append)
    monkeypatch.setattr(dispatch, "dispatch_on_commit", lambda: None)  # the backlog waits
    monkeypatch.setattr(dispatch, "send_dispatch_in_transaction", lambda: lambda: None)
    queue_runs(tenants=12, runs_each=5)
    assert in_flight() == (0, 0)
    claimed: list[int] = []
    observed: list[tuple[int, int]] = []

    def race(i: int) -> None:
        for _ in range(6):
            if i % 2:  # a worker that has just finished a segment takes the next run itself
                run = claim_next()
                if run is not None:
                    claimed.append(run.pk)
            else:  # a scheduler or a worker's end-of-segment pass
                dispatch.dispatch_once()
            observed.append(in_flight())

    for round_ in range(4):
        in_threads(4, race)
        assert in_flight() == (8, 8), f"round {round_}"
        # Three runs end and give their slots back; the next round may fill exactly those.
        for run in Run.objects.filter(holds_slot=True).select_related("tenant")[:3]:
            release_run_slot(run)
        assert in_flight() == (5, 5)
    assert max(n for pair in observed for n in pair) <= 8, max(observed)
    assert len(enqueued) + len(claimed) == 8 + 4 * 3 - 3
    assert claimed and enqueued  # both paths raced for the slots


def test_default_capacity_is_the_workers_of_every_cluster_seen_lately(
    monkeypatch, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": None}
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "workers": 2}
    assert dispatch.capacity() == 2  # no cluster registered: this process's worker count
    now = timezone.now()
    cluster.register_workers("machine-a:runyard:101", 4, now=now)
    cluster.register_workers("machine-b:runyard:202", 6, now=now - dt.timedelta(seconds=5))
    cluster.register_workers("machine-c:runyard:303", 16, now=now - dt.timedelta(minutes=5))
    assert dispatch.capacity() == 10  # a and b; c stopped beating minutes ago
    cluster.register_workers("machine-a:runyard:101", 5)  # a heartbeat updates its row
    assert dispatch.capacity() == 11
    assert WorkerCluster.objects.count() == 3

    enqueued: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_run", enqueued.append)
    monkeypatch.setattr(dispatch, "dispatch_on_commit", lambda: None)
    monkeypatch.setattr(dispatch, "send_dispatch_in_transaction", lambda: lambda: None)
    queue_runs(tenants=3, runs_each=6)
    assert dispatch.dispatch_once() == 11
    assert in_flight() == (11, 11)

    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": 12}  # the operator's wins
    assert dispatch.capacity() == 12
    assert dispatch.dispatch_once() == 1


def test_clusters_gone_for_a_day_are_forgotten() -> None:
    now = timezone.now()
    cluster.register_workers("old:runyard:1", 4, now=now - dt.timedelta(days=2))
    cluster.register_workers("new:runyard:2", 4, now=now)
    assert cluster.forget_stopped_clusters(now=now) == 1
    assert list(WorkerCluster.objects.values_list("name", flat=True)) == ["new:runyard:2"]


def test_a_spawned_worker_registers_its_cluster_and_keeps_beating(monkeypatch, settings) -> None:
    from django_q.conf import Conf

    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": None}
    beat = workers.Heartbeat()
    monkeypatch.setattr(workers, "heartbeat", beat)
    monkeypatch.setattr(workers, "HEARTBEAT_SECONDS", 0.05)
    try:
        post_spawn.send(sender="django_q", proc_name="Process-1:1")  # what django-q2 sends
        row = WorkerCluster.objects.get()
        assert row.name == workers.cluster_name() and row.workers == Conf.WORKERS
        assert dispatch.capacity() == Conf.WORKERS
        first_seen = row.seen_at
        post_spawn.send(sender="django_q", proc_name="Process-1:2")  # a sibling: same cluster
        deadline = timezone.now() + dt.timedelta(seconds=10)
        while WorkerCluster.objects.get().seen_at == first_seen:
            assert timezone.now() < deadline, "the heartbeat thread never beat"
        assert WorkerCluster.objects.count() == 1
    finally:
        beat.stop()


@pytest.mark.skipif(
    django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="row locks: SQLite's writer lock holds the whole database",
)
def test_dispatch_after_commit_does_not_queue_behind_a_busy_gate(monkeypatch) -> None:
    """A new run is dispatched at once through a free gate; while another dispatcher holds
    the gate, `POST /runs` does not wait for it, and the next dispatch takes the run."""
    enqueued: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_run", enqueued.append)
    tenant = make_tenant("gate", max_concurrent_runs=10, runs_per_minute=None)
    create_graph_version(tenant, chain_spec())
    first = create_run(tenant, graph="chain")
    assert enqueued == [first.pk]  # the gate was free: dispatched on commit

    holding, release = threading.Event(), threading.Event()

    def hold_gate() -> None:
        with transaction.atomic():
            cluster.enter_dispatch_gate(capacity=100, fallback=100)
            holding.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_gate)
    holder.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        second = create_run(tenant, graph="chain")
        assert time.monotonic() - started < 2  # did not wait for the holder's 10 s
        assert enqueued == [first.pk]
    finally:
        release.set()
        holder.join()
    assert dispatch.dispatch_once() == 1  # the scheduler's tick, or a worker's next pass
    assert enqueued == [first.pk, second.pk]


def test_a_new_run_is_dispatched_by_the_transaction_that_creates_it(monkeypatch) -> None:
    """Creating a run on an idle system is one commit that both queues the run and hands it
    to the broker; the admission counters are one UPDATE, and the run.queued event needs no
    second UPDATE of the new run."""
    enqueued: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_run", enqueued.append)
    tenant = make_tenant("one-commit", max_concurrent_runs=10, runs_per_minute=100)
    create_graph_version(tenant, chain_spec())
    with CaptureQueriesContext(connection) as queries:
        run = create_run(tenant, graph="chain")
    statements = [q["sql"] for q in queries.captured_queries]
    assert [s for s in statements if s == "COMMIT"] == ["COMMIT"], statements
    assert enqueued == [run.pk]
    run.refresh_from_db()
    assert run.dispatched_at is not None and run.holds_slot and run.last_seq == 1
    assert list(run.events.values_list("seq", "type")) == [(1, "run.queued")]
    # Admission, then the concurrency slot (on PostgreSQL within the statement that also
    # marks the run and takes its graph's slot).
    tenant_updates = [s for s in statements if 'UPDATE "tenants_tenant"' in s]
    assert len(tenant_updates) == 2, tenant_updates
    assert not [s for s in statements if s.startswith('UPDATE "runs_run" SET "last_seq"')]
    tenant.refresh_from_db()
    assert (tenant.queued_count, tenant.running_count, tenant.rate_window_count) == (1, 1, 1)


def test_a_dispatch_pass_with_nothing_owed_writes_nothing() -> None:
    """The scheduler's tick and a worker's end of segment on an idle system: one read, no
    gate transaction (on SQLite each would be a synced commit)."""
    tenant = make_tenant("idle", max_concurrent_runs=10, runs_per_minute=None)
    create_graph_version(tenant, chain_spec())
    with CaptureQueriesContext(connection) as queries:
        assert dispatch.dispatch_once() == 0
        assert claim_next() is None
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 2 and all(s.startswith("SELECT") for s in statements), statements


def test_releasing_a_runs_slots_gives_each_back_exactly_once(monkeypatch) -> None:
    """`release_slots` (one statement on PostgreSQL): the concurrency slot (tenant and graph)
    and the queue slot go back once each, however many releasers race; a flag already clear
    gives nothing back."""
    monkeypatch.setattr(dispatch, "enqueue_run", lambda pk: None)
    tenant = make_tenant("release", max_concurrent_runs=10, runs_per_minute=None)
    create_graph_version(tenant, chain_spec("capped", limits={"max_concurrent_runs": 5}))
    runs = [create_run(tenant, graph="capped") for _ in range(3)]  # dispatched as created
    both, slot_only, _ = runs
    Run.objects.filter(pk=slot_only.pk).update(holds_queue_slot=False)
    Tenant.objects.filter(pk=tenant.pk).update(queued_count=2)  # slot_only gave its back

    def counters() -> tuple[int, int, int]:
        t = Tenant.objects.get(pk=tenant.pk)
        graph = GraphLimit.objects.get(tenant=tenant, graph_name="capped")
        return t.running_count, t.queued_count, graph.running_count

    assert counters() == (3, 2, 3)

    def release(i: int) -> None:
        with transaction.atomic():
            release_slots(Run.objects.get(pk=(both if i % 2 else slot_only).pk))

    if connection.vendor == "postgresql":
        in_threads(4, release)
    else:  # one SQLite writer at a time anyway
        for i in range(4):
            release(i)
    assert counters() == (1, 1, 1)
    assert set(
        Run.objects.filter(pk__in=[both.pk, slot_only.pk]).values_list(
            "holds_slot", "holds_queue_slot"
        )
    ) == {(False, False)}


@pytest.mark.skipif(
    django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="row locks: SQLite's writer lock holds the whole database",
)
def test_dispatchers_and_releasers_racing_on_one_tenant_do_not_deadlock(monkeypatch) -> None:
    """A dispatch takes the tenant's row, then the graph's; a run's end gives both back.
    Both lock tenant before graph (one statement each on PostgreSQL, whose CTEs run in the
    order their reads force), so racing ones wait for each other instead of deadlocking."""
    monkeypatch.setattr(dispatch, "enqueue_run", lambda pk: None)
    monkeypatch.setattr(dispatch, "send_dispatch_in_transaction", lambda: lambda: None)
    tenant = make_tenant("race-release", max_concurrent_runs=1000, runs_per_minute=None)
    create_graph_version(tenant, chain_spec("lane", limits={"max_concurrent_runs": 1000}))
    for _ in range(120):
        create_run(tenant, graph="lane")
    errors: list[BaseException] = []
    deadline = time.monotonic() + 4

    def dispatcher() -> None:
        while time.monotonic() < deadline and dispatch.dispatch_once(max_runs=1):
            pass

    def releaser() -> None:
        while time.monotonic() < deadline:
            with transaction.atomic():
                run = (
                    Run.objects.select_for_update()
                    .filter(tenant=tenant, holds_slot=True)
                    .order_by("?")
                    .first()
                )
                if run is not None:
                    release_slots(run)

    def body(i: int) -> None:
        try:
            (dispatcher if i % 2 else releaser)()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    in_threads(4, body)
    assert not errors, errors[0]
    assert in_flight()[0] == in_flight()[1]
    t = Tenant.objects.get(pk=tenant.pk)
    lane = GraphLimit.objects.get(tenant=tenant, graph_name="lane")
    assert lane.running_count == t.running_count == Run.objects.filter(holds_slot=True).count()
