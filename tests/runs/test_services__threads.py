"""Threads share state across runs; multitask strategies; forks from any checkpoint."""

from __future__ import annotations

import pytest

from runs.models import Checkpoint, Run, Thread
from runs.services import Conflict, create_run, create_thread
from runs.status import RunStatus
from tests.runs.conftest import approval_spec, chain_spec

pytestmark = pytest.mark.django_db(transaction=True)


def test_runs_on_a_thread_carry_its_state_forward(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec(n=2))
    thread = create_thread(tenant)
    create_run(tenant, graph="chain", thread_id=thread.public_id)
    queue.drain()
    assert Thread.objects.get(pk=thread.pk).state["count"] == 2
    run = create_run(tenant, graph="chain", thread_id=thread.public_id)
    queue.drain()
    assert Run.objects.get(pk=run.pk).state["count"] == 4


def test_reject_strategy_refuses_a_second_active_run(tenant, make_graph, queue) -> None:
    make_graph(tenant, approval_spec())
    thread = create_thread(tenant)
    create_run(tenant, graph="approve", thread_id=thread.public_id)
    with pytest.raises(Conflict) as exc:
        create_run(tenant, graph="approve", thread_id=thread.public_id, multitask_strategy="reject")
    assert exc.value.code == "thread_busy"


def test_enqueue_strategy_runs_one_after_another(tenant, make_graph, queue) -> None:
    make_graph(tenant, approval_spec())
    make_graph(tenant, chain_spec(n=1))
    thread = create_thread(tenant)
    first = create_run(tenant, graph="approve", thread_id=thread.public_id)
    second = create_run(
        tenant, graph="chain", thread_id=thread.public_id, multitask_strategy="enqueue"
    )
    queue.drain()
    assert Run.objects.get(pk=first.pk).status == RunStatus.WAITING
    assert Run.objects.get(pk=second.pk).status == RunStatus.QUEUED  # held behind the first
    from runs.services import decide_approval

    decide_approval(Run.objects.get(pk=first.pk), "gate@1", decision="approve")
    queue.drain()
    second.refresh_from_db()
    assert second.status == RunStatus.SUCCEEDED
    assert second.state["log"] == ["before", "after"]  # it started from the first's state


def test_interrupt_strategy_cancels_the_active_run_keeping_state(tenant, make_graph, queue) -> None:
    make_graph(tenant, approval_spec())
    thread = create_thread(tenant)
    first = create_run(tenant, graph="approve", thread_id=thread.public_id)
    queue.drain()
    second = create_run(
        tenant, graph="approve", thread_id=thread.public_id, multitask_strategy="interrupt"
    )
    first.refresh_from_db()
    assert first.status == RunStatus.CANCELLED and first.cancel_action == "interrupt"
    assert Thread.objects.get(pk=thread.pk).state["log"] == ["before"]
    queue.drain()
    second.refresh_from_db()
    assert second.status == RunStatus.WAITING
    assert second.state["log"] == ["before", "before"]


def test_rollback_strategy_restores_the_threads_state(tenant, make_graph, queue) -> None:
    make_graph(tenant, approval_spec())
    thread = create_thread(tenant, state={"log": ["earlier"]})
    first = create_run(tenant, graph="approve", thread_id=thread.public_id)
    queue.drain()
    assert Run.objects.get(pk=first.pk).state["log"] == ["earlier", "before"]
    second = create_run(
        tenant, graph="approve", thread_id=thread.public_id, multitask_strategy="rollback"
    )
    assert Thread.objects.get(pk=thread.pk).state == {"log": ["earlier"]}
    queue.drain()
    assert Run.objects.get(pk=second.pk).state["log"] == ["earlier", "before"]


def test_fork_from_a_checkpoint_continues_from_its_state(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec(n=3))
    run = create_run(tenant, graph="chain")
    queue.drain()
    cp = Checkpoint.objects.get(run=run, step_index=1)  # after n0: count 1, next n1
    fork = create_run(tenant, graph="chain", from_checkpoint=str(cp.public_id))
    queue.drain()
    fork.refresh_from_db()
    assert fork.status == RunStatus.SUCCEEDED
    assert fork.state["count"] == 3
    assert fork.steps == 3  # n1, n2, done


def test_fork_onto_another_graph_version_is_refused(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec(n=3))
    run = create_run(tenant, graph="chain")
    queue.drain()
    make_graph(tenant, chain_spec(n=4))
    cp = Checkpoint.objects.get(run=run, step_index=2)
    with pytest.raises(Conflict) as exc:
        create_run(tenant, graph="chain", version=2, from_checkpoint=str(cp.public_id))
    assert exc.value.code == "checkpoint_version_mismatch"
    # Without a version the fork is pinned to the checkpoint's version.
    fork = create_run(tenant, graph="chain", from_checkpoint=str(cp.public_id))
    assert fork.graph.version == 1


def test_another_tenants_checkpoint_is_not_found(tenant, other_tenant, make_graph, queue) -> None:
    from runs.services import NotFound

    make_graph(tenant, chain_spec())
    make_graph(other_tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    queue.drain()
    cp = Checkpoint.objects.get(run=run, step_index=1)
    with pytest.raises(NotFound):
        create_run(other_tenant, graph="chain", from_checkpoint=str(cp.public_id))
