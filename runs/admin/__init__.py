"""The operators' console for runs (DESIGN.md §6): runs, graphs, actions, reconciliation."""

from django.contrib import admin

from runs.admin import site
from runs.admin.graphs import GraphAdmin
from runs.admin.runs import RunAdmin

site.install(admin.site)

__all__ = ["GraphAdmin", "RunAdmin"]
