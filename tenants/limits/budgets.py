"""Day and month token/cost budgets: usage against them, and the checks that refuse a run
(or stop a step) once one is used up."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from django.utils import timezone

from tenants.limits.errors import LimitExceeded
from tenants.limits.usage import day_and_month
from tenants.models import Tenant


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def budget_usage(tenant: Tenant, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Usage today and this month against the tenant's budgets, with reset times."""
    now = now or timezone.now()
    today = now.date()
    day, month = day_and_month(tenant.pk, today)
    tomorrow = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    month_reset = dt.datetime.combine(_next_month(today), dt.time(), dt.UTC)
    return {
        "day": {
            "usage": day,
            "resets_at": tomorrow,
            "token_budget": tenant.daily_token_budget,
            "cost_budget_usd": tenant.daily_cost_budget_usd,
        },
        "month": {
            "usage": month,
            "resets_at": month_reset,
            "token_budget": tenant.monthly_token_budget,
            "cost_budget_usd": tenant.monthly_cost_budget_usd,
        },
    }


def has_budgets(tenant: Tenant) -> bool:
    return any(
        [
            tenant.daily_token_budget,
            tenant.monthly_token_budget,
            tenant.daily_cost_budget_usd,
            tenant.monthly_cost_budget_usd,
        ]
    )


def check_spend(
    tenant: Tenant, *, tokens: int, cost_usd: float | Decimal, now: dt.datetime | None = None
) -> LimitExceeded | None:
    """The budget check of a step that spent `tokens` and `cost_usd`, race-free: the budget
    it crosses, or None.

    Call in the step's transaction, before its ledger increment (`record_usage`, last). The
    tenant row is locked until that transaction ends, so the spending steps of one tenant
    check one after another, each reading the ledger with every earlier one's usage in it
    (counted apart, concurrent runs each saw room and all went on). The run whose step
    crosses a budget stops there; a run whose step was in flight meanwhile stops at that
    step's commit: each overshoots by at most one step. Steps that spent nothing take no
    lock (`check_run_limits` stops them once the budget is used up).
    """
    cost = Decimal(str(cost_usd))
    if not has_budgets(tenant) or (tokens <= 0 and cost <= 0):
        return None
    # A no-op on SQLite, whose IMMEDIATE transactions already hold the database.
    list(Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk", flat=True))
    try:
        check_budgets(tenant, now=now, pending_tokens=tokens, pending_cost=cost)
    except LimitExceeded as exc:
        return exc
    return None


def check_budgets(
    tenant: Tenant,
    *,
    now: dt.datetime | None = None,
    refusing: str = "the run",
    pending_tokens: int = 0,
    pending_cost: Decimal = Decimal(0),
) -> None:
    """Raise LimitExceeded when a day or month token/cost budget is used up. Reads what is
    committed: concurrent callers may all see room (see `check_spend` for the race-free one)."""
    if not has_budgets(tenant):
        return
    now = now or timezone.now()
    usage = budget_usage(tenant, now=now)
    for period, name in (("day", "daily"), ("month", "monthly")):
        p = usage[period]
        # Usage being committed in the caller's transaction is not in the ledger yet.
        p["usage"].tokens += pending_tokens
        p["usage"].cost_usd += pending_cost
        resets = p["resets_at"]
        retry = max(1, math.ceil((resets - now).total_seconds()))
        if p["token_budget"] is not None and p["usage"].tokens >= p["token_budget"]:
            raise LimitExceeded(
                f"{name}_token_budget",
                f"The {name} token budget of {p['token_budget']} is used up "
                f"({p['usage'].tokens} used); {refusing} refused until it resets at "
                f"{resets.isoformat()}.",
                retry_after=retry,
                details={"resets_at": resets.isoformat()},
            )
        if p["cost_budget_usd"] is not None and p["usage"].cost_usd >= p["cost_budget_usd"]:
            raise LimitExceeded(
                f"{name}_cost_budget_usd",
                f"The {name} cost budget of ${p['cost_budget_usd']} is used up "
                f"(${p['usage'].cost_usd:.4f} used); {refusing} refused until it resets at "
                f"{resets.isoformat()}.",
                retry_after=retry,
                details={"resets_at": resets.isoformat()},
            )
