"""The usage page: today and this month against the budgets, slots, limits, and per model."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from runs.services import create_graph_version, create_run
from tests.runs.conftest import slow_spec

pytestmark = pytest.mark.django_db(transaction=True)


def test_usage_shows_budgets_as_bars_and_models_as_a_table(tenant, member, queue) -> None:
    tenant.daily_token_budget = 1000
    tenant.max_concurrent_runs = 4
    tenant.save()
    create_graph_version(tenant, slow_spec(latency_ms=0))
    create_run(tenant, graph="slow")
    queue.drain()
    client = Client()
    client.force_login(member)
    html = client.get("/usage/").content.decode()

    # Today's tokens against the daily budget: a meter with its percentage.
    meters = re.findall(r'role="meter" aria-label="([^"]+)"[^>]*aria-valuenow="([0-9.]+)"', html)
    assert ("Tokens", meters[0][1]) == meters[0] and 0 < float(meters[0][1]) < 100
    assert " / 1000" in html and "no budget" in html  # monthly budgets are unset
    assert "Running runs" in html and " / 4" in html
    assert '<td class="mono">scripted</td>' in html
    assert "max_concurrent_runs" in html and "unlimited" in html


def test_usage_renders_with_no_usage_at_all(member: Any) -> None:
    client = Client()
    client.force_login(member)
    html = client.get("/usage/").content.decode()
    assert "No model calls." in html
