"""Operators' view of webhooks: subscriptions, deliveries with their attempts, redelivery."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from runs.admin.detail import pretty_json
from webhooks import services
from webhooks.models import Delivery, DeliveryAttempt, Subscription

ATTEMPT_FIELDS = (
    "number",
    "outcome",
    "status_code",
    "error",
    "duration_ms",
    "response_excerpt",
    "created_at",
)
DELIVERY_FIELDS = (
    "public_id",
    "tenant",
    "subscription",
    "run_public_id",
    "event",
    "url",
    "status",
    "attempts",
    "last_outcome",
    "last_status_code",
    "last_error",
    "next_attempt_at",
    "retry_until",
    "created_at",
    "delivered_at",
    "body_pretty",
)


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["url", "tenant", "enabled", "include_state", "event_list", "created_at"]
    list_filter = ["tenant", "enabled"]
    search_fields = ["url", "description"]
    list_select_related = ["tenant"]
    readonly_fields = ["public_id", "tenant", "url", "events", "created_at", "updated_at"]
    fields = [
        "public_id",
        "tenant",
        "url",
        "events",
        "enabled",
        "include_state",
        "description",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # URLs are checked against the tenant's policy: the API and dashboard do it

    @admin.display(description="events")
    def event_list(self, obj: Subscription) -> str:
        return ", ".join(e.removeprefix("run.") for e in obj.events or [])


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ATTEMPT_FIELDS
    readonly_fields = ATTEMPT_FIELDS
    ordering = ["-number"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "event",
        "url",
        "tenant",
        "status",
        "attempts",
        "last_outcome",
        "last_status_code",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["tenant", "status", "last_outcome", "event"]
    search_fields = ["url", "=run_public_id", "=public_id"]
    list_select_related = ["tenant"]
    actions = ["redeliver"]
    inlines = [AttemptInline]
    fields = DELIVERY_FIELDS
    readonly_fields = DELIVERY_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="body")
    def body_pretty(self, obj: Delivery) -> str:
        import json

        try:
            return pretty_json(json.loads(obj.body))
        except ValueError:
            return obj.body

    @admin.action(
        description="Redeliver now (same body, fresh retry window)", permissions=["change"]
    )
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = 0
        for item in queryset[:500]:
            services.redeliver(item, by=request.user)
            count += 1
        self.message_user(
            request, f"{count} delivery(ies) will be sent again now.", messages.SUCCESS
        )


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):
    list_display = [
        "delivery",
        "tenant",
        "number",
        "outcome",
        "status_code",
        "duration_ms",
        "error",
        "created_at",
    ]
    list_filter = ["delivery__tenant", "outcome"]
    list_select_related = ["delivery__tenant"]
    readonly_fields = [
        "delivery",
        "number",
        "outcome",
        "status_code",
        "error",
        "duration_ms",
        "response_excerpt",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="tenant", ordering="delivery__tenant__slug")
    def tenant(self, obj: DeliveryAttempt) -> Any:
        return obj.delivery.tenant
