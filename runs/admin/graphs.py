"""Graph versions, read-only: they are immutable, and runs link here for their spec."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from runs.admin.detail import pretty_json
from runs.models import Graph


@admin.register(Graph)
class GraphAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "tenant", "short_hash", "created_at", "created_by"]
    list_filter = ["tenant"]
    search_fields = ["name"]
    list_select_related = ["tenant"]
    fields = [
        "public_id",
        "tenant",
        "name",
        "version",
        "hash",
        "created_at",
        "created_by",
        "spec_pretty",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="hash")
    def short_hash(self, obj: Graph) -> str:
        return obj.hash[:12]

    @admin.display(description="spec")
    def spec_pretty(self, obj: Graph) -> str:
        return pretty_json(obj.spec)
