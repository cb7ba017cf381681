"""Creating runs: validation before anything exists, idempotency, hooks, admission."""

from __future__ import annotations

import pytest

from runs import hooks
from runs.models import Event, Run
from runs.services import BlockedByHook, Conflict, NotFound, ValidationFailed, create_run
from tenants.limits import LimitExceeded
from tenants.models import AuditLog, Tenant, UsageDay
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db(transaction=True)


def test_input_is_checked_against_the_schema_before_the_run_exists(
    tenant, make_graph, queue
) -> None:
    make_graph(tenant, chain_spec(input_schema={"type": "object", "required": ["text"]}))
    with pytest.raises(ValidationFailed) as exc:
        create_run(tenant, graph="chain", input={})
    assert "text" in exc.value.message
    assert Run.objects.count() == 0
    tenant.refresh_from_db()
    assert tenant.queued_count == 0


def test_unknown_graph_is_not_found(tenant) -> None:
    with pytest.raises(NotFound):
        create_run(tenant, graph="nope")


def test_idempotency_key_returns_the_same_run_or_conflicts(tenant, make_graph, queue) -> None:
    make_graph(tenant, chain_spec())
    first = create_run(tenant, graph="chain", input={"count": 1}, idempotency_key="k1")
    again = create_run(tenant, graph="chain", input={"count": 1}, idempotency_key="k1")
    assert again.pk == first.pk
    with pytest.raises(Conflict) as exc:
        create_run(tenant, graph="chain", input={"count": 2}, idempotency_key="k1")
    assert exc.value.code == "idempotency_key_reused"
    assert Run.objects.count() == 1


def test_pre_run_hook_can_refuse_and_is_audited(tenant, make_graph, monkeypatch) -> None:
    make_graph(tenant, chain_spec())
    monkeypatch.setattr(hooks, "pre_run_hooks", [lambda t, req: "graph frozen for audit"])
    with pytest.raises(BlockedByHook) as exc:
        create_run(tenant, graph="chain")
    assert exc.value.message == "graph frozen for audit"
    assert AuditLog.objects.filter(action="run.blocked_by_hook", tenant=tenant).exists()
    assert Run.objects.count() == 0


def test_a_failing_hook_never_corrupts_a_run(tenant, make_graph, queue, monkeypatch) -> None:
    make_graph(tenant, chain_spec())

    def broken(*args):
        raise RuntimeError("hook bug")

    monkeypatch.setattr(hooks, "pre_run_hooks", [broken])
    monkeypatch.setattr(hooks, "post_run_hooks", [broken])
    run = create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    assert Run.objects.get(pk=run.pk).status == "succeeded"


def test_post_run_hook_sees_the_finished_run(tenant, make_graph, queue, monkeypatch) -> None:
    make_graph(tenant, chain_spec())
    seen = []
    monkeypatch.setattr(hooks, "post_run_hooks", [lambda run: seen.append(run.status)])
    create_run(tenant, graph="chain")
    queue.drain()
    assert seen == ["succeeded"]


def test_max_queued_runs_refuses_with_retry_after(tenant, make_graph, queue) -> None:
    tenant.max_queued_runs = 2
    tenant.max_concurrent_runs = 1
    tenant.save()
    make_graph(tenant, chain_spec())
    create_run(tenant, graph="chain")
    create_run(tenant, graph="chain")
    counters = Tenant.objects.values("queued_count", "running_count").get(pk=tenant.pk)
    with pytest.raises(LimitExceeded) as exc:
        create_run(tenant, graph="chain")
    assert exc.value.limit == "max_queued_runs" and exc.value.retry_after
    # The refused run's INSERT and audit row (sent with the admission on PostgreSQL, with the
    # dispatcher's reads) are rolled back whole; its usage row and event were never sent.
    assert Run.objects.filter(tenant=tenant).count() == 2
    assert Event.objects.filter(tenant=tenant).count() == 2
    assert AuditLog.objects.filter(tenant=tenant, action="run.created").count() == 2
    assert sum(UsageDay.objects.filter(tenant=tenant).values_list("runs", flat=True)) == 2
    assert Tenant.objects.values("queued_count", "running_count").get(pk=tenant.pk) == counters
    queue.drain()
    create_run(tenant, graph="chain")  # started runs no longer count as queued
