"""Admin pages that belong to the runs app but to no single model: /admin/runs/reconcile/.

Django's AdminSite mounts ModelAdmin URLs under `<app>/<model>/`, so an app-level page needs
the site's own URL list. This wraps the default site's `get_urls` once, at admin autodiscovery
(before the URLconf is first loaded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.admin import AdminSite
from django.urls import path

from runs.admin.reconcile import reconcile_view


def install(site: AdminSite) -> None:
    if getattr(site, "_runyard_runs_urls", False):
        return
    original: Callable[[], list[Any]] = site.get_urls

    def get_urls() -> list[Any]:
        return [
            path("runs/reconcile/", site.admin_view(reconcile_view), name="runs_reconcile"),
            *original(),
        ]

    site.get_urls = get_urls  # type: ignore[method-assign]
    site._runyard_runs_urls = True  # type: ignore[attr-defined]
