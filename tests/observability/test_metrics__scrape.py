"""/metrics after real runs executed inline: runs by status, step and queue-wait histograms,
limits and dispatcher capacity, reconciler counters."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from runs.models import Run
from runs.reconcile import reconcile_once
from runs.services import claim_run, create_run
from runs.status import RunStatus
from tests.observability.conftest import value
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db(transaction=True)


def failing_spec() -> dict:
    return {
        "name": "broken",
        "start": "boom",
        "nodes": {
            "boom": {"kind": "transform", "set": {"x": "1 / 0"}},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "boom", "to": "done"}],
    }


def test_runs_executed_inline_show_up_by_status_and_in_the_step_histograms(
    tenant, make_graph, queue, scrape
) -> None:
    before = scrape()
    make_graph(tenant, chain_spec(n=3))
    make_graph(tenant, failing_spec())
    ok = [create_run(tenant, graph="chain") for _ in range(2)]
    bad = create_run(tenant, graph="broken")
    queued = create_run(tenant, graph="chain")
    queue.drain(max_tasks=3)
    for run in [*ok, bad]:
        run.refresh_from_db()
    assert [r.status for r in ok] == [RunStatus.SUCCEEDED] * 2
    assert bad.status == RunStatus.FAILED
    assert Run.objects.get(pk=queued.pk).status == RunStatus.QUEUED

    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    slug = tenant.slug
    # terminal statuses: counters of transitions; active ones: a gauge read at scrape time
    assert delta("runyard_runs_finished_total", tenant=slug, status="succeeded") == 2
    assert delta("runyard_runs_finished_total", tenant=slug, status="failed") == 1
    assert value(after, "runyard_runs", tenant=slug, status="queued") == 1
    assert value(after, "runyard_runs", tenant=slug, status="running") == 0
    # 2 runs x (3 transforms + end); the failing run: its transform step failed
    step = "runyard_step_duration_seconds"
    assert delta(f"{step}_count", tenant=slug, node_kind="transform") == 7
    assert delta(f"{step}_count", tenant=slug, node_kind="end") == 2
    assert delta(f"{step}_bucket", tenant=slug, node_kind="end", le="+Inf") == 2
    assert delta(f"{step}_sum", tenant=slug, node_kind="transform") > 0
    assert delta("runyard_queue_wait_seconds_count", tenant=slug) == 3
    # admission against limits, and the dispatcher's capacity
    assert value(after, "runyard_tenant_limit", tenant=slug, limit="concurrent_runs") == (
        tenant.max_concurrent_runs
    )
    assert value(after, "runyard_tenant_limit_used", tenant=slug, limit="queued_runs") == 1
    assert value(after, "runyard_dispatch_capacity") >= 1
    assert ("runyard_dispatch_in_flight", frozenset()) in after
    assert value(after, "runyard_metrics_database_up") == 1


def test_budgets_are_shown_against_their_limits(tenant, make_graph, queue, scrape) -> None:
    tenant.daily_token_budget = 10_000
    tenant.monthly_cost_budget_usd = 5
    tenant.save()
    spec = {
        "name": "talk",
        "start": "ask",
        "nodes": {
            "ask": {"kind": "llm", "provider": "scripted", "prompt": "hi", "output": "a",
                    "responses": ["hello there"]},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "ask", "to": "done"}],
    }  # fmt: skip
    make_graph(tenant, spec)
    run = create_run(tenant, graph="talk")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.tokens_in + run.tokens_out > 0
    samples = scrape()
    slug = tenant.slug
    assert value(samples, "runyard_tenant_limit", tenant=slug, limit="daily_tokens") == 10_000
    assert value(samples, "runyard_tenant_limit_used", tenant=slug, limit="daily_tokens") == (
        run.tokens_in + run.tokens_out
    )
    assert value(samples, "runyard_tenant_limit", tenant=slug, limit="monthly_cost_usd") == 5
    assert (
        "runyard_tenant_limit",
        frozenset({("tenant", slug), ("limit", "monthly_tokens")}),
    ) not in samples
    assert value(samples, "runyard_step_duration_seconds_count", tenant=slug, node_kind="llm") >= 1


def test_lease_expiries_and_recoveries_are_counted(tenant, make_graph, queue, scrape) -> None:
    before = scrape()
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    queue.pending.clear()
    claim_run(run.pk, worker="dead-worker")
    Run.objects.filter(pk=run.pk).update(
        lease_expires_at=timezone.now() - dt.timedelta(seconds=120)
    )
    assert [f.result for f in reconcile_once()] == ["requeued from the last checkpoint"]
    after = scrape()
    slug = tenant.slug
    assert (
        value(after, "runyard_lease_expiries_total", tenant=slug)
        - value(before, "runyard_lease_expiries_total", tenant=slug)
        == 1
    )
    assert (
        value(after, "runyard_recoveries_total", tenant=slug, outcome="resumed")
        - value(before, "runyard_recoveries_total", tenant=slug, outcome="resumed")
        == 1
    )


def test_webhook_deliveries_are_counted_by_outcome(tenant, scrape) -> None:
    from observability.metrics import observe_webhook_delivery

    before = scrape()
    observe_webhook_delivery(tenant.slug, "delivered")
    observe_webhook_delivery(tenant.slug, "failed")
    observe_webhook_delivery(tenant.slug, "delivered")
    after = scrape()
    name = "runyard_webhook_deliveries_total"
    for outcome, n in (("delivered", 2), ("failed", 1)):
        got = value(after, name, tenant=tenant.slug, outcome=outcome)
        assert got - value(before, name, tenant=tenant.slug, outcome=outcome) == n
