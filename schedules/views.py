"""Dashboard pages for schedules: the tenant's list with last and next fires and the runs the
latest fires started, a create form, enable/disable and delete (members and up)."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from runs.services import NotFound, ServiceError, latest_versions
from runs.views.common import error_text, require_write, tenant_view
from runs.views.pages import page
from schedules import selectors, services
from schedules.forms import CronForm
from schedules.models import Cron, CronFire
from tenants.auth import TenantContext
from tenants.limits import LimitExceeded

PAGE_SIZE = 50
FIRES_SHOWN = 5


def _recent_fires(crons: list[Cron]) -> dict[int, list[CronFire]]:
    """The latest FIRES_SHOWN fires of each schedule, in one query."""
    if not crons:
        return {}
    ranked = (
        CronFire.objects.filter(cron__in=crons)
        .select_related("run")
        .annotate(rank=Window(RowNumber(), partition_by=F("cron_id"), order_by=F("id").desc()))
        .filter(rank__lte=FIRES_SHOWN)
        .order_by("cron_id", "-id")
    )
    out: dict[int, list[CronFire]] = {}
    for fire in ranked:
        out.setdefault(fire.cron_id, []).append(fire)
    return out


def _create(request: HttpRequest, ctx: TenantContext, form: CronForm) -> Cron | None:
    data = form.cleaned_data
    try:
        return services.create_cron(
            ctx.tenant,
            graph=data["graph"],
            version=data["version"],
            input=data["input"],
            schedule=data["schedule"],
            timezone=data["timezone"] or "UTC",
            enabled=data["enabled"],
            metadata=data["metadata"],
            priority=data["priority"],
            by=ctx.actor_label,
        )
    except (ServiceError, LimitExceeded) as exc:
        field = exc.details.get("field") if isinstance(exc, ServiceError) else None
        if isinstance(exc, NotFound) and "version" in exc.message.lower():
            field = "version"
        form.add_error(field if field in form.fields else None, error_text(exc))
        return None


@tenant_view
def cron_list(request: HttpRequest) -> HttpResponse:
    """GET lists the schedules; POST creates one from the form (members and up)."""
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    graphs = [g.name for g in latest_versions(ctx.tenant)]
    if request.method == "POST":
        require_write(ctx)
        form = CronForm(request.POST, graphs=graphs)
        if form.is_valid() and (cron := _create(request, ctx, form)) is not None:
            messages.success(request, f"Scheduled {cron.graph_name} at {cron.schedule}.")
            return redirect(reverse("schedules:list"))
    else:
        form = CronForm(graphs=graphs, initial={"graph": request.GET.get("graph", "")})
    result = selectors.cron_page(
        ctx.tenant, cursor=request.GET.get("cursor") or None, limit=PAGE_SIZE
    )
    fires = _recent_fires(result.items)
    rows: list[dict[str, Any]] = [
        {"cron": cron, "fires": fires.get(cron.pk, [])} for cron in result.items
    ]
    return page(
        request,
        "schedules/cron_list.html",
        {
            "rows": rows,
            "form": form,
            "has_graphs": bool(graphs),
            "show_form": request.method == "POST" or "new" in request.GET,
            "older_url": f"?cursor={result.next_cursor}" if result.next_cursor else "",
            "is_first_page": not request.GET.get("cursor"),
        },
        nav="schedules",
    )


@require_POST
@tenant_view
def cron_toggle(request: HttpRequest, cron_id: uuid.UUID) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    cron = services.get_cron(ctx.tenant, cron_id)
    require_write(ctx)
    try:
        cron = services.set_cron_enabled(cron, not cron.enabled, by=ctx.actor_label)
    except ServiceError as exc:
        messages.error(request, error_text(exc))
    else:
        state = "enabled" if cron.enabled else "disabled"
        messages.success(request, f"Schedule {str(cron.public_id)[:8]} {state}.")
    return redirect(reverse("schedules:list"))


@require_POST
@tenant_view
def cron_delete(request: HttpRequest, cron_id: uuid.UUID) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    cron = services.get_cron(ctx.tenant, cron_id)
    require_write(ctx)
    services.delete_cron(cron, by=ctx.actor_label)
    messages.success(request, f"Deleted schedule {str(cron.public_id)[:8]}.")
    return redirect(reverse("schedules:list"))
