"""Operators' console for tenants: limits, members, API keys, usage, and the audit log.

Writes go through tenants.services so they are validated and audited the same way as from the
command line; saves name their columns so they never overwrite counters or revocations that
happened while the form was open.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from tenants.models import ApiKey, AuditLog, Membership, Tenant, UsageDay, UsageModelDay
from tenants.services import (
    LIMIT_FIELDS,
    create_api_key,
    parse_limit,
    record_audit,
    revoke_api_key,
    set_tenant_limits,
)

COUNTER_FIELDS = (
    "running_count",
    "queued_count",
    "rate_window_start",
    "rate_window_count",
    "last_dispatched_at",
)


class ReadOnlyAdminMixin:
    """Ledgers and logs: operators look, nobody edits."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Tenants ----------------------------------------------------------------------------------


class TenantAdminForm(forms.ModelForm):
    http_allowed_hosts = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="Comma-separated host names the http node may call, e.g. "
        "api.example.com, *.example.org. Empty: none.",
    )

    class Meta:
        model = Tenant
        fields = ["slug", "name", "is_active", *LIMIT_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["http_allowed_hosts"] = ", ".join(self.instance.http_allowed_hosts or [])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # The same rules as `tenant_limits --set` (warn_ratio in (0, 1], host syntax, ...);
        # the model's own validation (digits, ranges) runs after this, in _post_clean.
        for name in LIMIT_FIELDS:
            if name in cleaned and name not in self.errors:
                try:
                    cleaned[name] = parse_limit(name, cleaned[name])
                except ValueError as exc:
                    self.add_error(name, str(exc))
        return cleaned


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["created_at"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantAdminForm
    list_display = [
        "slug",
        "name",
        "is_active",
        "max_concurrent_runs",
        "running_count",
        "queued_count",
        "created_at",
    ]
    list_filter = ["is_active"]
    search_fields = ["slug", "name"]
    readonly_fields = ["public_id", "created_at", *COUNTER_FIELDS, "usage"]
    inlines = [MembershipInline]
    fieldsets = [
        (None, {"fields": ["slug", "name", "is_active", "public_id", "created_at"]}),
        ("Admission", {"fields": ["max_concurrent_runs", "max_queued_runs", "runs_per_minute"]}),
        (
            "Per run",
            {"fields": ["max_steps", "max_tokens", "max_cost_usd", "max_wall_seconds"]},
        ),
        (
            "Budgets",
            {
                "fields": [
                    "daily_token_budget",
                    "monthly_token_budget",
                    "daily_cost_budget_usd",
                    "monthly_cost_budget_usd",
                    "warn_ratio",
                ],
                "description": "Empty means unlimited. warn_ratio: share of a limit at which "
                "a limit.warning event is sent (0 < ratio <= 1).",
            },
        ),
        ("HTTP node", {"fields": ["http_allowed_hosts", "http_allow_private"]}),
        ("Usage", {"fields": ["usage"]}),
        (
            "Counters (kept by the platform)",
            {"fields": list(COUNTER_FIELDS), "classes": ["collapse"]},
        ),
    ]

    @admin.display(description="Usage (UTC)")
    def usage(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "-"
        today = timezone.now().date()
        rows = UsageDay.objects.filter(tenant=obj)
        day = rows.filter(day=today).aggregate(
            t_in=Sum("tokens_in"), t_out=Sum("tokens_out"), cost=Sum("cost_usd")
        )
        month = rows.filter(day__gte=today.replace(day=1), day__lte=today).aggregate(
            t_in=Sum("tokens_in"), t_out=Sum("tokens_out"), cost=Sum("cost_usd")
        )

        def line(label: str, agg: dict[str, Any], tokens_cap: Any, cost_cap: Any) -> str:
            tokens = (agg["t_in"] or 0) + (agg["t_out"] or 0)
            cost = agg["cost"] or 0
            return (
                f"{label}: {tokens} tokens (budget {tokens_cap if tokens_cap is not None else '∞'})"
                f", ${cost} (budget {cost_cap if cost_cap is not None else '∞'})"
            )

        return " · ".join(
            [
                line("today", day, obj.daily_token_budget, obj.daily_cost_budget_usd),
                line("month", month, obj.monthly_token_budget, obj.monthly_cost_budget_usd),
            ]
        )

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            record_audit("tenant.created", by=request.user, tenant=obj, target=obj)
            return
        limits = {n: form.cleaned_data[n] for n in form.changed_data if n in LIMIT_FIELDS}
        others = [n for n in form.changed_data if n not in LIMIT_FIELDS]
        if others:
            # Only the edited columns: the counters move under the form while it is open.
            obj.save(update_fields=others)
            record_audit(
                "tenant.updated",
                by=request.user,
                tenant=obj,
                target=obj,
                data={"changed": {n: [form.initial.get(n), getattr(obj, n)] for n in others}},
            )
        if limits:
            set_tenant_limits(obj, limits, by=request.user)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__username", "user__email", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]
    list_select_related = ["user", "tenant"]


# --- API keys ---------------------------------------------------------------------------------


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "prefix",
        "name",
        "role",
        "tenant",
        "created_at",
        "last_used_at",
        "revoked",
    ]
    list_filter = ["role", ("revoked_at", admin.EmptyFieldListFilter), "tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    list_select_related = ["tenant"]
    actions = ["revoke_selected"]
    autocomplete_fields = ["tenant"]

    @admin.display(boolean=True, description="revoked", ordering="revoked_at")
    def revoked(self, obj: ApiKey) -> bool:
        return obj.revoked_at is not None

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[Any]:
        # `hashed` is never shown; the raw key exists only in the message after creation.
        if obj is None:
            return ["tenant", "name", "role"]
        return [
            "public_id",
            "tenant",
            "name",
            "role",
            "prefix",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return []
        return [f for f in self.get_fields(request, obj) if f != "name"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Revoke instead: the row keeps the key's history (and its audit trail) readable.
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            # Only the edited columns, so a concurrent revocation is never undone.
            if form.changed_data:
                obj.save(update_fields=form.changed_data)
            return
        key, raw = create_api_key(obj.tenant, name=obj.name, role=obj.role, by=request.user)
        # The admin goes on with `obj` (history entry, redirect): make it the saved row.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state.adding = False
        obj._state.db = key._state.db
        messages.warning(
            request,
            format_html(
                "API key for {}: <code>{}</code> — copy it now; it is not shown again.",
                key.tenant.slug,
                raw,
            ),
        )

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset.select_related("tenant").filter(revoked_at__isnull=True):
            revoke_api_key(key, by=request.user)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


# --- Usage and audit (read-only) -------------------------------------------------------------


@admin.register(UsageDay)
class UsageDayAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["day", "tenant", "runs", "steps", "tokens_in", "tokens_out", "cost_usd"]
    list_filter = ["tenant"]
    date_hierarchy = "day"
    list_select_related = ["tenant"]


@admin.register(UsageModelDay)
class UsageModelDayAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["day", "tenant", "model", "calls", "tokens_in", "tokens_out", "cost_usd"]
    list_filter = ["tenant", "model"]
    date_hierarchy = "day"
    list_select_related = ["tenant"]


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "action",
        "actor_label",
        "tenant",
        "target_type",
        "target_id",
        "status_before",
        "status_after",
    ]
    list_filter = ["action", "tenant"]
    search_fields = ["action", "actor_label", "target_id", "reason"]
    date_hierarchy = "created_at"
    list_select_related = ["tenant"]
    exclude = ["data"]
    readonly_fields = ["pretty_data"]

    @admin.display(description="data")
    def pretty_data(self, obj: AuditLog) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True))
