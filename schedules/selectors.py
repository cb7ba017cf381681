"""Read-side queries for schedules: a tenant's list (keyset-paginated, newest first) and a
schedule's latest fires."""

from __future__ import annotations

from runs.selectors import Page, key_page
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
    return key_page(qs, "pk", cursor, limit, descending=True)


def recent_fires(cron: Cron, limit: int = RECENT_FIRES) -> list[CronFire]:
    return list(CronFire.objects.filter(cron=cron).select_related("run").order_by("-id")[:limit])
