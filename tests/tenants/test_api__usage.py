"""GET /usage: today and this month against the tenant's budgets, per model, with limits."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from tenants import limits
from tenants.models import Role, Tenant
from tests.runs.test_api__helpers import anonymous, error_of, key_client, session_client

pytestmark = pytest.mark.django_db


def test_usage_today_and_this_month_with_budgets_and_models(tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(
        daily_token_budget=1000,
        monthly_cost_budget_usd=Decimal("5"),
        running_count=2,
        queued_count=3,
    )
    today = timezone.now().date()
    gpt = {"gpt-4o": {"calls": 2, "tokens_in": 100, "tokens_out": 50, "cost_usd": 0.25}}
    limits.record_usage(
        tenant.pk, runs=1, steps=4, tokens_in=100, tokens_out=50, cost_usd=0.25, by_model=gpt
    )
    earlier = today.replace(day=1) if today.day > 1 else None
    if earlier is not None:
        mini = {"mini": {"calls": 1, "tokens_in": 10, "tokens_out": 5, "cost_usd": 0.01}}
        limits.record_usage(
            tenant.pk, runs=2, tokens_in=10, tokens_out=5, cost_usd=0.01, by_model=mini, day=earlier
        )
    # Last month's usage counts for neither period.
    limits.record_usage(tenant.pk, runs=9, day=today.replace(day=1) - dt.timedelta(days=1))

    response = key_client(tenant, Role.VIEWER).get("/usage")
    assert response.status_code == 200
    body = response.json()
    assert body["tenant"] == {"id": str(tenant.public_id), "slug": "alice-co", "name": "Alice-Co"}
    day = body["day"]
    assert day["start"] == today.isoformat()
    assert (day["runs"], day["steps"], day["tokens"]) == (1, 4, 150)
    assert day["cost_usd"] == pytest.approx(0.25)
    assert day["token_budget"] == 1000 and day["cost_budget_usd"] is None
    assert day["models"] == [
        {"model": "gpt-4o", "calls": 2, "tokens_in": 100, "tokens_out": 50, "cost_usd": 0.25}
    ]
    assert day["resets_at"].startswith((today + dt.timedelta(days=1)).isoformat())

    month = body["month"]
    assert month["start"] == today.replace(day=1).isoformat()
    assert month["cost_budget_usd"] == 5.0 and month["token_budget"] is None
    if earlier is not None:
        assert month["runs"] == 3 and month["tokens"] == 165
        assert [m["model"] for m in month["models"]] == ["gpt-4o", "mini"]
    assert body["current"] == {"running": 2, "queued": 3}
    assert body["limits"]["max_concurrent_runs"] == 10
    assert body["limits"]["daily_token_budget"] == 1000
    assert body["limits"]["monthly_cost_budget_usd"] == 5.0


def test_usage_of_a_new_tenant_is_zero(other_tenant: Tenant) -> None:
    body = key_client(other_tenant).get("/usage").json()
    assert body["day"]["runs"] == 0 and body["day"]["models"] == []
    assert body["month"]["cost_usd"] == 0.0


def test_usage_is_per_tenant(tenant: Tenant, other_tenant: Tenant) -> None:
    limits.record_usage(tenant.pk, runs=5, tokens_in=10)
    assert key_client(other_tenant, Role.OWNER).get("/usage").json()["day"]["runs"] == 0
    assert key_client(tenant).get("/usage").json()["day"]["runs"] == 5


def test_usage_through_the_dashboard_session(member: Any) -> None:
    response = session_client(member, csrf=False).get("/usage")
    assert response.status_code == 200
    assert response.json()["tenant"]["slug"] == "alice-co"


def test_usage_needs_credentials(tenant: Tenant) -> None:
    response = anonymous().get("/usage")
    assert response.status_code == 401
    assert error_of(response)["code"] == "missing_credentials"
