"""Operators' console for tenants: limits, members, API keys, usage, and the audit log.

Writes go through tenants.services so they are validated and audited the same way as from the
command line; saves name their columns so they never overwrite counters or revocations that
happened while the form was open.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from tenants.limits import budget_usage
from tenants.models import ApiKey, AuditLog, Membership, Role, Tenant, UsageDay, UsageModelDay
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


def _against(used: Any, budget: Any, *, money: bool = False) -> str:
    shown = f"${used:.4f}" if money else f"{used}"
    if budget is None:
        return f"{shown} / unlimited"
    cap = f"${format(Decimal(budget).normalize(), 'f')}" if money else f"{budget}"
    share = f" ({float(used) / float(budget):.0%})" if budget else ""
    return f"{shown} / {cap}{share}"


_KEYS_TABLE = (
    '<table class="tenant-keys"><thead><tr><th>prefix</th><th>name</th><th>role</th>'
    "<th>created</th><th>last used</th><th>state</th></tr></thead><tbody>{}</tbody></table>"
)
_KEY_ROW = (
    "<tr><td><code>{}…</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"
)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, initial="default")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


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
    readonly_fields = ["public_id", "created_at", *COUNTER_FIELDS, "usage", "api_keys"]
    inlines = [MembershipInline]
    fieldsets = [
        (None, {"fields": ["slug", "name", "is_active", "public_id", "created_at"]}),
        ("Admission", {"fields": ["max_concurrent_runs", "max_queued_runs", "runs_per_minute"]}),
        (
            "Per run",
            {
                "fields": [
                    "max_steps",
                    "max_tokens",
                    "max_cost_usd",
                    "max_wall_seconds",
                    "max_state_bytes",
                    "max_child_runs",
                    "max_resurrections",
                ]
            },
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
        ("API keys", {"fields": ["api_keys"]}),
        (
            "Counters (kept by the platform)",
            {"fields": list(COUNTER_FIELDS), "classes": ["collapse"]},
        ),
    ]

    @admin.display(description="Usage (UTC)")
    def usage(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "-"
        rows = []
        for label, period in budget_usage(obj).items():
            used = period["usage"]
            rows.append(
                (
                    "today" if label == "day" else "this month",
                    _against(used.tokens, period["token_budget"]),
                    _against(used.cost_usd, period["cost_budget_usd"], money=True),
                    used.runs,
                    used.steps,
                    period["resets_at"].strftime("%Y-%m-%d %H:%M UTC"),
                )
            )
        return format_html(
            "<p>Now: {} running of max_concurrent_runs {}, {} queued of max_queued_runs {}.</p>"
            '<table class="tenant-usage"><thead><tr><th>period</th><th>tokens / budget</th>'
            "<th>cost / budget</th><th>runs</th><th>steps</th><th>resets</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            obj.running_count,
            obj.max_concurrent_runs,
            obj.queued_count,
            obj.max_queued_runs,
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                rows,
            ),
        )

    @admin.display(description="API keys")
    def api_keys(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "Save the tenant first."
        rows = []
        for key in obj.api_keys.order_by("-created_at"):
            if key.revoked_at is None:
                revoke_url = reverse("admin:tenants_tenant_revoke_key", args=[obj.pk, key.pk])
                state = format_html('active · <a href="{}">revoke…</a>', revoke_url)
            else:
                state = format_html("revoked {}", key.revoked_at.strftime("%Y-%m-%d %H:%M"))
            used = key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never"
            created = key.created_at.strftime("%Y-%m-%d")
            rows.append((key.prefix, key.name, key.role, created, used, state))
        create_url = reverse("admin:tenants_tenant_create_key", args=[obj.pk])
        return format_html(
            '{}<p><a href="{}" class="button">Create API key…</a></p>',
            format_html(_KEYS_TABLE, format_html_join("", _KEY_ROW, rows)) if rows else "No keys.",
            create_url,
        )

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/api-keys/new/",
                view(self.create_key_view),
                name="tenants_tenant_create_key",
            ),
            path(
                "<path:object_id>/api-keys/<int:key_id>/revoke/",
                view(self.revoke_key_view),
                name="tenants_tenant_revoke_key",
            ),
            *super().get_urls(),
        ]

    def _tenant_or_404(self, request: HttpRequest, object_id: str, perm: str) -> Tenant:
        user: Any = request.user
        if not user.has_perm(perm):
            raise PermissionDenied
        tenant = self.get_object(request, object_id)
        if tenant is None:
            raise Http404("No such tenant.")
        return tenant

    def _key_page(
        self, request: HttpRequest, tenant: Tenant, template: str, **extra: Any
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": tenant,
            "tenant_url": reverse("admin:tenants_tenant_change", args=[tenant.pk]),
            **extra,
        }
        return TemplateResponse(request, f"admin/tenants/tenant/{template}", context)

    def create_key_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Create a key for this tenant; the raw key is shown once, in a message."""
        tenant = self._tenant_or_404(request, object_id, "tenants.add_apikey")
        form = ApiKeyCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            key, raw = create_api_key(
                tenant,
                name=form.cleaned_data["name"],
                role=form.cleaned_data["role"],
                by=request.user,
            )
            messages.warning(
                request,
                format_html(
                    "API key {} for {}: <code>{}</code> — copy it now; it is not shown again.",
                    key.name,
                    tenant.slug,
                    raw,
                ),
            )
            return HttpResponseRedirect(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
        return self._key_page(
            request,
            tenant,
            "api_key_create.html",
            form=form,
            title=f"New API key for {tenant.slug}",
        )

    def revoke_key_view(self, request: HttpRequest, object_id: str, key_id: int) -> HttpResponse:
        tenant = self._tenant_or_404(request, object_id, "tenants.change_apikey")
        key = ApiKey.objects.filter(tenant=tenant, pk=key_id).first()
        if key is None:
            raise Http404("No such key for this tenant.")
        if request.method == "POST":
            already = key.revoked_at is not None
            revoke_api_key(key, by=request.user)
            if already:
                self.message_user(request, f"Key {key.prefix}… was already revoked.", messages.INFO)
            else:
                self.message_user(
                    request, f"Revoked key {key.prefix}… ({key.name}).", messages.SUCCESS
                )
            return HttpResponseRedirect(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
        return self._key_page(
            request, tenant, "api_key_revoke.html", key=key, title=f"Revoke key {key.prefix}…"
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
    list_display = [
        "day",
        "tenant",
        "shard",
        "runs",
        "steps",
        "tokens_in",
        "tokens_out",
        "cost_usd",
    ]
    list_filter = ["tenant"]
    date_hierarchy = "day"
    list_select_related = ["tenant"]


@admin.register(UsageModelDay)
class UsageModelDayAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "day",
        "tenant",
        "model",
        "shard",
        "calls",
        "tokens_in",
        "tokens_out",
        "cost_usd",
    ]
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
