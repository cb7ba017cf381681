"""Controls on a run a worker holds: cancel when that worker is dead or alive, and pause at the
next step boundary of a real segment."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from runs.engine import register_function
from runs.engine.functions import registry
from runs.models import Event, Run, Step
from runs.services import cancel_run, claim_run, create_run, pause_run, resume_run
from runs.services.controls import STALE_HEARTBEATS
from runs.services.execute import Segment
from runs.status import RunStatus
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue, chain_spec

pytestmark = pytest.mark.django_db(transaction=True)


def stale_beat() -> dt.datetime:
    seconds = STALE_HEARTBEATS * float(settings.RUNYARD["HEARTBEAT_SECONDS"]) + 1
    return timezone.now() - dt.timedelta(seconds=seconds)


def types(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))


def claimed_run(tenant: Tenant, make_graph: Any, worker: str = "dead-host:1:1") -> Run:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")  # dispatched on commit (the inline queue)
    claimed = claim_run(run.pk, worker=worker)
    assert claimed is not None and claimed.status == RunStatus.RUNNING
    return claimed


def test_cancel_of_a_running_run_whose_worker_stopped_heartbeating_ends_at_once(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    claimed = claimed_run(tenant, make_graph)
    # Its lease still runs for a while: only the heartbeat says the worker is gone.
    Run.objects.filter(pk=claimed.pk).update(heartbeat_at=stale_beat())
    run = cancel_run(Run.objects.get(pk=claimed.pk), by="test")
    assert run.status == RunStatus.CANCELLED
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.finished_at is not None
    assert run.epoch == claimed.epoch + 1  # the dead worker is fenced out
    assert run.error["code"] == "cancelled" and run.error["forced"] is False
    assert run.error["worker_lost"]["lease_owner"] == "dead-host:1:1"
    assert run.lease_owner == "" and not run.holds_slot
    tenant.refresh_from_db()
    assert tenant.running_count == 0  # its slot is free again now, not after the lease

    # The worker was only stalled: it comes back and runs its step. Nothing of it lands.
    assert Segment(claimed).execute() == "fenced"
    assert Step.objects.filter(run=run).count() == 0
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.epoch == claimed.epoch + 1
    assert types(run).count("run.cancelled") == 1
    assert "run.cancelling" not in types(run)


def test_cancel_of_a_running_run_whose_lease_expired_ends_at_once(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    claimed = claimed_run(tenant, make_graph)
    past = timezone.now() - dt.timedelta(seconds=1)
    Run.objects.filter(pk=claimed.pk).update(heartbeat_at=None, lease_expires_at=past)
    run = cancel_run(Run.objects.get(pk=claimed.pk), by="test")
    assert run.status == RunStatus.CANCELLED
    assert run.error["worker_lost"]["lease_expires_at"] == past.isoformat()


def test_cancel_of_a_run_whose_worker_beats_stays_cooperative(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    claimed = claimed_run(tenant, make_graph, worker="live-host:1:1")
    run = cancel_run(Run.objects.get(pk=claimed.pk), by="test")
    assert run.status == RunStatus.CANCELLING
    run.refresh_from_db()
    assert run.epoch == claimed.epoch  # the worker still owns it and ends it itself
    assert run.lease_owner == "live-host:1:1"
    assert Segment(claimed).execute() == "cancelled"
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and "worker_lost" not in run.error


def test_a_cancelling_run_whose_worker_then_died_ends_on_the_next_cancel(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    claimed = claimed_run(tenant, make_graph)
    assert cancel_run(Run.objects.get(pk=claimed.pk), action="rollback").status == (
        RunStatus.CANCELLING
    )
    # Still beating: asking again changes nothing.
    assert cancel_run(Run.objects.get(pk=claimed.pk)).status == RunStatus.CANCELLING
    Run.objects.filter(pk=claimed.pk).update(heartbeat_at=stale_beat())
    run = cancel_run(Run.objects.get(pk=claimed.pk))  # interrupt, but rollback was asked first
    assert run.status == RunStatus.CANCELLED
    run.refresh_from_db()
    assert run.cancel_action == "rollback" and run.epoch == claimed.epoch + 1
    assert Segment(claimed).execute() == "fenced"


# --- pause at the next step boundary -------------------------------------------------------------

ENTERED = threading.Event()
RELEASE = threading.Event()


@pytest.fixture
def blocking_node() -> Iterator[None]:
    @register_function("test_wait_for_release", replace=True)
    def wait_for_release(state: dict, ctx: object) -> dict:
        ENTERED.set()
        assert RELEASE.wait(20), "the test never released the step"
        return {"first": "done"}

    ENTERED.clear()
    RELEASE.clear()
    yield
    RELEASE.set()
    registry.unregister("test_wait_for_release")


def blocking_spec() -> dict[str, Any]:
    return {
        "name": "blocking",
        "start": "first",
        "nodes": {
            "first": {"kind": "function", "function": "test_wait_for_release"},
            "second": {"kind": "transform", "set": {"second": "'done'"}},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "first", "to": "second"}, {"from": "second", "to": "done"}],
    }


def test_pause_requested_mid_step_pauses_the_run_after_that_step(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, blocking_node: None
) -> None:
    make_graph(tenant, blocking_spec())
    run = create_run(tenant, graph="blocking")
    claimed = claim_run(run.pk)
    assert claimed is not None
    queue.pending.clear()  # this test is the worker its dispatch went to
    segment = Segment(claimed)
    outcome: list[str] = []

    def work() -> None:
        try:
            outcome.append(segment.execute())
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert ENTERED.wait(10), "the step never started"
        paused = pause_run(Run.objects.get(pk=run.pk), by="test")
        # Mid-step: the run still runs, with the request recorded for its worker.
        assert paused.status == RunStatus.RUNNING and paused.pause_requested
        deadline = time.monotonic() + 5
        while not segment.pause_requested:  # the worker's watcher saw it
            assert time.monotonic() < deadline, "the worker never saw the pause request"
            time.sleep(0.02)
        assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING
    finally:
        RELEASE.set()
        worker.join(timeout=10)
    assert outcome == ["paused"]
    run.refresh_from_db()
    assert run.status == RunStatus.PAUSED and not run.pause_requested
    assert run.state["first"] == "done" and "second" not in run.state
    assert run.position["node"] == "second"  # it continues at the next node
    assert list(Step.objects.filter(run=run).values_list("node", "status")) == [
        ("first", "completed")
    ]
    assert run.lease_owner == "" and not run.holds_slot
    kinds = types(run)
    assert kinds.index("step.completed") < kinds.index("run.paused")

    resume_run(run, by="test")
    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.state["second"] == "done"
    assert [s for s in Step.objects.filter(run=run).values_list("node", flat=True)] == [
        "first",
        "second",
        "done",
    ]
