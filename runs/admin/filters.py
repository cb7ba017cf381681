"""Changelist filters for runs that Django's field filters do not cover."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from runs.models import Graph, Run


class GraphNameFilter(admin.SimpleListFilter):
    title = "graph name"
    parameter_name = "graph"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = Graph.objects.order_by("name").values_list("name", flat=True).distinct()
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        if self.value():
            return queryset.filter(graph__name=self.value())
        return queryset


class LeaseFilter(admin.SimpleListFilter):
    title = "lease"
    parameter_name = "lease"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("expired", "expired"), ("held", "held"), ("none", "none")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        now = timezone.now()
        if self.value() == "expired":
            return queryset.filter(lease_expires_at__lt=now)
        if self.value() == "held":
            return queryset.filter(lease_expires_at__gte=now)
        if self.value() == "none":
            return queryset.filter(lease_expires_at__isnull=True)
        return queryset
