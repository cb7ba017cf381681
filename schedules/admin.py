"""Schedules in the operators' console: every tenant's schedules with their last and next
fires and the runs their latest fires started, fires inline, enable/disable actions (audited).
Schedules are written through the services, so the admin edits nothing but by its actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince, timeuntil

from runs.admin.detail import pretty_json
from schedules import services
from schedules.models import Cron, CronFire
from tenants.services import record_audit

LATEST_FIRES = 5


def _run_link(fire: CronFire) -> str:
    if fire.run is None:
        error = fire.error or {}
        return format_html(
            '<span title="{}: {}" style="color:#b91c1c">{} {}</span>',
            error.get("code", ""),
            error.get("message", ""),
            fire.tick.strftime("%H:%M"),
            fire.outcome,
        )
    return format_html(
        '<a href="{}" title="Tick {} UTC: {}">{} {}</a>',
        reverse("admin:runs_run_change", args=[fire.run.pk]),
        fire.tick.strftime("%Y-%m-%d %H:%M"),
        fire.run.status,
        fire.tick.strftime("%H:%M"),
        fire.run.status,
    )


class CronFireInline(admin.TabularInline):
    model = CronFire
    extra = 0
    can_delete = False
    ordering = ["-id"]
    fields = ["tick", "fired_at", "outcome", "run_link", "error_text"]
    readonly_fields = ["tick", "fired_at", "outcome", "run_link", "error_text"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="run")
    def run_link(self, fire: CronFire) -> str:
        if fire.run is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a> ({})',
            reverse("admin:runs_run_change", args=[fire.run.pk]),
            str(fire.run.public_id)[:8],
            fire.run.status,
        )

    @admin.display(description="error")
    def error_text(self, fire: CronFire) -> str:
        if not fire.error:
            return ""
        return f"{fire.error.get('code', '')}: {fire.error.get('message', '')}"


@admin.register(Cron)
class CronAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "tenant",
        "graph",
        "schedule",
        "timezone",
        "enabled",
        "last_fire",
        "next_fire",
        "latest_runs",
    ]
    list_filter = ["enabled", "tenant", "last_outcome"]
    list_select_related = ["tenant", "last_run"]
    search_fields = ["graph_name", "schedule"]
    ordering = ["-id"]
    list_per_page = 50
    inlines = [CronFireInline]
    actions = ["enable_schedules", "disable_schedules"]
    # Shown read-only (no change permission), callables included.
    fields = [
        "public_id",
        "tenant",
        "graph_name",
        "graph_version",
        "schedule",
        "timezone",
        "enabled",
        "next_run_at",
        "priority",
        "multitask_strategy",
        "thread",
        "input_pretty",
        "metadata_pretty",
        "last_fired_at",
        "last_outcome",
        "last_error",
        "last_run",
        "fire_count",
        "created_by",
        "created_at",
        "updated_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Cron]:
        latest = CronFire.objects.select_related("run").order_by("-id")[:LATEST_FIRES]
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("fires", queryset=latest, to_attr="latest_fires"))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Read-only pages; the actions below change schedules through the services.
        return False

    @admin.display(description="id", ordering="id")
    def short_id(self, cron: Cron) -> str:
        return str(cron.public_id)[:8]

    @admin.display(description="graph", ordering="graph_name")
    def graph(self, cron: Cron) -> str:
        return f"{cron.graph_name}@{cron.graph_version}" if cron.graph_version else cron.graph_name

    @admin.display(description="last fire", ordering="last_fired_at")
    def last_fire(self, cron: Cron) -> str:
        if cron.last_fired_at is None:
            return "never"
        when = f"{timesince(cron.last_fired_at)} ago"
        if cron.last_error:
            return format_html(
                '{} <span style="color:#b91c1c" title="{}">{} ({})</span>',
                when,
                cron.last_error.get("message", ""),
                cron.last_outcome,
                cron.last_error.get("code", ""),
            )
        return f"{when} ({cron.last_outcome})"

    @admin.display(description="next fire", ordering="next_run_at")
    def next_fire(self, cron: Cron) -> str:
        if cron.next_run_at is None:
            return "—"
        return format_html(
            '<span title="{} UTC">in {}</span>',
            cron.next_run_at.strftime("%Y-%m-%d %H:%M"),
            timeuntil(cron.next_run_at),
        )

    @admin.display(description="latest fires")
    def latest_runs(self, cron: Cron) -> str:
        fires = getattr(cron, "latest_fires", None)
        if fires is None:
            fires = list(cron.fires.select_related("run").order_by("-id")[:LATEST_FIRES])
        if not fires:
            return "—"
        return format_html_join(" · ", "{}", ((_run_link(f),) for f in fires))

    @admin.display(description="input")
    def input_pretty(self, cron: Cron) -> str:
        return pretty_json(cron.input)

    @admin.display(description="metadata")
    def metadata_pretty(self, cron: Cron) -> str:
        return pretty_json(cron.metadata)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Cron], enabled: bool) -> None:
        changed = 0
        for cron in queryset.select_related("tenant"):
            if cron.enabled == enabled:
                continue
            services.set_cron_enabled(cron, enabled, by=str(request.user))
            record_audit(
                "cron.enable" if enabled else "cron.disable",
                by=request.user,
                tenant=cron.tenant,
                target=cron,
                status_before="disabled" if enabled else "enabled",
                status_after="enabled" if enabled else "disabled",
            )
            changed += 1
        state = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{state} {changed} schedule(s).", messages.SUCCESS)

    @admin.action(description="Enable the selected schedules")
    def enable_schedules(self, request: HttpRequest, queryset: QuerySet[Cron]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected schedules")
    def disable_schedules(self, request: HttpRequest, queryset: QuerySet[Cron]) -> None:
        self._set_enabled(request, queryset, False)

    def delete_model(self, request: HttpRequest, obj: Cron) -> None:
        record_audit("cron.delete", by=request.user, tenant=obj.tenant, target=obj)
        services.delete_cron(obj, by=str(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Cron]) -> None:
        for cron in queryset.select_related("tenant"):
            self.delete_model(request, cron)
