"""The reconciler resumes runs whose worker died, redispatches lost tasks, ends the hopeless."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.utils import timezone

from runs.models import Run, Step
from runs.reconcile import reconcile_once
from runs.services import claim_run, create_run
from runs.status import RunStatus
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db(transaction=True)

PAST = dt.timedelta(seconds=120)


def test_expired_lease_resumes_from_the_last_checkpoint(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    queue.pending.clear()
    claim_run(run.pk, worker="dead-worker")  # the worker died right after claiming
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - PAST)
    assert [f.action for f in reconcile_once(dry_run=True)] == ["resume"]
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING  # dry run changed nothing
    findings = reconcile_once()
    assert findings[0].evidence["lease_owner"] == "dead-worker"
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.recoveries == 1
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.state["count"] == 3
    tenant.refresh_from_db()
    assert tenant.running_count == 0


def test_out_of_recoveries_the_run_is_interrupted_with_evidence(
    tenant, make_graph, queue, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_RECOVERIES": 0}
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    claim_run(run.pk, worker="dead-worker")
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - PAST)
    reconcile_once()
    run.refresh_from_db()
    assert run.status == RunStatus.INTERRUPTED
    assert run.error["code"] == "orphaned"
    assert run.error["evidence"]["lease_owner"] == "dead-worker"
    tenant.refresh_from_db()
    assert tenant.running_count == 0


def test_dispatched_but_never_claimed_is_dispatched_again(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    queue.pending.clear()  # the broker lost the task
    Run.objects.filter(pk=run.pk).update(dispatched_at=timezone.now() - PAST)
    assert [f.problem for f in reconcile_once()] == ["never_claimed"]
    assert queue.pending == [run.pk]
    queue.drain()
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    assert Step.objects.filter(run=run).count() == 4


def test_reconcile_runs_command_dry_run(tenant, make_graph, queue, capsys) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    claim_run(run.pk, worker="w")
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - PAST)
    call_command("reconcile_runs", "--dry-run")
    out = capsys.readouterr().out
    assert str(run.public_id) in out and "would resume" in out
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING


def test_prune_runs_deletes_old_finished_runs(tenant, make_graph, queue, capsys) -> None:
    make_graph(tenant, chain_spec())
    old = create_run(tenant, graph="chain")
    queue.drain()
    Run.objects.filter(pk=old.pk).update(finished_at=timezone.now() - dt.timedelta(days=40))
    create_run(tenant, graph="chain")
    call_command("prune_runs", "--older-than", "30")
    assert not Run.objects.filter(pk=old.pk).exists()
    assert Run.objects.count() == 1
