"""Retry of a failed run at its failed node, resume of an interrupted run, and forks of any
step that ask for no input again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runs.models import Checkpoint, Event, Run, Step
from runs.services import (
    Conflict,
    NotFound,
    create_run,
    create_thread,
    fork_run,
    mark_interrupted,
    resume_run,
    retry_run,
)
from runs.status import RunStatus
from tenants.limits import LimitExceeded
from tenants.models import Tenant
from tests.e2e.control_functions import gated_spec
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec

pytestmark = pytest.mark.django_db(transaction=True)


def _types(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    path = tmp_path / "gate"
    path.write_text("closed")
    return path


def _failed(tenant: Tenant, make_graph: Any, queue: InlineQueue, gate: Path, **kw: Any) -> Run:
    make_graph(tenant, gated_spec(str(gate)))
    run = create_run(tenant, graph="gated", input={"ticket": "T-1"}, **kw)
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED, run.error
    return run


def test_retry_runs_the_failed_node_again_with_the_state_from_before_it(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, gate: Path
) -> None:
    run = _failed(tenant, make_graph, queue, gate)
    assert run.state["log"] == ["before"]
    failed_steps = list(
        Step.objects.filter(run=run).order_by("index").values_list("node", "status")
    )
    assert failed_steps == [("before", "completed"), ("gated", "failed")]
    gate.unlink()

    retried = retry_run(run, by="alice")
    assert retried.status == RunStatus.QUEUED and retried.error is None
    assert retried.finished_at is None
    stored = Event.objects.filter(run=run).order_by("-seq").first()
    assert stored is not None and stored.type == "run.resurrected"
    assert stored.data["reason"] == "retried" and stored.data["by"] == "alice"
    assert stored.data["was"] == "failed" and stored.data["at"] == "gated"
    assert stored.data["error"]["code"]
    tenant.refresh_from_db()
    assert tenant.queued_count == 1

    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    # The failed node ran again on the state from before it: "before" is not repeated.
    assert run.state["log"] == ["before", "gated"]
    steps = list(
        Step.objects.filter(run=run).order_by("index").values_list("index", "node", "status")
    )
    assert steps == [
        (1, "before", "completed"),
        (2, "gated", "failed"),
        (3, "gated", "completed"),
        (4, "done", "completed"),
    ]
    tenant.refresh_from_db()
    assert tenant.queued_count == 0 and tenant.running_count == 0


def test_retry_is_refused_for_runs_that_did_not_fail(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    queue.drain()
    with pytest.raises(Conflict) as exc:
        retry_run(run)
    assert exc.value.code == "not_retryable"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and _types(run)[-1] == "run.succeeded"


def test_retry_is_refused_where_no_node_follows(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(
        tenant,
        {
            "name": "stuck",
            "start": "a",
            "nodes": {"a": {"kind": "transform", "set": {"x": "1"}}, "done": {"kind": "end"}},
            "edges": [{"from": "a", "to": "done", "when": "state.x > 5"}],
        },
    )
    run = create_run(tenant, graph="stuck")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and (run.error or {}).get("code") == "unrouted"
    with pytest.raises(Conflict) as exc:
        retry_run(run)
    assert exc.value.code == "not_retryable" and "Fork" in exc.value.message


def test_retry_is_refused_on_a_per_run_limit_it_would_cross_again(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, gate: Path
) -> None:
    run = _failed(tenant, make_graph, queue, gate)
    Run.objects.filter(pk=run.pk).update(
        error={"code": "limit_exceeded.max_tokens", "message": "over"}
    )
    with pytest.raises(Conflict) as exc:
        retry_run(run)
    assert exc.value.code == "not_retryable"
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED


def test_retry_goes_through_the_tenant_gate(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, gate: Path
) -> None:
    run = _failed(tenant, make_graph, queue, gate)
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=0)
    run.tenant.refresh_from_db()
    with pytest.raises(LimitExceeded):
        retry_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error is not None
    assert _types(run)[-1] == "run.failed"
    tenant.refresh_from_db()
    assert tenant.queued_count == 0


def test_retry_is_refused_while_the_thread_has_another_active_run(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, gate: Path
) -> None:
    thread = create_thread(tenant)
    run = _failed(tenant, make_graph, queue, gate, thread_id=str(thread.public_id))
    make_graph(tenant, approval_spec())
    other = create_run(tenant, graph="approve", thread_id=str(thread.public_id))
    queue.drain()
    other.refresh_from_db()
    assert other.status == RunStatus.WAITING
    with pytest.raises(Conflict) as exc:
        retry_run(run)
    assert exc.value.code == "thread_busy"
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED
    tenant.refresh_from_db()
    assert tenant.queued_count == 0  # the refused retry gave its queue slot back


def test_resume_continues_an_interrupted_run_from_its_last_checkpoint(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    mark_interrupted(run, by="operator", reason="worker lost")
    run.refresh_from_db()
    assert run.status == RunStatus.INTERRUPTED

    # Without `interrupted` (the admin's resume) an interrupted run is not paused: refused.
    with pytest.raises(Conflict) as exc:
        resume_run(run, by="operator")
    assert exc.value.code == "not_paused"
    resumed = resume_run(run, by="alice", interrupted=True)
    assert resumed.status == RunStatus.QUEUED
    assert _types(run)[-1] == "run.resurrected"
    assert queue.drain() == ["waiting"]
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING and (run.waiting_for or {}).get("id") == "gate@1"
    assert run.state["log"] == ["before"]


def test_fork_from_a_middle_step_asks_for_no_input_again(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, gate: Path
) -> None:
    run = _failed(tenant, make_graph, queue, gate)
    gate.unlink()
    fork = fork_run(run, step=1, by="alice")
    assert fork.pk != run.pk and fork.graph_id == run.graph_id
    assert fork.metadata["forked_from_run"] == str(run.public_id)
    assert fork.metadata["forked_from_step"] == 1
    assert fork.input == {}
    assert queue.drain() == ["succeeded"]
    fork.refresh_from_db()
    assert fork.status == RunStatus.SUCCEEDED
    assert fork.state["log"] == ["before", "gated"] and fork.state["ticket"] == "T-1"
    assert list(Step.objects.filter(run=fork).values_list("node", flat=True)) == [
        "gated",
        "done",
    ]


def test_fork_input_given_is_still_checked(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, gate: Path
) -> None:
    run = _failed(tenant, make_graph, queue, gate)
    checkpoint = Checkpoint.objects.get(run=run, step_index=1)
    from runs.services import ValidationFailed

    with pytest.raises(ValidationFailed):
        create_run(
            tenant, graph="gated", input={"other": 1}, from_checkpoint=str(checkpoint.public_id)
        )


def test_fork_of_a_step_the_run_has_not_made_is_404(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, gate: Path
) -> None:
    run = _failed(tenant, make_graph, queue, gate)
    with pytest.raises(NotFound):
        fork_run(run, step=99)
    assert Run.objects.filter(tenant=tenant).count() == 1


def test_concurrent_retries_queue_the_run_once(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, gate: Path
) -> None:
    from tests.runs.test_concurrency import in_threads

    run = _failed(tenant, make_graph, queue, gate)
    outcomes: list[str] = []

    def retry(i: int) -> None:
        try:
            retry_run(Run.objects.get(pk=run.pk), by=f"person-{i}")
            outcomes.append("queued")
        except Conflict as exc:
            outcomes.append(exc.code)

    in_threads(4, retry)
    assert sorted(outcomes) == ["not_retryable"] * 3 + ["queued"]
    assert _types(run).count("run.resurrected") == 1
    tenant.refresh_from_db()
    assert tenant.queued_count == 1  # the refused retries took no queue slot
