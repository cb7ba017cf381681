"""Read-side queries for schedules: a tenant's list (keyset-paginated, newest first) and a
schedule's latest fires."""

from __future__ import annotations

from runs.selectors import Page, decode_cursor, encode_cursor
from schedules.models import Cron, CronFire
from tenants.models import Tenant

RECENT_FIRES = 10


def cron_page(
    tenant: Tenant,
    *,
    graph: str | None = None,
    enabled: bool | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Cron]:
    qs = Cron.objects.for_tenant(tenant).select_related("thread", "last_run")
    if graph:
        qs = qs.filter(graph_name=graph)
    if enabled is not None:
        qs = qs.filter(enabled=enabled)
    if cursor:
        (before,) = decode_cursor(cursor, int)
        qs = qs.filter(pk__lt=before)
    rows = list(qs.order_by("-pk")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].pk) if more and rows else None)


def recent_fires(cron: Cron, limit: int = RECENT_FIRES) -> list[CronFire]:
    return list(CronFire.objects.filter(cron=cron).select_related("run").order_by("-id")[:limit])
