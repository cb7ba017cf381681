"""Consecutive pure steps (transform, end) share one transaction; every other step commits
before the next node runs, so nothing outside the process ever sees an uncommitted step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from runs.engine import NodeContext, register_function
from runs.events import Fenced
from runs.models import Checkpoint, Event, Run, Step
from runs.services import claim_run, create_run
from runs.services import execute as execute_module
from runs.services.execute import Segment
from runs.status import RunStatus
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db(transaction=True)

SEEN: list[int] = []


@pytest.fixture(autouse=True)
def probe() -> Iterator[None]:
    @register_function("test_batches_probe", replace=True)
    def count_committed(state: dict, ctx: NodeContext) -> dict:
        # Another connection sees only what was committed.
        from django.db import connections

        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute(
                    "SELECT COUNT(*) FROM runs_step WHERE run_id = %s", [ctx.metadata["pk"]]
                )
                SEEN.append(cursor.fetchone()[0])
        finally:
            other.close()
        return {}

    SEEN.clear()
    yield


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many steps each step commit wrote, whichever way (`write_steps` in a transaction,
    or `write_at_once`)."""
    sizes: list[int] = []
    real, real_at_once = execute_module.write_steps, execute_module.write_at_once

    def counting(run: Run, batch: list, **kwargs: Any) -> Any:
        written = real(run, batch, **kwargs)
        sizes.append(len(written.steps))
        return written

    def counting_at_once(run: Run, planned: Any, **kwargs: Any) -> None:
        real_at_once(run, planned, **kwargs)
        sizes.append(len(planned.written.steps))

    monkeypatch.setattr(execute_module, "write_steps", counting)
    monkeypatch.setattr(execute_module, "write_at_once", counting_at_once)
    return sizes


def test_a_chain_of_pure_steps_commits_in_one_transaction_with_every_row(
    tenant, make_graph, queue, commits
) -> None:
    make_graph(tenant, chain_spec(n=30))
    run = create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    assert commits == [31]
    run.refresh_from_db()
    assert run.state["count"] == 30 and run.steps == 31
    assert list(Step.objects.filter(run=run).values_list("index", flat=True)) == list(range(1, 32))
    assert Checkpoint.objects.filter(run=run).count() == 32  # the initial one and one per step
    types = list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))
    assert types.count("step.started") == types.count("step.completed") == 31
    seqs = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert types[-1] == "run.succeeded"


def test_batches_are_capped_by_pure_batch_steps(
    tenant, make_graph, queue, commits, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "PURE_BATCH_STEPS": 8}
    make_graph(tenant, chain_spec(n=19))
    create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    assert commits == [8, 8, 4]


def test_one_step_per_transaction_when_grouping_is_off(
    tenant, make_graph, queue, commits, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "PURE_BATCH_STEPS": 1}
    make_graph(tenant, chain_spec(n=3))
    create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    assert commits == [1, 1, 1, 1]


def test_pure_steps_are_committed_before_a_node_that_calls_out(
    tenant, make_graph, queue, commits
) -> None:
    spec = chain_spec(n=3)
    spec["nodes"]["probe"] = {"kind": "function", "function": "test_batches_probe"}
    spec["nodes"]["more"] = {"kind": "transform", "set": {"count": "state.count + 1"}}
    spec["edges"] = [
        {"from": "n0", "to": "n1"},
        {"from": "n1", "to": "n2"},
        {"from": "n2", "to": "probe"},
        {"from": "probe", "to": "more"},
        {"from": "more", "to": "done"},
    ]
    make_graph(tenant, spec)
    run = create_run(tenant, graph="chain")
    Run.objects.filter(pk=run.pk).update(metadata={"pk": run.pk})
    assert queue.drain() == ["succeeded"]
    assert SEEN == [3]  # n0..n2 were durable before the function ran
    assert commits == [3, 1, 2]
    assert Step.objects.filter(run=run).count() == 6


def test_a_limit_crossed_inside_a_stretch_stops_the_run_at_that_step(
    tenant, make_graph, queue
) -> None:
    tenant.max_steps = 5
    tenant.save()
    make_graph(tenant, chain_spec(n=20))
    run = create_run(tenant, graph="chain")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error["code"] == "limit_exceeded.max_steps"
    assert run.steps == 5 and run.state["count"] == 5
    assert Step.objects.filter(run=run).count() == 5
    assert Checkpoint.objects.filter(run=run).order_by("step_index").last().step_index == 5


def test_a_failed_stretch_writes_nothing_and_resuming_gives_the_same_run(
    tenant, make_graph, queue, monkeypatch
) -> None:
    make_graph(tenant, chain_spec(n=10))
    run = create_run(tenant, graph="chain")
    queue.pending.clear()
    claimed = claim_run(run.pk)
    real = execute_module.write_steps

    def crash(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise Fenced("the lease went to another worker mid-commit")

    monkeypatch.setattr(execute_module, "write_steps", crash)
    assert Segment(claimed).execute() == "fenced"
    assert Step.objects.filter(run=run).count() == 0  # the whole stretch rolled back
    assert Event.objects.filter(run=run, type="step.completed").count() == 0
    monkeypatch.setattr(execute_module, "write_steps", real)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)  # as the reconciler would
    assert Segment(claim_run(run.pk)).execute() == "succeeded"
    run.refresh_from_db()
    assert run.state["count"] == 10 and run.steps == 11
    assert Step.objects.filter(run=run).count() == 11
    assert connection.in_atomic_block is False


def test_a_cancel_landing_while_a_step_commits_ends_the_run_cancelled(
    tenant, make_graph, queue
) -> None:
    @register_function("test_batches_cancel_self", replace=True)
    def cancel_self(state: dict, ctx: NodeContext) -> dict:
        from runs.services import cancel_run

        cancel_run(Run.objects.get(pk=ctx.metadata["pk"]), action="interrupt", by="test")
        return {"count": 99}  # its commit meets a run that is `cancelling` now

    spec = chain_spec(n=1)
    spec["nodes"]["n0"] = {"kind": "function", "function": "test_batches_cancel_self"}
    make_graph(tenant, spec)
    run = create_run(tenant, graph="chain")
    Run.objects.filter(pk=run.pk).update(metadata={"pk": run.pk})
    assert queue.drain() == ["cancelled"]
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.error["code"] == "cancelled"
    assert Step.objects.filter(run=run).count() == 0
