"""Per-run limits stop a run at the next step boundary with limit_exceeded.<name>."""

from __future__ import annotations

import pytest
from django.utils import timezone

from runs.models import Event, Run
from runs.services import create_run
from runs.status import RunStatus
from tenants import limits
from tenants.limits import LimitExceeded
from tenants.models import UsageDay, UsageModelDay
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db(transaction=True)


def llm_chain(n: int) -> dict:
    nodes = {
        f"ask{i}": {
            "kind": "llm",
            "provider": "scripted",
            "prompt": "say it",
            "responses": ["one two three four five"],
            "output": f"a{i}",
        }
        for i in range(n)
    }
    nodes["done"] = {"kind": "end"}
    order = [f"ask{i}" for i in range(n)] + ["done"]
    return {
        "name": "talk",
        "start": "ask0",
        "nodes": nodes,
        "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
    }


def _events(run: Run, etype: str) -> list[dict]:
    return list(Event.objects.filter(run=run, type=etype).values_list("data", flat=True))


def test_max_steps_stops_the_run_with_an_event(tenant, make_graph, queue) -> None:
    tenant.max_steps = 2
    tenant.save()
    make_graph(tenant, chain_spec(n=5))
    run = create_run(tenant, graph="chain")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error["code"] == "limit_exceeded.max_steps"
    assert run.steps == 2  # the third step never ran
    assert _events(run, "limit.exceeded")[0]["limit"] == "max_steps"


def test_max_tokens_stops_the_run_and_warns_once_before(tenant, make_graph, queue) -> None:
    make_graph(tenant, llm_chain(10))
    run = create_run(tenant, graph="talk")
    queue.drain()
    run.refresh_from_db()
    per_step = run.tokens_in + run.tokens_out
    assert run.status == RunStatus.SUCCEEDED and per_step > 0
    tenant.max_tokens = int(per_step / 10 * 4.5)  # crossed during the 5th call
    tenant.save()
    run = create_run(tenant, graph="talk")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error["code"] == "limit_exceeded.max_tokens"
    assert run.steps == 5
    assert [e["limit"] for e in _events(run, "limit.warning")] == ["max_tokens"]


def test_max_cost_stops_the_run(tenant, make_graph, queue) -> None:
    make_graph(tenant, llm_chain(6))
    first = create_run(tenant, graph="talk")
    queue.drain()
    first.refresh_from_db()
    assert first.cost_usd > 0
    tenant.max_cost_usd = first.cost_usd / 3  # crossed by the 3rd call
    tenant.save()
    run = create_run(tenant, graph="talk")
    queue.drain()
    run.refresh_from_db()
    assert run.error["code"] == "limit_exceeded.max_cost_usd"
    assert run.steps == 3


def test_usage_ledger_matches_the_runs_counters(tenant, make_graph, queue) -> None:
    make_graph(tenant, llm_chain(3))
    for _ in range(3):
        create_run(tenant, graph="talk")
    queue.drain()
    today = timezone.now().date()
    day = limits.usage_between(tenant.pk, today, today)
    runs = Run.objects.filter(tenant=tenant)
    assert day.runs == 3
    assert day.steps == sum(r.steps for r in runs)
    assert day.tokens == sum(r.tokens_in + r.tokens_out for r in runs)
    assert day.cost_usd == sum(r.cost_usd for r in runs)
    models = limits.usage_by_model(tenant.pk, today, today)
    assert sum(m["calls"] for m in models) == 3 * 3  # three llm nodes a run


def test_each_run_adds_to_its_own_ledger_shard(tenant, make_graph, queue, settings) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "USAGE_SHARDS": 4}
    make_graph(tenant, llm_chain(2))
    runs = [create_run(tenant, graph="talk") for _ in range(4)]
    queue.drain()
    rows = {row.shard: row for row in UsageDay.objects.filter(tenant=tenant)}
    assert sorted(rows) == sorted({r.pk % 4 for r in runs})
    for shard, row in rows.items():
        mine = [Run.objects.get(pk=r.pk) for r in runs if r.pk % 4 == shard]
        assert row.runs == len(mine)
        assert row.steps == sum(r.steps for r in mine)
    shards = set(UsageModelDay.objects.filter(tenant=tenant).values_list("shard", flat=True))
    assert shards == set(rows)


def test_budgets_count_every_shard(tenant, make_graph, queue) -> None:
    tenant.daily_token_budget = 100
    tenant.save()
    for shard in range(4):  # 4 x 30 tokens spread over shards: over budget only together
        limits.record_usage(tenant.pk, tokens_in=30, shard=shard)
    make_graph(tenant, llm_chain(1))
    with pytest.raises(LimitExceeded) as refused:
        create_run(tenant, graph="talk")
    assert refused.value.limit == "daily_token_budget"


def test_daily_token_budget_refuses_new_runs_saying_when_it_resets(
    tenant, make_graph, queue
) -> None:
    from tenants.limits import LimitExceeded

    make_graph(tenant, llm_chain(2))
    create_run(tenant, graph="talk")
    queue.drain()
    tenant.daily_token_budget = 1
    tenant.save()
    with pytest.raises(LimitExceeded) as exc:
        create_run(tenant, graph="talk")
    assert exc.value.limit == "daily_token_budget"
    assert "resets at" in exc.value.message


def test_runs_per_minute_refuses_then_a_new_window_admits(tenant, make_graph, queue) -> None:
    import datetime as dt

    from django.utils import timezone

    from tenants.limits import LimitExceeded
    from tenants.models import Tenant

    tenant.runs_per_minute = 2
    tenant.save()
    make_graph(tenant, chain_spec())
    create_run(tenant, graph="chain")
    create_run(tenant, graph="chain")
    with pytest.raises(LimitExceeded) as exc:
        create_run(tenant, graph="chain")
    assert exc.value.limit == "runs_per_minute" and 1 <= exc.value.retry_after <= 60
    Tenant.objects.filter(pk=tenant.pk).update(
        rate_window_start=timezone.now() - dt.timedelta(seconds=61)
    )
    create_run(tenant, graph="chain")  # the window rolled over


def test_max_wall_seconds_times_out_a_run_inside_a_slow_node(tenant, make_graph, queue) -> None:
    from tests.runs.conftest import slow_spec

    tenant.max_wall_seconds = 1
    tenant.save()
    make_graph(tenant, slow_spec(latency_ms=30000))
    run = create_run(tenant, graph="slow")
    assert queue.drain() == ["timed_out"]
    run.refresh_from_db()
    assert run.status == RunStatus.TIMED_OUT
    assert run.error["code"] == "limit_exceeded.max_wall_seconds"
    assert (run.finished_at - run.started_at).total_seconds() < 3
    assert _events(run, "limit.exceeded")[0]["limit"] == "max_wall_seconds"


def test_a_used_up_budget_stops_a_running_run_at_its_next_step(tenant, make_graph, queue) -> None:
    make_graph(tenant, llm_chain(6))
    first = create_run(tenant, graph="talk")
    queue.drain()
    first.refresh_from_db()
    per_call = (first.tokens_in + first.tokens_out) / 6
    # The budget has room to start the run and is used up during it.
    tenant.daily_token_budget = int(first.tokens_in + first.tokens_out + per_call * 2.5)
    tenant.save()
    run = create_run(tenant, graph="talk")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error["code"] == "limit_exceeded.daily_token_budget"
    assert "resets at" in run.error["message"]
    # It stopped at the first boundary where the day's usage reached the budget.
    from runs.models import Step

    used = first.tokens_in + first.tokens_out
    crossed_at = None
    for step in Step.objects.filter(run=run).order_by("index"):
        used += step.usage["tokens_in"] + step.usage["tokens_out"]
        if used >= tenant.daily_token_budget:
            crossed_at = step.index
            break
    assert crossed_at is not None and run.steps == crossed_at < 6


def test_monthly_cost_budget_counts_earlier_days_of_the_month(tenant, make_graph, queue) -> None:
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    from tenants.limits import LimitExceeded

    make_graph(tenant, chain_spec())
    today = timezone.now().date()
    earlier = today.replace(day=1) if today.day > 1 else today
    UsageDay.objects.create(tenant=tenant, day=earlier, cost_usd=Decimal("4.5"))
    UsageDay.objects.create(
        tenant=tenant, day=earlier - dt.timedelta(days=1), cost_usd=Decimal("100")
    )  # last month: does not count
    tenant.monthly_cost_budget_usd = Decimal("5")
    tenant.save()
    create_run(tenant, graph="chain")
    UsageDay.objects.filter(tenant=tenant, day=earlier).update(cost_usd=Decimal("5"))
    with pytest.raises(LimitExceeded) as exc:
        create_run(tenant, graph="chain")
    assert exc.value.limit == "monthly_cost_budget_usd"
