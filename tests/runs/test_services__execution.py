"""A run executes as fenced segments: one transaction per step, claims that cannot double up."""

from __future__ import annotations

import threading
import time

import pytest
from django.db.models import F

from runs.dispatch import dispatch_once
from runs.models import Checkpoint, Event, Run, Step
from runs.services import claim_run, create_run
from runs.services.execute import Segment
from runs.status import RunStatus
from runs.tasks import execute_run
from tests.runs.conftest import chain_spec, slow_spec

pytestmark = pytest.mark.django_db(transaction=True)


def test_run_executes_every_node_once_and_commits_each_step(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec(n=3))
    run = create_run(tenant, graph="chain", input={"count": 10})
    assert run.status == RunStatus.QUEUED
    assert queue.pending == [run.pk]  # dispatched on commit
    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.state["count"] == 13
    assert run.steps == 4 and run.finished_at is not None and run.error is None
    assert list(Step.objects.filter(run=run).values_list("index", "node")) == [
        (1, "n0"),
        (2, "n1"),
        (3, "n2"),
        (4, "done"),
    ]
    assert list(Checkpoint.objects.filter(run=run).values_list("step_index", flat=True)) == [
        0,
        1,
        2,
        3,
        4,
    ]
    seqs = list(Event.objects.filter(run=run).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    types = list(Event.objects.filter(run=run).values_list("type", flat=True))
    assert types[:2] == ["run.queued", "run.started"]
    assert types[-1] == "run.succeeded"
    assert types.count("step.completed") == 4
    tenant.refresh_from_db()
    assert tenant.running_count == 0 and tenant.queued_count == 0


def test_redelivered_task_for_a_claimed_or_finished_run_does_nothing(
    tenant, make_graph, queue
) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    claimed = claim_run(run.pk, worker="other-worker")
    assert claimed is not None and claimed.epoch == 1
    assert execute_run(run.pk) == "not_claimed"
    assert Step.objects.filter(run=run).count() == 0
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)  # hand it back
    assert execute_run(run.pk) == "succeeded"
    assert execute_run(run.pk) == "not_claimed"
    assert Step.objects.filter(run=run).count() == 4


def test_a_worker_whose_lease_was_taken_over_writes_nothing(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    claimed = claim_run(run.pk)
    Run.objects.filter(pk=run.pk).update(epoch=F("epoch") + 1)  # someone else took it over
    assert Segment(claimed).execute() == "fenced"
    assert Step.objects.filter(run=run).count() == 0
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING


def test_cancel_of_a_run_inside_a_30s_call_ends_cancelled_within_2s(
    tenant, make_graph, queue
) -> None:
    from runs.services import cancel_run

    make_graph(tenant, slow_spec(latency_ms=30000))
    run = create_run(tenant, graph="slow")
    worker = threading.Thread(target=queue.drain)
    worker.start()
    deadline = time.monotonic() + 10
    while Run.objects.get(pk=run.pk).status != RunStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    started = time.monotonic()
    cancel_run(Run.objects.get(pk=run.pk), action="interrupt", by="test")
    worker.join(timeout=5)
    elapsed = time.monotonic() - started
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED, run.status
    assert elapsed < 2.0
    assert run.error["code"] == "cancelled"
    assert Step.objects.filter(run=run).count() == 0


def test_dispatch_respects_max_concurrent_runs(tenant, make_graph, queue) -> None:
    tenant.max_concurrent_runs = 1
    tenant.save()
    make_graph(tenant, chain_spec())
    runs = [create_run(tenant, graph="chain") for _ in range(3)]
    assert queue.pending == [runs[0].pk]
    assert dispatch_once() == 0
    # Finishing one frees the slot; the same queue task takes on the next, one at a time.
    assert queue.drain(max_tasks=1) == ["succeeded"]
    assert queue.pending == []
    done = list(Run.objects.order_by("id"))
    assert [r.status for r in done] == [RunStatus.SUCCEEDED] * 3
    for before, after in zip(done, done[1:], strict=False):
        assert after.started_at >= before.finished_at


def test_a_worker_takes_on_queued_runs_only_while_its_time_slice_lasts(
    tenant, make_graph, queue, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "SEGMENT_SECONDS": 0, "DISPATCH_CAPACITY": 1}
    make_graph(tenant, chain_spec())
    runs = [create_run(tenant, graph="chain") for _ in range(3)]
    assert queue.pending == [runs[0].pk]
    assert queue.drain(max_tasks=1) == ["succeeded"]
    assert queue.pending == [runs[1].pk]  # handed to the broker, not run in the same task
    assert queue.drain() == ["succeeded", "succeeded"]
