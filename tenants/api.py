"""The tenants router: usage today and this month against the tenant's limits."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router

from tenants import limits
from tenants.auth import TenantContext
from tenants.models import Tenant
from tenants.schemas import UsageOut, error_responses
from tenants.services import tenant_limits_dict

router = Router(tags=["usage"])


def _period(tenant: Tenant, data: dict[str, Any], first: dt.date, last: dt.date) -> dict[str, Any]:
    usage: limits.Period = data["usage"]
    cost_budget = data["cost_budget_usd"]
    return {
        "start": first,
        "resets_at": data["resets_at"],
        "runs": usage.runs,
        "steps": usage.steps,
        "tokens": usage.tokens,
        "cost_usd": float(usage.cost_usd),
        "token_budget": data["token_budget"],
        "cost_budget_usd": float(cost_budget) if cost_budget is not None else None,
        "models": [
            {**row, "cost_usd": float(row["cost_usd"])}
            for row in limits.usage_by_model(tenant.pk, first, last)
        ],
    }


@router.get(
    "/usage",
    response={200: UsageOut, **error_responses()},
    summary="Usage against limits",
    description=(
        "The tenant's usage today and this month (UTC), in total and per LLM model, next to "
        "its budgets and limits, and how many runs hold admission slots right now. "
        "Any role may read it."
    ),
)
def get_usage(request: HttpRequest) -> dict[str, Any]:
    ctx: TenantContext = request.auth  # type: ignore[attr-defined]
    tenant = Tenant.objects.get(pk=ctx.tenant.pk)  # fresh counters, not the auth-time copy
    now = timezone.now()
    today = now.date()
    budgets = limits.budget_usage(tenant, now=now)
    return {
        "tenant": {"id": tenant.public_id, "slug": tenant.slug, "name": tenant.name},
        "day": _period(tenant, budgets["day"], today, today),
        "month": _period(tenant, budgets["month"], today.replace(day=1), today),
        "current": {"running": tenant.running_count, "queued": tenant.queued_count},
        "limits": tenant_limits_dict(tenant),
    }
