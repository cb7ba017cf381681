"""The usage page's charts: tokens and cost per day over 30 days against the daily budgets, and
the month's cumulative cost against the monthly budget, from the ledger's shards summed."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from tenants.models import UsageDay

pytestmark = pytest.mark.django_db


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def chart(html: str, chart_id: str) -> str:
    match = re.search(rf'<figure class="chart" id="{chart_id}">.*?</figure>', html, re.S)
    assert match, f"{chart_id} not drawn"
    return match.group(0)


def bars(svg: str) -> dict[str, float]:
    return {
        label: float(value)
        for label, value in re.findall(
            r'<rect class="chart-bar" data-label="([^"]+)" data-value="([^"]+)"', svg
        )
    }


def budget(svg: str) -> float | None:
    match = re.search(r'<g class="chart-budget" data-value="([^"]+)"', svg)
    return float(match.group(1)) if match else None


def spend(tenant: Any, day: dt.date, shard: int, tokens: int, cost: str) -> None:
    UsageDay.objects.create(
        tenant=tenant,
        day=day,
        shard=shard,
        tokens_in=tokens // 2,
        tokens_out=tokens - tokens // 2,
        cost_usd=Decimal(cost),
    )


def label(day: dt.date) -> str:
    return day.strftime("%b %d")


def test_tokens_and_cost_per_day_sum_the_shards_against_daily_budgets(tenant, member) -> None:
    tenant.daily_token_budget = 5000
    tenant.daily_cost_budget_usd = Decimal("2.50")
    tenant.save()
    today = timezone.now().date()
    spend(tenant, today, 0, 1000, "0.40")
    spend(tenant, today, 3, 500, "0.10")  # another shard of the same day
    spend(tenant, today - dt.timedelta(days=29), 1, 200, "0.02")
    spend(tenant, today - dt.timedelta(days=30), 0, 9999, "9")  # older than the window
    html = login(member).get("/usage/").content.decode()

    tokens = bars(chart(html, "chart-tokens"))
    assert len(tokens) == 30
    assert tokens[label(today)] == 1500
    assert tokens[label(today - dt.timedelta(days=29))] == 200
    assert sum(tokens.values()) == 1700
    assert budget(chart(html, "chart-tokens")) == 5000

    cost = bars(chart(html, "chart-cost"))
    assert cost[label(today)] == pytest.approx(0.5) and len(cost) == 30
    assert budget(chart(html, "chart-cost")) == 2.5
    assert "daily budget $2.50" in chart(html, "chart-cost")


def test_month_cost_is_cumulative_against_the_monthly_budget(tenant, member) -> None:
    tenant.monthly_cost_budget_usd = Decimal("100")
    tenant.save()
    today = timezone.now().date()
    first = today.replace(day=1)
    spend(tenant, first, 0, 10, "1.25")
    spend(tenant, today, 1, 10, "2.00")
    spend(tenant, first - dt.timedelta(days=1), 0, 10, "50")  # last month
    html = login(member).get("/usage/").content.decode()
    month = bars(chart(html, "chart-month"))
    assert len(month) == today.day
    assert month[label(first)] == pytest.approx(1.25 if today != first else 3.25)
    assert month[label(today)] == pytest.approx(3.25)
    assert list(month.values()) == sorted(month.values())  # it only grows
    assert budget(chart(html, "chart-month")) == 100


def test_no_budget_draws_no_line(tenant, member) -> None:
    spend(tenant, timezone.now().date(), 0, 100, "0.01")
    html = login(member).get("/usage/").content.decode()
    assert budget(chart(html, "chart-tokens")) is None
    assert budget(chart(html, "chart-month")) is None


def test_no_usage_shows_empty_states(member) -> None:
    html = login(member).get("/usage/").content.decode()
    assert "No tokens used in the last 30 days." in html
    assert "No cost in the last 30 days." in html and "No cost this month yet." in html
    assert 'class="chart-svg"' not in html


def test_another_tenants_usage_never_appears(tenant, member, other_tenant) -> None:
    today = timezone.now().date()
    spend(other_tenant, today, 0, 777_000, "77")
    spend(tenant, today, 0, 10, "0.01")
    html = login(member).get("/usage/").content.decode()
    assert bars(chart(html, "chart-tokens"))[label(today)] == 10
    assert bars(chart(html, "chart-month"))[label(today)] == pytest.approx(0.01)
    assert "777" not in html
