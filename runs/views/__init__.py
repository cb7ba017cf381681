"""The web dashboard: server-rendered pages, live over websockets (DESIGN §6).

Views parse input, call a service or selector, and render; every query is tenant-scoped through
the session's TenantContext (`tenant_view`), so another tenant's object is a 404.
"""

from runs.views.graphs import graph_detail, graph_list
from runs.views.overview import overview
from runs.views.runs import (
    artifact_download,
    run_control,
    run_detail,
    run_list,
    run_live,
)
from runs.views.steps import node_step, step_detail
from runs.views.tenants import switch_tenant
from runs.views.usage import usage

__all__ = [
    "artifact_download",
    "graph_detail",
    "graph_list",
    "overview",
    "run_control",
    "run_detail",
    "run_list",
    "run_live",
    "node_step",
    "step_detail",
    "switch_tenant",
    "usage",
]
