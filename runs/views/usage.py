"""Usage today and this month against the tenant's budgets and limits, and per model."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from runs import charts, selectors
from runs.views.common import tenant_view
from runs.views.pages import page
from tenants import limits
from tenants.auth import TenantContext
from tenants.models import Tenant
from tenants.services import tenant_limits_dict


def _meter(label: str, used: float, cap: float | None, *, money: bool = False) -> dict[str, Any]:
    pct = min(100.0, used / cap * 100) if cap else 0.0
    return {
        "label": label,
        "used": used,
        "cap": cap,
        "money": money,
        "pct": round(pct, 1),
        "level": "full" if cap and used >= cap else "warn" if cap and pct >= 80 else "",
    }


def _period(title: str, data: dict[str, Any]) -> dict[str, Any]:
    usage: limits.Period = data["usage"]
    cost_cap = data["cost_budget_usd"]
    return {
        "title": title,
        "resets_at": data["resets_at"],
        "runs": usage.runs,
        "steps": usage.steps,
        "meters": [
            _meter("Tokens", usage.tokens, data["token_budget"]),
            _meter(
                "Cost (USD)",
                float(usage.cost_usd),
                float(cost_cap) if cost_cap is not None else None,
                money=True,
            ),
        ],
    }


CHART_DAYS = 30


def _budget(value: Any, label: str) -> charts.Line | None:
    return charts.Line(float(value), label) if value else None


def usage_charts(tenant: Tenant, today: dt.date) -> dict[str, Any]:
    """Tokens and cost per UTC day over the last 30 days against the daily budgets, and this
    month's cumulative cost against the monthly budget: one aggregate query for both."""
    first = min(today - dt.timedelta(days=CHART_DAYS - 1), today.replace(day=1))
    per_day = selectors.usage_per_day(tenant, first, today)
    days = [today - dt.timedelta(days=CHART_DAYS - 1 - i) for i in range(CHART_DAYS)]
    labels = [d.strftime("%b %d") for d in days]
    zero = selectors.DayUsage(today, 0, Decimal(0))
    month_days = [today.replace(day=n) for n in range(1, today.day + 1)]
    running, cumulative = Decimal(0), []
    for d in month_days:
        running += per_day.get(d, zero).cost_usd
        cumulative.append(float(running))
    return {
        "tokens": charts.bar_chart(
            title="Tokens per day",
            labels=labels,
            values=[float(per_day.get(d, zero).tokens) for d in days],
            line=_budget(tenant.daily_token_budget, "daily budget"),
            empty="No tokens used in the last 30 days.",
            chart_id="chart-tokens",
        ),
        "cost": charts.bar_chart(
            title="Cost per day (USD)",
            labels=labels,
            values=[float(per_day.get(d, zero).cost_usd) for d in days],
            fmt=charts.fmt_usd,
            line=_budget(tenant.daily_cost_budget_usd, "daily budget"),
            color="#0f9d6b",
            empty="No cost in the last 30 days.",
            chart_id="chart-cost",
        ),
        "month": charts.bar_chart(
            title="Cost this month, cumulative (USD)",
            labels=[d.strftime("%b %d") for d in month_days],
            values=cumulative,
            fmt=charts.fmt_usd,
            line=_budget(tenant.monthly_cost_budget_usd, "monthly budget"),
            color="#2563eb",
            empty="No cost this month yet.",
            chart_id="chart-month",
        ),
    }


@require_GET
@tenant_view
def usage(request: HttpRequest) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    tenant = Tenant.objects.get(pk=ctx.tenant.pk)  # fresh counters
    now = timezone.now()
    today = now.date()
    budgets = limits.budget_usage(tenant, now=now)
    limit_values = tenant_limits_dict(tenant)
    return page(
        request,
        "runs/usage.html",
        {
            "periods": [_period("Today", budgets["day"]), _period("This month", budgets["month"])],
            "slots": [
                _meter("Running runs", tenant.running_count, tenant.max_concurrent_runs),
                _meter("Queued runs", tenant.queued_count, tenant.max_queued_runs),
            ],
            "models_today": limits.usage_by_model(tenant.pk, today, today),
            "models_month": limits.usage_by_model(tenant.pk, today.replace(day=1), today),
            "limits": [
                {"name": name, "value": value}
                for name, value in limit_values.items()
                if name not in ("http_allowed_hosts",)
            ],
            "allowed_hosts": limit_values.get("http_allowed_hosts") or [],
            "charts": usage_charts(tenant, today),
        },
        nav="usage",
    )
