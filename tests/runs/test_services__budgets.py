"""Daily and monthly budgets hold against concurrent runs, and spent usage always reaches the
ledger, even when the step that spent it is never written."""

from __future__ import annotations

import time

import pytest
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from runs import dispatch
from runs.models import Event, Run, Step
from runs.services import create_graph_version, create_run
from runs.services import execute as execute_mod
from runs.status import RunStatus
from runs.tasks import execute_run
from tenants import limits
from tests.runs.test_concurrency import in_threads
from tests.runs.test_services__limits import llm_chain

pytestmark = pytest.mark.django_db(transaction=True)


def tokens_today(tenant_id: int) -> int:
    today = timezone.now().date()
    return limits.usage_between(tenant_id, today, today).tokens


def slow_llm_chain(n: int, latency_ms: int) -> dict:
    spec = llm_chain(n)
    for name, node in spec["nodes"].items():
        if name.startswith("ask"):
            node["latency_ms"] = latency_ms
    return spec


def test_concurrent_spenders_see_each_others_usage(tenant) -> None:
    """Each thread is a run taking steps of 10 tokens: check, then the rest of the step's
    transaction (widened here), then the ledger. Counted apart, all six saw room together."""
    tenant.daily_token_budget = 100
    tenant.save()
    step, runs = 10, 6
    stopped_after: dict[int, int] = {}

    def spend(i: int) -> None:
        for n in range(1, 50):
            with transaction.atomic():
                over = limits.check_spend(tenant, tokens=step, cost_usd=0)
                time.sleep(0.02)  # events, steps, checkpoint... then the ledger, last
                limits.record_usage(tenant.pk, tokens_in=step, shard=i)
            if over is not None:
                assert over.limit == "daily_token_budget"
                stopped_after[i] = n
                return

    in_threads(runs, spend)
    assert sorted(stopped_after) == list(range(runs))  # every run stopped
    used = tokens_today(tenant.pk)
    # The step crossing the budget, and at most the one step each other run had in flight.
    assert 100 <= used <= 100 + runs * step, used


def test_concurrent_runs_overshoot_a_daily_budget_by_at_most_one_step_each(
    tenant, monkeypatch, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": 50}
    tenant.max_concurrent_runs = 10
    tenant.runs_per_minute = None
    tenant.save()
    create_graph_version(tenant, slow_llm_chain(12, latency_ms=20))
    dispatched: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_run", dispatched.append)
    probe = create_run(tenant, graph="talk")
    execute_run(dispatched.pop())
    probe.refresh_from_db()
    per_step = (probe.tokens_in + probe.tokens_out) // 12
    assert probe.status == RunStatus.SUCCEEDED and per_step > 0
    used_before = tokens_today(tenant.pk)
    budget = used_before + per_step * 20  # room for 20 of the 6 x 12 steps
    tenant.daily_token_budget = budget
    tenant.save()
    runs = [create_run(tenant, graph="talk") for _ in range(6)]
    assert sorted(dispatched) == sorted(r.pk for r in runs)

    in_threads(6, lambda i: execute_run(runs[i].pk))

    finished = list(Run.objects.filter(pk__in=[r.pk for r in runs]))
    assert {r.status for r in finished} == {RunStatus.FAILED}
    assert {r.error["code"] for r in finished} == {"limit_exceeded.daily_token_budget"}
    used = tokens_today(tenant.pk)
    assert budget <= used <= budget + len(runs) * per_step, (used - budget) / per_step
    # The ledger is exactly what the runs' steps spent.
    assert used - used_before == sum(r.tokens_in + r.tokens_out for r in finished)


def test_a_run_starting_after_the_budget_is_used_up_spends_nothing(tenant, make_graph, queue):
    make_graph(tenant, llm_chain(3))
    run = create_run(tenant, graph="talk")
    tenant.daily_token_budget = 50
    tenant.save()
    limits.record_usage(tenant.pk, tokens_in=50)  # other runs used it up meanwhile
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error["code"] == "limit_exceeded.daily_token_budget"
    assert run.steps == 0 and not Step.objects.filter(run=run).exists()
    assert tokens_today(tenant.pk) == 50
    limit_events = Event.objects.filter(run=run, type="limit.exceeded")
    assert [e.data["limit"] for e in limit_events] == ["daily_token_budget"]


def _before_commit(monkeypatch, meddle) -> None:
    """Run `meddle(run)`, committed, after a step has spent and before its commit."""
    real = execute_mod.Segment._commit_pending

    def commit_pending(self):
        if self.pending:
            meddle(self.run)
        return real(self)

    monkeypatch.setattr(execute_mod.Segment, "_commit_pending", commit_pending)


def test_usage_of_a_step_fenced_by_another_worker_is_still_recorded(
    tenant, make_graph, queue, monkeypatch
) -> None:
    make_graph(tenant, llm_chain(1))
    run = create_run(tenant, graph="talk")
    # Another worker claimed the run (its lease looked expired) while the LLM call ran.
    _before_commit(monkeypatch, lambda r: Run.objects.filter(pk=r.pk).update(epoch=F("epoch") + 1))
    assert queue.drain() == ["fenced"]
    run.refresh_from_db()
    assert run.steps == 0 and run.tokens_in == 0  # the step was never written...
    assert tokens_today(tenant.pk) > 0  # ...but what its LLM call spent is in the ledger
    models = limits.usage_by_model(tenant.pk, timezone.now().date(), timezone.now().date())
    assert [m["calls"] for m in models] == [1]


def test_usage_of_a_step_fenced_by_a_cancel_is_still_recorded(
    tenant, make_graph, queue, monkeypatch
) -> None:
    make_graph(tenant, llm_chain(2))
    run = create_run(tenant, graph="talk")
    _before_commit(
        monkeypatch,
        lambda r: Run.objects.filter(pk=r.pk).update(
            status=RunStatus.CANCELLING, cancel_action="interrupt"
        ),
    )
    assert queue.drain() == ["cancelled"]
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.steps == 0
    assert tokens_today(tenant.pk) > 0


def test_usage_of_a_step_finished_after_the_lease_was_lost_is_still_recorded(
    tenant, make_graph, queue, monkeypatch
) -> None:
    make_graph(tenant, llm_chain(1))
    run = create_run(tenant, graph="talk")
    real = execute_mod.Segment.on_step_start

    def lose_lease(self, index: int, node: str, attempt: int) -> None:
        real(self, index, node, attempt)
        self.fenced = True  # what the watcher sets when the lease renewal fails

    monkeypatch.setattr(execute_mod.Segment, "on_step_start", lose_lease)
    assert queue.drain() == ["fenced"]
    run.refresh_from_db()
    assert run.steps == 0
    assert tokens_today(tenant.pk) > 0
