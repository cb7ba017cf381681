"""Runs on a billed provider pay the operator's price, so cost limits and budgets trip."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from config.settings import env_json_or_file
from runs.apps import configure_llm_prices
from runs.engine import pricing
from runs.engine.pricing import DEFAULT_PRICES, cost_usd
from runs.models import Graph, Run
from runs.services import create_run
from runs.status import RunStatus
from tenants import limits
from tenants.limits import LimitExceeded
from tenants.models import Tenant
from tests.runs.engine.helpers import LocalServer
from tests.runs.engine.test_nodes__llm_openai import streaming

pytestmark = pytest.mark.django_db(transaction=True)

USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
PER_CALL = cost_usd(DEFAULT_PRICES["openai"]["gpt-4o-mini"], 1000, 500)  # 0.00045


@pytest.fixture
def openai(settings: Any) -> Iterator[LocalServer]:
    """A fake OpenAI-compatible server on 127.0.0.1 that the operator's settings point at."""
    server = LocalServer()
    server.route("/v1/chat/completions", streaming(["fine"], USAGE))
    settings.RUNYARD = {**settings.RUNYARD, "OPENAI_BASE_URL": server.url + "/v1"}
    yield server
    server.close()


def ask_chain(n: int, **extra: Any) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        f"ask{i}": {
            "kind": "llm",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "prompt": "say it",
            "output": f"a{i}",
            **extra,
        }
        for i in range(n)
    }
    nodes["done"] = {"kind": "end"}
    order = [*(f"ask{i}" for i in range(n)), "done"]
    return {
        "name": "paid",
        "start": "ask0",
        "nodes": nodes,
        "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
    }


def store_unchecked(tenant: Tenant, spec: dict[str, Any]) -> Graph:
    """A version stored before prices were the operator's: no validation on the way in."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return Graph.objects.create(
        tenant=tenant,
        name=spec["name"],
        version=1,
        spec=spec,
        hash=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def finished(run: Run, queue: Any) -> Run:
    queue.drain()
    run.refresh_from_db()
    return run


def test_openai_run_pays_the_table_price_and_trips_max_cost(
    tenant, make_graph, queue, openai
) -> None:
    make_graph(tenant, ask_chain(4))
    tenant.max_cost_usd = Decimal("0.0006")  # crossed by the 2nd call
    tenant.save()
    run = finished(create_run(tenant, graph="paid"), queue)
    assert run.status == RunStatus.FAILED
    assert run.error["code"] == "limit_exceeded.max_cost_usd"
    assert run.steps == 2 and len(openai.requests) == 2
    assert float(run.cost_usd) == pytest.approx(2 * PER_CALL)


def test_openai_spend_uses_up_the_daily_cost_budget(tenant, make_graph, queue, openai) -> None:
    make_graph(tenant, ask_chain(4))
    tenant.daily_cost_budget_usd = Decimal("0.0010")  # reached by the 3rd call
    tenant.save()
    run = finished(create_run(tenant, graph="paid"), queue)
    assert run.error["code"] == "limit_exceeded.daily_cost_budget_usd"
    assert len(openai.requests) == 3
    with pytest.raises(LimitExceeded) as refused:
        create_run(tenant, graph="paid")
    assert refused.value.limit == "daily_cost_budget_usd"


def test_a_stored_zero_price_on_openai_is_ignored(tenant, queue, openai) -> None:
    store_unchecked(tenant, ask_chain(4, price={"input": 0, "output": 0}))
    tenant.max_cost_usd = Decimal("0.0006")
    tenant.save()
    run = finished(create_run(tenant, graph="paid"), queue)
    assert run.error["code"] == "limit_exceeded.max_cost_usd"
    assert float(run.cost_usd) == pytest.approx(2 * PER_CALL)


def test_a_stored_unpriced_model_fails_the_run_before_any_request(tenant, queue, openai) -> None:
    store_unchecked(tenant, ask_chain(2, model="gpt-9-ultra"))
    run = finished(create_run(tenant, graph="paid"), queue)
    assert run.status == RunStatus.FAILED
    assert run.error["code"] == "node_failed" and run.error["fatal"] is True
    assert run.error["cause"]["code"] == "model_not_priced"
    assert "gpt-9-ultra" in run.error["message"]
    assert openai.requests == [] and run.cost_usd == 0


def test_the_operator_table_from_settings_prices_runs(
    tenant, make_graph, queue, openai, settings
) -> None:
    settings.RUNYARD = {
        **settings.RUNYARD,
        "LLM_PRICES": {"openai": {"house-model": {"input": 100, "output": 200}}},
    }
    make_graph(tenant, ask_chain(1, model="house-model"))
    run = finished(create_run(tenant, graph="paid"), queue)
    assert run.status == RunStatus.SUCCEEDED
    assert float(run.cost_usd) == pytest.approx(cost_usd((100.0, 200.0), 1000, 500))
    today = timezone.now().date()
    [row] = limits.usage_by_model(tenant.pk, today, today)
    assert row["model"] == "house-model" and row["calls"] == 1


def test_removing_a_model_from_the_table_stops_its_stored_graphs(
    tenant, make_graph, queue, openai, settings
) -> None:
    make_graph(tenant, ask_chain(1))
    settings.RUNYARD = {**settings.RUNYARD, "LLM_PRICES": {"openai": {"gpt-4o-mini": None}}}
    run = finished(create_run(tenant, graph="paid"), queue)
    assert run.error["cause"]["code"] == "model_not_priced" and openai.requests == []


def test_a_malformed_table_is_an_improper_configuration(monkeypatch, settings) -> None:
    from django.conf import settings as live

    bad = {**settings.RUNYARD, "LLM_PRICES": {"openai": {"m": {"input": -1, "output": 0}}}}
    monkeypatch.setattr(pricing, "_table", pricing.price_table())
    monkeypatch.setattr(live, "RUNYARD", bad)
    with pytest.raises(ImproperlyConfigured, match="LLM_PRICES.openai.m"):
        configure_llm_prices()


def test_the_env_table_is_json_inline_or_a_file(monkeypatch, tmp_path) -> None:
    table = {"openai": {"m": {"input": 1, "output": 2}}}
    monkeypatch.setenv("RUNYARD_LLM_PRICES", json.dumps(table))
    assert env_json_or_file("RUNYARD_LLM_PRICES") == table
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv("RUNYARD_LLM_PRICES", str(path))
    assert env_json_or_file("RUNYARD_LLM_PRICES") == table
    monkeypatch.setenv("RUNYARD_LLM_PRICES", "")
    assert env_json_or_file("RUNYARD_LLM_PRICES") is None
    for broken in ("{not json", str(tmp_path / "missing.json")):
        monkeypatch.setenv("RUNYARD_LLM_PRICES", broken)
        with pytest.raises(ImproperlyConfigured, match="RUNYARD_LLM_PRICES"):
            env_json_or_file("RUNYARD_LLM_PRICES")
