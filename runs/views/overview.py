"""The overview page: the tenant's runs by status now and over time, failures, approvals."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from runs import charts, selectors
from runs.status import RunStatus
from runs.views.common import tenant_view
from runs.views.pages import page
from tenants.auth import TenantContext

# Bottom-up order of the stacked bars: finished first, then what is still moving.
STATUS_SERIES = [
    charts.Series(RunStatus.SUCCEEDED, "succeeded", "#0f9d6b"),
    charts.Series(RunStatus.FAILED, "failed", "#d63b3b"),
    charts.Series(RunStatus.TIMED_OUT, "timed out", "#9b1c1c"),
    charts.Series(RunStatus.INTERRUPTED, "interrupted", "#f97316"),
    charts.Series(RunStatus.CANCELLED, "cancelled", "#6b7280"),
    charts.Series(RunStatus.CANCELLING, "cancelling", "#93c5fd"),
    charts.Series(RunStatus.WAITING, "waiting", "#c27a05"),
    charts.Series(RunStatus.PAUSED, "paused", "#eab308"),
    charts.Series(RunStatus.RUNNING, "running", "#2563eb"),
    charts.Series(RunStatus.QUEUED, "queued", "#9ca3af"),
]
# range name -> (bucket unit, how many buckets, label format)
RANGES = {"24h": ("hour", 24, "%H:00"), "14d": ("day", 14, "%b %d")}
LIST_SIZE = 10


def bucket_starts(now: dt.datetime, unit: str, count: int) -> list[dt.datetime]:
    """The `count` UTC hours or days ending with the one `now` is in, oldest first."""
    now = now.astimezone(dt.UTC)
    if unit == "hour":
        last = now.replace(minute=0, second=0, microsecond=0)
        step = dt.timedelta(hours=1)
    else:
        last = now.replace(hour=0, minute=0, second=0, microsecond=0)
        step = dt.timedelta(days=1)
    return [last - step * (count - 1 - i) for i in range(count)]


def runs_chart(tenant: Any, range_name: str, now: dt.datetime) -> Any:
    unit, count, label_format = RANGES[range_name]
    starts = bucket_starts(now, unit, count)
    counts = selectors.runs_by_bucket(tenant, since=starts[0], unit=unit)
    span = "the last 24 hours" if unit == "hour" else f"the last {count} days"
    return charts.stacked_bar_chart(
        title=f"Runs started per {unit} by status, {span} (UTC)",
        labels=[s.strftime(label_format) for s in starts],
        series=STATUS_SERIES,
        values=[{k: float(v) for k, v in counts.get(s, {}).items()} for s in starts],
        empty=f"No runs started in {span}.",
        chart_id="runs-chart",
        width=1100,  # a full-width panel: about 1:1 at 1280 px, so its text keeps its size
    )


@require_GET
@tenant_view
def overview(request: HttpRequest) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    range_name = request.GET.get("range", "24h")
    if range_name not in RANGES:
        range_name = "24h"
    now = timezone.now()
    counts = selectors.status_counts(ctx.tenant)
    return page(
        request,
        "runs/overview.html",
        {
            "counts": [
                {"status": s.key, "label": s.label, "n": counts.get(s.key, 0)}
                for s in reversed(STATUS_SERIES)
            ],
            "total": sum(counts.values()),
            "range": range_name,
            "ranges": list(RANGES),
            "chart": runs_chart(ctx.tenant, range_name, now),
            "failures": selectors.recent_failures(ctx.tenant, limit=LIST_SIZE),
            "approvals": selectors.waiting_approvals(ctx.tenant, limit=LIST_SIZE),
            "now": now,
        },
        nav="overview",
    )
