"""Graphs: their latest versions with diagrams, one graph's versions and spec, starting a run,
and uploading a new version (admins)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from runs import selectors, services
from runs.diagram import diagram_svg
from runs.engine.subscriptions import spec_triggers
from runs.forms import GraphUploadForm, StartRunForm
from runs.models import Graph, Run
from runs.services import ServiceError, ValidationFailed
from runs.views.common import error_text, require_manage, require_write, tenant_view
from runs.views.pages import page
from tenants.auth import TenantContext
from tenants.limits import LimitExceeded
from tenants.models import GraphLimit
from triggers import selectors as trigger_selectors

RECENT_RUNS = 8


def _pretty(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def _group_problems(problems: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Problems grouped by where they are (`nodes.<name>`, `edges[i]`, `start`...), so each
    node's problems are listed together under its name."""
    groups: dict[str, list[str]] = defaultdict(list)
    for problem in problems:
        where = str(problem.get("where", "spec"))
        if where.startswith("nodes."):
            where = "node " + where[len("nodes.") :]
        elif where.startswith("edges["):
            where = "edge " + where[len("edges") :]
        groups[where].append(str(problem.get("message", "")))
    return [{"where": where, "messages": msgs} for where, msgs in groups.items()]


def _input_skeleton(schema: Any) -> dict[str, Any]:
    """A starting point for the input textarea: the schema's required keys, typed."""
    if not isinstance(schema, dict):
        return {}
    props: dict[str, Any] = schema.get("properties") or {}
    if not isinstance(props, dict):
        props = {}
    out: dict[str, Any] = {}
    for key in schema.get("required") or []:
        prop: dict[str, Any] = props.get(str(key)) or {}
        if not isinstance(prop, dict):
            prop = {}
        if prop.get("enum"):
            out[key] = prop["enum"][0]
        else:
            out[key] = {
                "integer": 0,
                "number": 0,
                "boolean": False,
                "array": [],
                "object": {},
            }.get(str(prop.get("type")), "")
    return out


def _upload(request: HttpRequest, ctx: TenantContext, form: GraphUploadForm) -> Any:
    """Store the form's spec as a new version; the problems per node when it is invalid."""
    try:
        graph = services.create_graph_version(
            ctx.tenant, form.cleaned_data["data"], by=ctx.actor_label
        )
    except ValidationFailed as exc:
        problems = exc.details.get("problems") or []
        if not problems:
            form.add_error(None, exc.message)
        return _group_problems(problems)
    messages.success(request, f"Stored {graph.name} version {graph.version}.")
    return redirect(reverse("runs:graph", args=[graph.name]))


@tenant_view
def graph_list(request: HttpRequest) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    problems: list[dict[str, Any]] = []
    if request.method == "POST":
        require_manage(ctx)
        form = GraphUploadForm(request.POST, request.FILES)
        if form.is_valid():
            outcome = _upload(request, ctx, form)
            if not isinstance(outcome, list):
                return outcome
            problems = outcome
    else:
        initial = {}
        edit = request.GET.get("edit")
        if edit:
            source = Graph.objects.for_tenant(ctx.tenant).filter(name=edit).order_by("-version")
            if (graph := source.first()) is not None:
                initial["spec"] = _pretty(graph.spec)
        form = GraphUploadForm(initial=initial)
    graphs = services.latest_versions(ctx.tenant)
    counts = dict(Graph.objects.for_tenant(ctx.tenant).values_list("name").annotate(n=Count("id")))
    run_counts = dict(
        Run.objects.for_tenant(ctx.tenant).values_list("graph__name").annotate(n=Count("id"))
    )
    cards = [
        {
            "graph": g,
            "versions": counts.get(g.name, 1),
            "runs": run_counts.get(g.name, 0),
            "description": g.spec.get("description", ""),
            "nodes": len(g.spec.get("nodes") or {}),
            "svg": diagram_svg(g.spec, svg_id=f"thumb-{i}", css_class="diagram thumb-svg"),
        }
        for i, g in enumerate(graphs)
    ]
    return page(
        request,
        "runs/graph_list.html",
        {
            "cards": cards,
            "triggers": trigger_selectors.triggers_of(ctx.tenant),
            "received_events": trigger_selectors.recent_events(ctx.tenant),
            "form": form,
            "problems": problems,
            "show_upload": bool(problems or form.errors or request.GET.get("edit")),
        },
        nav="graphs",
    )


@tenant_view
def graph_detail(request: HttpRequest, name: str) -> HttpResponse:
    """GET shows a version (latest, or ?version=N); POST starts a run from the start form."""
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    version_param = request.GET.get("version")
    version = int(version_param) if version_param and version_param.isdigit() else None
    graph = services.get_graph(ctx.tenant, name, version)
    versions = selectors.graph_versions(ctx.tenant, name)
    if request.method == "POST":
        require_write(ctx)
        form = StartRunForm(request.POST, versions=versions)
        if form.is_valid():
            try:
                run = services.create_run(
                    ctx.tenant,
                    graph=name,
                    version=form.cleaned_data["version"],
                    input=form.cleaned_data["input"],
                    metadata=form.cleaned_data["metadata"],
                    priority=form.cleaned_data["priority"],
                    by=ctx.actor_label,
                    created_by=ctx.principal,
                )
            except ValidationFailed as exc:
                problems = exc.details.get("problems") or []
                for problem in problems:
                    form.add_error("input", f"{problem['where']}: {problem['message']}")
                if not problems:
                    form.add_error(None, exc.message)
            except (ServiceError, LimitExceeded) as exc:
                form.add_error(None, error_text(exc))
            else:
                messages.success(request, f"Started run {str(run.public_id)[:8]}.")
                return redirect(reverse("runs:detail", args=[run.public_id]))
    else:
        skeleton = _input_skeleton(graph.spec.get("input_schema"))
        form = StartRunForm(
            initial={
                "version": str(version) if version else "",
                "input": _pretty(skeleton) if skeleton else "{}",
            },
            versions=versions,
        )
    recent = list(
        Run.objects.for_tenant(ctx.tenant)
        .filter(graph__name=name)
        .select_related("graph")
        .order_by("-created_at")[:RECENT_RUNS]
    )
    return page(
        request,
        "runs/graph_detail.html",
        {
            "graph": graph,
            "versions": versions,
            "is_latest": graph.version == max(versions),
            "form": form,
            "diagram": diagram_svg(graph.spec, svg_id="graph-dg"),
            "spec_json": _pretty(graph.spec),
            "schema_json": _pretty(graph.spec.get("input_schema"))
            if graph.spec.get("input_schema")
            else "",
            "description": graph.spec.get("description", ""),
            "graph_limit": graph.limit_id and GraphLimit.objects.filter(pk=graph.limit_id).first(),
            "triggers": spec_triggers(graph.spec),
            "recent_runs": recent,
        },
        nav="graphs",
    )
