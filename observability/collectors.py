"""Metrics read from the database at scrape time: what the database knows exactly, whichever
process changed it. Cluster-wide: every web process answers the same (aggregate with max()
when scraping several).

A few small queries per scrape, each on an index or a small table: active runs by tenant and
status (the status index; terminal runs are counted by `runyard_runs_finished_total`
instead, so a scrape never counts a large history), the tenants' own admission counters and
limits, this month's usage ledger of the tenants that have budgets, the dispatch gate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from runs import dispatch
from runs.models import Run
from runs.status import ACTIVE
from tenants.models import Tenant, UsageDay

log = logging.getLogger(__name__)

ACTIVE_STATUSES = sorted(ACTIVE)
BUDGETS = {
    # limit label: (tenant field, period, usage measure)
    "daily_tokens": ("daily_token_budget", "day", "tokens"),
    "monthly_tokens": ("monthly_token_budget", "month", "tokens"),
    "daily_cost_usd": ("daily_cost_budget_usd", "day", "cost"),
    "monthly_cost_usd": ("monthly_cost_budget_usd", "month", "cost"),
}


def _num(value: Any) -> float:
    return float(value) if isinstance(value, Decimal) else float(value or 0)


class DatabaseCollector(Collector):
    """Gauges computed from the database when /metrics is scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "runyard_metrics_database_up",
            "Whether the scrape could read the database (the gauges below are absent if not).",
        )
        try:
            families = list(self._families())
        except Exception:  # noqa: BLE001 - the process metrics are still worth serving
            log.warning("metrics: database gauges failed", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[GaugeMetricFamily]:
        tenants = list(
            Tenant.objects.filter(is_active=True).values(
                "id",
                "slug",
                "running_count",
                "queued_count",
                "max_concurrent_runs",
                "max_queued_runs",
                *(field for field, _, _ in BUDGETS.values()),
            )
        )
        slugs = {t["id"]: t["slug"] for t in tenants}

        runs = GaugeMetricFamily(
            "runyard_runs",
            "Runs in each active status (queued, running, waiting, paused, cancelling), by "
            "tenant. Terminal statuses: runyard_runs_finished_total.",
            labels=["tenant", "status"],
        )
        counts = {
            (row["tenant_id"], row["status"]): row["n"]
            for row in Run.objects.filter(status__in=ACTIVE_STATUSES)
            .values("tenant_id", "status")
            .annotate(n=Count("id"))
            .order_by()
        }
        for tenant_id, slug in slugs.items():
            for status in ACTIVE_STATUSES:
                runs.add_metric([slug, status], counts.get((tenant_id, status), 0))
        yield runs

        limit = GaugeMetricFamily(
            "runyard_tenant_limit",
            "A tenant's limit: concurrent_runs, queued_runs, and the day and month token and "
            "cost budgets that are set.",
            labels=["tenant", "limit"],
        )
        used = GaugeMetricFamily(
            "runyard_tenant_limit_used",
            "How much of that limit is in use: runs holding a slot or queued, tokens or USD "
            "spent today or this month (UTC).",
            labels=["tenant", "limit"],
        )
        for t in tenants:
            limit.add_metric([t["slug"], "concurrent_runs"], t["max_concurrent_runs"])
            used.add_metric([t["slug"], "concurrent_runs"], t["running_count"])
            limit.add_metric([t["slug"], "queued_runs"], t["max_queued_runs"])
            used.add_metric([t["slug"], "queued_runs"], t["queued_count"])
        budgeted = [t for t in tenants if any(t[f] is not None for f, _, _ in BUDGETS.values())]
        usage = self._usage({t["id"] for t in budgeted})
        for t in budgeted:
            spent = usage.get(t["id"], {})
            for name, (field, period, measure) in BUDGETS.items():
                if t[field] is None:
                    continue
                limit.add_metric([t["slug"], name], _num(t[field]))
                used.add_metric([t["slug"], name], _num(spent.get(f"{period}_{measure}")))
        yield limit
        yield used

        capacity = GaugeMetricFamily(
            "runyard_dispatch_capacity",
            "Runs that may be in flight cluster-wide (RUNYARD_DISPATCH_CAPACITY, else the "
            "workers of the qclusters seen lately).",
        )
        capacity.add_metric([], dispatch.capacity())
        yield capacity
        in_flight = GaugeMetricFamily(
            "runyard_dispatch_in_flight",
            "Runs holding a dispatch slot cluster-wide (capacity in use).",
        )
        in_flight.add_metric([], dispatch.in_flight())
        yield in_flight

    @staticmethod
    def _usage(tenant_ids: set[int]) -> dict[int, dict[str, Any]]:
        """Today's and this month's tokens and cost per tenant: one query on the ledger."""
        if not tenant_ids:
            return {}
        today = timezone.now().date()
        is_today = Q(day=today)
        rows = (
            UsageDay.objects.filter(
                tenant_id__in=tenant_ids, day__gte=today.replace(day=1), day__lte=today
            )
            .values("tenant_id")
            .annotate(
                day_tin=Sum("tokens_in", filter=is_today),
                day_tout=Sum("tokens_out", filter=is_today),
                day_cost=Sum("cost_usd", filter=is_today),
                month_tin=Sum("tokens_in"),
                month_tout=Sum("tokens_out"),
                month_cost=Sum("cost_usd"),
            )
            .order_by()
        )
        out: dict[int, dict[str, Any]] = {}
        for r in rows:
            out[r["tenant_id"]] = {
                "day_tokens": (r["day_tin"] or 0) + (r["day_tout"] or 0),
                "day_cost": r["day_cost"] or 0,
                "month_tokens": (r["month_tin"] or 0) + (r["month_tout"] or 0),
                "month_cost": r["month_cost"] or 0,
            }
        return out
