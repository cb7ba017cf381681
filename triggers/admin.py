"""Received events in the operators' console: read-only (events are written by the API)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from runs.admin.detail import pretty_json
from triggers.models import ReceivedEvent


@admin.register(ReceivedEvent)
class ReceivedEventAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "tenant",
        "event_id",
        "by",
        "started_count",
        "refused_count",
        "received_at",
    ]
    list_filter = ["tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "event_id"]
    ordering = ["-id"]
    show_full_result_count = False
    fields = [
        "public_id",
        "tenant",
        "name",
        "event_id",
        "by",
        "received_at",
        "started_pretty",
        "refused_pretty",
        "payload_pretty",
    ]
    readonly_fields = [str(name) for name in fields]  # all of them (typed as the base wants)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="runs started")
    def started_count(self, obj: ReceivedEvent) -> int:
        return len(obj.started or [])

    @admin.display(description="refused")
    def refused_count(self, obj: ReceivedEvent) -> int:
        return len(obj.refused or [])

    @admin.display(description="started")
    def started_pretty(self, obj: ReceivedEvent) -> str:
        return pretty_json(obj.started)

    @admin.display(description="refused")
    def refused_pretty(self, obj: ReceivedEvent) -> str:
        return pretty_json(obj.refused)

    @admin.display(description="payload")
    def payload_pretty(self, obj: ReceivedEvent) -> str:
        return pretty_json(obj.payload)
