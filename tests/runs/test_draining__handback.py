"""A stopping worker (runs/draining.py) takes no new run and hands back the ones it executes:
at the next step boundary, or, for a step still in flight after the grace, by cancelling it;
requeued and dispatched again at once, never counted as a recovery."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from runs import draining
from runs.models import Event, Run, Step
from runs.services import create_run
from runs.services.claim import claim_next
from runs.status import RunStatus
from runs.tasks import execute_run
from tests.e2e.test_live__delivery import paced_spec
from tests.runs.conftest import slow_spec

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stopping() -> Iterator[None]:
    yield
    draining.stop_draining()


def shutdown_requeues(run: Run) -> list[dict]:
    return [
        e.data
        for e in Event.objects.filter(run=run, type="run.queued")
        if e.data.get("reason") == "shutdown"
    ]


def test_a_draining_worker_hands_a_delivered_run_straight_back(
    tenant, make_graph, queue, stopping
) -> None:
    make_graph(tenant, paced_spec("paced", steps=2, latency_ms=0))
    run = create_run(tenant, graph="paced")
    assert queue.pending == [run.pk]
    draining.start_draining()
    assert execute_run(queue.pending.pop()) == "handed_back"
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.claims == 0
    assert queue.pending == [run.pk]  # dispatched again at once, for a worker that is not stopping
    assert run.dispatched_at is not None and run.holds_slot
    tenant.refresh_from_db()
    assert tenant.running_count == 1  # the slot was given back, then taken again: not leaked
    assert claim_next() is None  # and this worker claims nothing itself
    draining.stop_draining()
    assert queue.drain() == ["succeeded"]


def test_a_running_run_is_handed_back_at_its_next_step_boundary(
    tenant, make_graph, queue, stopping
) -> None:
    make_graph(tenant, paced_spec("paced", steps=8, latency_ms=150))
    run = create_run(tenant, graph="paced")
    threading.Timer(0.4, draining.start_draining).start()
    assert execute_run(queue.pending.pop()) == "handed_back"
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.lease_owner == ""
    assert 1 <= run.steps < 9 and run.recoveries == 0
    assert len(shutdown_requeues(run)) == 1
    assert queue.pending == [run.pk]
    draining.stop_draining()
    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.recoveries == 0 and run.epoch == 2
    indexes = Counter(Step.objects.filter(run=run).values_list("index", flat=True))
    assert sorted(indexes) == list(range(1, 10)) and set(indexes.values()) == {1}


def test_a_step_still_in_flight_after_the_grace_is_cancelled_and_its_run_handed_back(
    tenant, make_graph, queue, stopping, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "DRAIN_GRACE_SECONDS": 0.5}
    make_graph(tenant, slow_spec(latency_ms=30000))
    run = create_run(tenant, graph="slow")
    threading.Timer(0.3, draining.start_draining).start()
    started = time.monotonic()
    assert execute_run(queue.pending.pop()) == "handed_back"
    assert time.monotonic() - started < 5  # not the step's 30 s
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.steps == 0 and run.recoveries == 0
    assert len(shutdown_requeues(run)) == 1
    assert not Event.objects.filter(run=run, type="run.cancelled").exists()


def test_a_step_that_ignores_its_cancellation_is_abandoned_with_the_process(
    tenant, make_graph, queue, stopping, monkeypatch
) -> None:
    """A blocking step cannot be interrupted: ABANDON_SECONDS past the grace the watcher hands
    its run back itself, then ends the worker process."""
    from runs.services import claim_run
    from runs.services import watcher as watcher_module
    from runs.services.execute import Segment

    make_graph(tenant, slow_spec())
    run = create_run(tenant, graph="slow")
    claimed = claim_run(queue.pending.pop(), worker="w")
    assert claimed is not None
    segment = Segment(claimed)
    exits: list[int] = []
    monkeypatch.setattr(watcher_module.os, "_exit", exits.append)
    draining.start_draining()
    watcher_module.Watcher()._drain([segment])  # within the grace: only the step is cancelled
    assert segment.token.reason is None and exits == []
    late = draining.grace_seconds() + draining.ABANDON_SECONDS + 1
    monkeypatch.setattr(draining, "draining_for", lambda: late)
    watcher_module.Watcher()._drain([segment])
    assert segment.token.reason == "shutdown" and exits == [0]
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.recoveries == 0
    assert shutdown_requeues(run) == [{"reason": "shutdown", "abandoned": True}]
    assert queue.pending == [run.pk]
