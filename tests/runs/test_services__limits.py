"""Per-run limits stop a run at the next step boundary with limit_exceeded.<name>."""

from __future__ import annotations

import pytest

from runs.models import Event, Run
from runs.services import create_run
from runs.status import RunStatus
from tenants.models import UsageDay
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
    day = UsageDay.objects.get(tenant=tenant)
    runs = Run.objects.filter(tenant=tenant)
    assert day.runs == 3
    assert day.steps == sum(r.steps for r in runs)
    assert day.tokens_in == sum(r.tokens_in for r in runs)
    assert day.tokens_out == sum(r.tokens_out for r in runs)


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
