"""prune_runs deletes in short batches, so a live run's lease renewal never waits long."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connection, models
from django.utils import timezone

from runs.models import Artifact, Checkpoint, Control, Event, Graph, Run, Step
from runs.services import prune
from runs.status import RunStatus
from tenants.models import Tenant
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db(transaction=True)
OLD = timezone.now() - dt.timedelta(days=40)


def old_runs(
    tenant: Tenant, graph: Graph, n: int, *, steps: int = 3, parent: Run | None = None
) -> list[Run]:
    """`n` runs that finished 40 days ago, each with `steps` steps and checkpoints and two
    events per step, written in bulk."""
    runs = Run.objects.bulk_create(
        Run(
            tenant=tenant,
            graph=graph,
            graph_hash="x",
            parent=parent,
            depth=0 if parent is None else parent.depth + 1,
            status=RunStatus.SUCCEEDED,
            steps=steps,
            last_seq=2 * steps,
            finished_at=OLD,
        )
        for _ in range(n)
    )
    Step.objects.bulk_create(
        Step(run=r, index=i, node="n", status="succeeded", started_at=OLD, finished_at=OLD)
        for r in runs
        for i in range(steps)
    )
    Checkpoint.objects.bulk_create(
        Checkpoint(run=r, step_index=i, state={"i": i}, position={})
        for r in runs
        for i in range(steps)
    )
    Event.objects.bulk_create(
        Event(run=r, tenant=tenant, seq=s, type="step.finished", data={"s": s})
        for r in runs
        for s in range(1, 2 * steps + 1)
    )
    return runs


@pytest.fixture
def graph(tenant: Tenant, make_graph: Any) -> Graph:
    return make_graph(tenant, chain_spec())


def owned_rows(runs: list[Run]) -> int:
    ids = [r.pk for r in runs]
    return sum(
        model.objects.filter(run_id__in=ids).count()
        for model in (Step, Checkpoint, Event, Control, Artifact)
    )


def test_prune_deletes_old_run_trees_with_all_they_own_and_keeps_the_rest(
    tenant: Tenant, graph: Graph, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path
    roots = old_runs(tenant, graph, 3)
    children = old_runs(tenant, graph, 2, parent=roots[0])
    grandchild = old_runs(tenant, graph, 1, parent=children[0])
    step = Step.objects.filter(run=grandchild[0]).first()
    artifact = Artifact(
        tenant=tenant,
        run=grandchild[0],
        step=step,
        name="a.txt",
        content_type="text/plain",
        size=2,
        sha256="x",
    )
    artifact.file.save("a.txt", ContentFile(b"hi"), save=True)
    stored = tmp_path / str(artifact.file.name)
    assert stored.exists()
    recent = old_runs(tenant, graph, 1)[0]
    Run.objects.filter(pk=recent.pk).update(finished_at=timezone.now())
    running = old_runs(tenant, graph, 1)[0]
    Run.objects.filter(pk=running.pk).update(status=RunStatus.RUNNING)

    deleted = prune.prune_runs(finished_before=timezone.now() - dt.timedelta(days=30))

    assert deleted == 3
    gone = roots + children + grandchild
    assert not Run.objects.filter(pk__in=[r.pk for r in gone]).exists()
    assert owned_rows(gone) == 0
    assert not stored.exists()
    assert set(Run.objects.values_list("pk", flat=True)) == {recent.pk, running.pk}
    assert owned_rows([recent, running]) == 2 * (3 + 3 + 6)


def test_prune_commits_one_transaction_per_batch_of_the_configured_size(
    tenant: Tenant, graph: Graph, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_runs(tenant, graph, 20)
    settings.RUNYARD = {**settings.RUNYARD, "PRUNE_BATCH_RUNS": 7}
    sizes: list[int] = []
    real = prune.delete_trees

    def counting(roots: list[int], finished_before: dt.datetime) -> int:
        sizes.append(len(roots))
        assert not connection.in_atomic_block  # each batch is its own transaction
        return real(roots, finished_before)

    monkeypatch.setattr(prune, "delete_trees", counting)
    call_command("prune_runs", "--older-than", "30", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert sizes == [7, 7, 6]
    assert not Run.objects.exists()


def test_prune_batches_are_bounded_in_rows_too(
    tenant: Tenant, graph: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_runs(tenant, graph, 4, steps=10)  # ~41 rows each
    sizes: list[int] = []
    real = prune.delete_trees

    def counting(roots: list[int], cutoff: dt.datetime) -> int:
        sizes.append(len(roots))
        return real(roots, cutoff)

    monkeypatch.setattr(prune, "delete_trees", counting)
    assert prune.prune_runs(finished_before=timezone.now(), batch_rows=100) == 4
    assert sizes == [2, 2]


def test_a_run_requeued_before_its_batch_is_kept_whole(tenant: Tenant, graph: Graph) -> None:
    run = old_runs(tenant, graph, 1)[0]
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED, finished_at=None)
    assert prune.delete_trees([run.pk], timezone.now()) == 0
    assert Run.objects.filter(pk=run.pk).exists() and owned_rows([run]) == 12


def test_dry_run_counts_and_deletes_nothing(tenant: Tenant, graph: Graph, capsys: Any) -> None:
    old_runs(tenant, graph, 3)
    call_command("prune_runs", "--older-than", "30", "--dry-run")
    assert "would delete 3 run(s)" in capsys.readouterr().out
    assert Run.objects.count() == 3


def slow_deletes(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    """A large table on a slow disk: a DELETE holds the lock in proportion to what it deletes
    (60 us a row, so this test's 36,000 rows take over two seconds in all)."""
    result = execute(sql, params, many, context)
    if sql.lstrip().upper().startswith("DELETE"):
        time.sleep(context["cursor"].rowcount * 60e-6)
    return result


def test_a_lease_renewal_during_a_large_prune_waits_a_fraction_of_a_second(
    tenant: Tenant, graph: Graph
) -> None:
    many = old_runs(tenant, graph, 3000)
    live = Run.objects.create(
        tenant=tenant, graph=graph, graph_hash="x", status=RunStatus.RUNNING, epoch=1
    )
    waits: list[float] = []
    pruning = threading.Event()
    done = threading.Event()

    def renew_leases() -> None:
        # A worker's heartbeat: a one-row guarded UPDATE in its own connection, again and again.
        try:
            pruning.wait(10)
            while not done.is_set():
                started = time.monotonic()
                renewed = Run.objects.filter(pk=live.pk, epoch=1).update(
                    heartbeat_at=timezone.now(),
                    lease_expires_at=timezone.now() + dt.timedelta(seconds=30),
                )
                waits.append(time.monotonic() - started)
                assert renewed == 1
                time.sleep(0.01)
        finally:
            connection.close()

    renewer = threading.Thread(target=renew_leases)
    renewer.start()
    try:
        pruning.set()
        started = time.monotonic()
        with connection.execute_wrapper(slow_deletes):
            deleted = prune.prune_runs(finished_before=timezone.now() - dt.timedelta(days=30))
        took = time.monotonic() - started
    finally:
        done.set()
        renewer.join(30)
    assert deleted == len(many)
    assert took > 2.0  # long enough that one transaction for all of it would show
    assert len(waits) >= 5, (took, waits)
    assert max(waits) < 1.0, f"a renewal waited {max(waits):.2f}s during a {took:.2f}s prune"


def test_prune_knows_every_table_that_points_at_a_run() -> None:
    # A new model of runs/ with a foreign key to Run must be deleted with it (prune.OWNED);
    # other apps' rows are cleared by their foreign keys' on_delete (tests/schedules/test_prune.py).
    pointing = {
        rel.related_model
        for rel in Run._meta.related_objects
        if rel.related_model is not Run
        and rel.on_delete is not models.SET_NULL
        and rel.related_model._meta.app_label == "runs"
    }
    assert pointing == set(prune.OWNED)
    assert all(m._meta.get_field("run").column == "run_id" for m in prune.OWNED)
