"""Controls: cancel, pause/resume, approvals (before, at and past their deadline), guidance."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from runs.models import Event, Run
from runs.reconcile import reconcile_once
from runs.services import (
    Conflict,
    NotFound,
    ValidationFailed,
    add_guidance,
    cancel_run,
    create_run,
    decide_approval,
    pause_run,
    resume_run,
)
from runs.status import RunStatus
from tests.runs.conftest import approval_spec, chain_spec

pytestmark = pytest.mark.django_db(transaction=True)


def _types(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).values_list("type", flat=True))


def test_cancel_of_queued_run_is_immediate_and_idempotent(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    cancelled = cancel_run(run, by="test")
    assert cancelled.status == RunStatus.CANCELLED
    assert cancel_run(run, by="test").status == RunStatus.CANCELLED  # idempotent
    assert queue.drain() == ["not_claimed"]  # the dispatched task finds nothing to do
    assert _types(run).count("run.cancelled") == 1
    tenant.refresh_from_db()
    assert tenant.running_count == 0 and tenant.queued_count == 0


def test_cancel_of_a_finished_run_is_a_conflict(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    queue.drain()
    with pytest.raises(Conflict) as exc:
        cancel_run(Run.objects.get(pk=run.pk))
    assert exc.value.code == "run_finished"


def test_approval_waits_releases_the_worker_and_resumes_on_approve(
    tenant, make_graph, queue
) -> None:
    make_graph(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    assert queue.drain() == ["waiting"]
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    assert run.waiting_for["id"] == "gate@1" and run.wait_deadline is not None
    assert not run.holds_slot
    assert "approval.requested" in _types(run)
    decide_approval(run, "gate@1", decision="approve", by="alice")
    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.state["log"] == ["before", "after"]


def test_reject_goes_to_on_reject(tenant, make_graph, queue) -> None:
    make_graph(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    decide_approval(Run.objects.get(pk=run.pk), "gate@1", decision="reject", by="alice")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.state["log"] == ["before", "rejected"]


def test_a_decision_sent_before_the_run_reaches_the_approval_is_used(
    tenant, make_graph, queue
) -> None:
    make_graph(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    decide_approval(run, "gate@*", decision="approve", by="alice")
    assert queue.drain() == ["succeeded"]
    assert Run.objects.get(pk=run.pk).state["log"] == ["before", "after"]


def test_approval_past_its_deadline_takes_the_default(tenant, make_graph, queue) -> None:
    make_graph(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    Run.objects.filter(pk=run.pk).update(wait_deadline=timezone.now() - dt.timedelta(seconds=1))
    findings = reconcile_once()
    assert [(f.problem, f.action) for f in findings] == [("deadline_passed", "reject")]
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.state["log"] == ["before", "rejected"]


def test_bad_approval_requests_are_refused_clearly(tenant, make_graph, queue) -> None:
    make_graph(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    with pytest.raises(NotFound):
        decide_approval(run, "before@1", decision="approve")
    with pytest.raises(ValidationFailed):
        decide_approval(run, "gate@1", decision="maybe")
    decide_approval(run, "gate@1", decision="approve")
    with pytest.raises(Conflict):
        decide_approval(run, "gate@1", decision="reject")


def test_pause_and_resume_of_a_waiting_run_keeps_its_deadline(tenant, make_graph, queue) -> None:
    make_graph(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    run.refresh_from_db()
    deadline = run.wait_deadline
    assert pause_run(run).status == RunStatus.PAUSED
    resumed = resume_run(Run.objects.get(pk=run.pk))
    assert resumed.status == RunStatus.WAITING
    assert Run.objects.get(pk=run.pk).wait_deadline == deadline
    with pytest.raises(Conflict):
        resume_run(Run.objects.get(pk=run.pk))


def test_pause_of_a_queued_run_then_resume_runs_it(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    pause_run(run)
    assert queue.drain() == ["not_claimed"]
    resume_run(Run.objects.get(pk=run.pk))
    assert queue.drain() == ["succeeded"]


def test_guidance_is_appended_to_state_before_the_next_node(tenant, make_graph, queue) -> None:
    make_graph(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    add_guidance(Run.objects.get(pk=run.pk), "be brief", by="alice")
    decide_approval(Run.objects.get(pk=run.pk), "gate@1", decision="approve")
    queue.drain()
    run.refresh_from_db()
    assert run.state["guidance"] == ["be brief"]
    assert "guidance.received" in _types(run)
