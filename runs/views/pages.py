"""Rendering a dashboard page: the base layout's context (tenant, switcher, navigation)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from runs.views.common import memberships_of


def page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    nav: str = "",
    status: int = 200,
) -> HttpResponse:
    ctx = getattr(request, "ctx", None)
    base = {
        "ctx": ctx,
        "tenant": ctx.tenant if ctx else None,
        "memberships": memberships_of(request) if ctx else [],
        "nav": nav,
    }
    return render(request, template, {**base, **context}, status=status)
