"""Runs list, run detail (with its live JSON view), controls, and artifact downloads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms as django_forms
from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from runs import selectors, services
from runs.checkpoints import current_state
from runs.diagram import diagram_svg, node_states
from runs.events import Fenced
from runs.forms import ApprovalForm, CancelForm, ForkForm, GuidanceForm, InputForm
from runs.models import Event, Run, Step
from runs.services import ServiceError
from runs.status import ACTIVE, RunStatus
from runs.templatetags.run_hints import stale_lease
from runs.views.common import (
    error_text,
    fmt_ms,
    json_result,
    require_write,
    tenant_view,
    wants_json,
)
from runs.views.lists import STATUS_CHOICES, ListQuery
from runs.views.pages import page
from tenants.auth import TenantContext
from tenants.limits import LimitExceeded
from tenants.permissions import Forbidden

PAGE_SIZE = 25
EVENT_LOG_SIZE = 300
DATA_PREVIEW_CHARS = 240
# Served inline; anything else is a download. Inline answers are sandboxed either way.
INLINE_TYPES = {"text/plain", "text/markdown", "application/json", "image/png", "image/jpeg"}


# --- runs list ----------------------------------------------------------------------------------


@require_GET
@tenant_view
def run_list(request: HttpRequest) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    query = ListQuery.from_params(request.GET)
    filters = query.filters()
    cursor = request.GET.get("cursor") or None
    try:
        result = selectors.run_page(ctx.tenant, filters, cursor=cursor, limit=PAGE_SIZE)
    except ServiceError:
        cursor = None  # a stale or edited cursor: show the first page rather than an error
        result = selectors.run_page(ctx.tenant, filters, cursor=None, limit=PAGE_SIZE)
    now = timezone.now()
    context = {
        "rows": [
            {
                "run": run,
                "short": run.public_id.hex[:8],
                "duration": fmt_ms(_duration_ms(run, now)),
                "tokens": run.tokens_in + run.tokens_out,
                "live": not run.is_terminal,
                "stale_lease": stale_lease(run, now),
            }
            for run in result.items
        ],
        "next_cursor": result.next_cursor,
        "is_first_page": cursor is None,
        "query": query,
        "newest_url": query.url(),
        "older_url": query.url(cursor=result.next_cursor) if result.next_cursor else "",
        "rows_url": reverse("runs:list") + query.url(partial="rows"),
        "status_choices": STATUS_CHOICES,
        "graph_names": sorted({g.name for g in services.latest_versions(ctx.tenant)}),
        # The tenant stream's cursor as of this render: the page subscribes from here, so
        # nothing that happens between rendering and connecting is missed.
        "stream_after": Event.objects.filter(tenant=ctx.tenant)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
        or 0,
    }
    if request.GET.get("partial") == "rows":
        return HttpResponse(render_to_string("runs/_run_rows.html", context, request))
    return page(request, "runs/run_list.html", context, nav="runs")


# --- run detail ---------------------------------------------------------------------------------


def _duration_ms(run: Run, now: Any) -> int | None:
    if run.started_at is None:
        return None
    end = run.finished_at or now
    return max(0, int((end - run.started_at).total_seconds() * 1000))


def _timeline(steps: list[Step]) -> list[dict[str, Any]]:
    """Each step with its duration bar, as a percentage of the longest step's duration."""
    longest = max([s.duration_ms for s in steps] + [1])
    rows = []
    for step in steps:
        usage = step.usage if isinstance(step.usage, dict) else {}
        rows.append(
            {
                "step": step,
                "width": round(max(step.duration_ms / longest * 100, 1.0), 1),
                "duration": fmt_ms(step.duration_ms),
                "tokens": int(usage.get("tokens_in", 0)) + int(usage.get("tokens_out", 0)),
            }
        )
    return rows


def _preview(data: Any) -> str:
    text = json.dumps(data, separators=(", ", ": "), ensure_ascii=False, default=str)
    return text if len(text) <= DATA_PREVIEW_CHARS else text[: DATA_PREVIEW_CHARS - 1] + "…"


def _event_rows(run: Run) -> tuple[list[dict[str, Any]], bool]:
    # Up to the run's last_seq as read: an event committed since belongs to a later status
    # than the panels show, and reaches the page over its websocket (see run_live).
    events = Event.objects.filter(run=run, seq__lte=run.last_seq)
    rows = list(events.order_by("-seq")[: EVENT_LOG_SIZE + 1])
    truncated = len(rows) > EVENT_LOG_SIZE
    rows = list(reversed(rows[:EVENT_LOG_SIZE]))
    return [
        {
            "seq": e.seq,
            "type": e.type,
            "family": e.type.split(".", 1)[0],
            "ts": e.created_at,
            "data": _preview(e.data),
        }
        for e in rows
    ], truncated


def _states(run: Run, steps: list[Step]) -> dict[str, str]:
    branch_events = Event.objects.filter(
        run=run, seq__lte=run.last_seq, type__startswith="branch."
    ).order_by("seq")
    return node_states(
        status=run.status,
        steps=[(s.node, s.status) for s in steps],
        waiting_for=run.waiting_for,
        position=run.position,
        branch_events=[(e.type, e.data or {}) for e in branch_events.only("type", "data")],
    )


def _controls(run: Run, ctx: TenantContext) -> dict[str, Any]:
    """Which controls apply to the run as it is now, and their (unbound) forms."""
    waiting = run.waiting_for or {}
    kind = waiting.get("kind")
    status = run.status
    data = waiting.get("data") if isinstance(waiting.get("data"), dict) else {}
    routes = [r for r in (data or {}).get("routes") or [] if isinstance(r, str)]
    return {
        "can_write": ctx.can_write,
        "active": status in ACTIVE,
        "can_cancel": status
        in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED),
        "cancelling": status == RunStatus.CANCELLING,
        "can_pause": status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)
        and not run.pause_requested,
        "can_resume": status == RunStatus.PAUSED
        or (status == RunStatus.RUNNING and run.pause_requested),
        "pause_requested": run.pause_requested,
        "approval": waiting if kind == "approval" else None,
        "approval_routes": routes if len(routes) > 1 else [],
        "input": waiting if kind == "input" else None,
        "can_guide": status in ACTIVE and status != RunStatus.CANCELLING,
        # What an ended run offers; the service has the last word (a child run, a routing
        # failure or a spent per-run limit is refused with the reason).
        "can_retry": status == RunStatus.FAILED,
        "can_resume_ended": status == RunStatus.INTERRUPTED,
        "stopped_at": (run.position or {}).get("node"),
        "cancel_form": CancelForm(),
        "approval_form": ApprovalForm(initial={"approval_id": waiting.get("id", "")}),
        "input_form": InputForm(initial={"input_id": waiting.get("id", "")}),
        "guidance_form": GuidanceForm(),
        "key": "|".join(
            [status, str(waiting.get("id", "")), str(run.pause_requested), str(ctx.can_write)]
        ),
    }


def _detail_context(request: HttpRequest, run: Run) -> dict[str, Any]:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    now = timezone.now()
    steps = list(Step.objects.filter(run=run).order_by("index"))
    events, truncated = _event_rows(run)
    states = _states(run, steps)
    artifacts = list(run.artifacts.select_related("step").order_by("id"))
    return {
        "run": run,
        "graph": run.graph,
        "duration": fmt_ms(_duration_ms(run, now)),
        "timeline": _timeline(steps),
        "events": events,
        "events_truncated": truncated,
        "states": states,
        "artifacts": artifacts,
        "controls": _controls(run, ctx),
        "state_json": json.dumps(current_state(run), indent=2, ensure_ascii=False, default=str),
        "input_json": json.dumps(run.input, indent=2, ensure_ascii=False, default=str),
        "metadata_json": json.dumps(run.metadata, indent=2, ensure_ascii=False, default=str),
        "children": list(run.children.select_related("graph").order_by("created_at")[:20]),
        "now": now,
    }


PANELS = {
    "header": "runs/_run_header.html",
    "controls": "runs/_run_controls.html",
    "timeline": "runs/_run_timeline.html",
    "state": "runs/_run_state.html",
    "artifacts": "runs/_run_artifacts.html",
}


@require_GET
@tenant_view
def run_detail(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    run = services.get_run(ctx.tenant, run_id)
    context = _detail_context(request, run)
    context["diagram"] = diagram_svg(run.graph.spec, states=context["states"], svg_id="run-dg")
    context["live"] = {
        "run": run.public_id.hex,
        "after": run.last_seq,
        "terminal": run.is_terminal,
        "live_url": reverse("runs:live", args=[run.public_id]),
        "ws_path": f"/ws/runs/{run.public_id.hex}/",
        "controls_key": context["controls"]["key"],
    }
    return page(request, "runs/run_detail.html", context, nav="runs")


@require_GET
@tenant_view
def run_live(request: HttpRequest, run_id: uuid.UUID) -> JsonResponse:
    """The run as the detail page shows it: status, node states, re-rendered panels, and the
    events after `after`. The page calls it after websocket events, or polls it without one.

    One consistent picture: the events stop at the run's `last_seq` as read with its status.
    The rows are read one query after another, so an event committed in between (an operator
    interrupting the run) would otherwise come with panels from before it; the page would
    take its seq as seen, drop the websocket's copy, and keep the old status."""
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    run = services.get_run(ctx.tenant, run_id)
    try:
        after = max(0, int(request.GET.get("after", "0")))
    except ValueError:
        after = 0
    context = _detail_context(request, run)
    page_ = selectors.event_page(run, after=after, limit=200, upto=run.last_seq)
    return JsonResponse(
        {
            "run": run.public_id.hex,
            "status": run.status,
            "terminal": run.is_terminal,
            "last_seq": run.last_seq,
            "states": context["states"],
            "controls_key": context["controls"]["key"],
            "panels": {
                name: render_to_string(template, context, request)
                for name, template in PANELS.items()
            },
            "events": [
                {
                    "seq": e.seq,
                    "event": e.type,
                    "data": e.data,
                    "ts": e.created_at.isoformat(),
                }
                for e in page_.items
            ],
        }
    )


# --- controls -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    message: str
    # Where the page goes next (a fork's new run); None: it stays and refreshes.
    redirect: str | None = None


@dataclass(frozen=True)
class Control:
    form: type[django_forms.Form] | None
    apply: Callable[[Run, dict[str, Any], str], str | Outcome]


def _cancel(run: Run, data: dict[str, Any], by: str) -> str:
    run = services.cancel_run(run, action=data["action"], by=by, reason=data.get("reason", ""))
    if run.status == RunStatus.CANCELLED:
        return "The run is cancelled."
    return f"Cancel requested ({data['action']}); the run stops at its next safe point."


def _pause(run: Run, data: dict[str, Any], by: str) -> str:
    run = services.pause_run(run, by=by)
    if run.status == RunStatus.PAUSED:
        return "The run is paused."
    return "Pause requested; the run pauses after its current step."


def _resume(run: Run, data: dict[str, Any], by: str) -> str:
    run = services.resume_run(run, by=by, interrupted=True)
    if run.status == RunStatus.QUEUED:
        return "The run is resumed; it is queued to go on from its last checkpoint."
    return "The run is resumed."


def _retry(run: Run, data: dict[str, Any], by: str) -> str:
    run = services.retry_run(run, by=by)
    node = (run.position or {}).get("node")
    return f"Retrying from {node}." if node else "Retrying the run."


def _fork(run: Run, data: dict[str, Any], by: str) -> Outcome:
    fork = services.fork_run(run, step=data["step"], by=by)
    return Outcome(
        f"Forked from step {data['step']}.", reverse("runs:detail", args=[fork.public_id])
    )


def _approval(run: Run, data: dict[str, Any], by: str) -> str:
    services.decide_approval(
        run,
        data["approval_id"],
        decision=data["decision"],
        patch=data.get("patch"),
        route=data.get("route") or None,
        by=by,
    )
    verb = "Approved" if data["decision"] == "approve" else "Rejected"
    return f"{verb} {data['approval_id']}."


def _input(run: Run, data: dict[str, Any], by: str) -> str:
    services.submit_input(run, data["value"], input_id=data.get("input_id") or None, by=by)
    return "Input sent."


def _guidance(run: Run, data: dict[str, Any], by: str) -> str:
    services.add_guidance(run, data["message"], by=by)
    return "Guidance added; the run sees it before its next node."


CONTROLS: dict[str, Control] = {
    "cancel": Control(CancelForm, _cancel),
    "pause": Control(None, _pause),
    "resume": Control(None, _resume),
    "approval": Control(ApprovalForm, _approval),
    "input": Control(InputForm, _input),
    "guidance": Control(GuidanceForm, _guidance),
    "retry": Control(None, _retry),
    "fork": Control(ForkForm, _fork),
}


def _form_errors(form: django_forms.Form) -> str:
    parts = []
    for name, errors in form.errors.items():
        label = (form.fields[name].label or name) if name in form.fields else ""
        parts.append((f"{label}: " if label else "") + " ".join(str(e) for e in errors))
    return "; ".join(parts)


@require_POST
@tenant_view
def run_control(request: HttpRequest, run_id: uuid.UUID, action: str) -> HttpResponse:
    """One of cancel, pause, resume, approval, input, guidance, retry, fork: parse, call the
    service, answer with a message (JSON for the page's script, else a redirect back, or to
    a fork's new run)."""
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    control = CONTROLS.get(action)
    if control is None:
        raise Http404(f"No control {action!r}.")
    run = services.get_run(ctx.tenant, run_id)
    detail = reverse("runs:detail", args=[run.public_id])
    try:
        require_write(ctx)
    except Forbidden as exc:
        if wants_json(request):
            return json_result(False, exc.message, status=403)
        raise
    data: dict[str, Any] = {}
    if control.form is not None:
        form = control.form(request.POST)
        if not form.is_valid():
            message = _form_errors(form)
            if wants_json(request):
                return json_result(False, message, status=400)
            messages.error(request, message)
            return redirect(detail)
        data = form.cleaned_data
    try:
        outcome = control.apply(run, data, ctx.actor_label)
        if isinstance(outcome, str):
            outcome = Outcome(outcome)
        ok, status = True, 200
    except (ServiceError, LimitExceeded) as exc:
        outcome, ok = Outcome(error_text(exc)), False
        status = exc.status if isinstance(exc, ServiceError) else 429
    except Fenced:
        outcome = Outcome("The run changed meanwhile; look again and retry.")
        ok, status = False, 409
    if wants_json(request):
        extra = {"redirect": outcome.redirect} if outcome.redirect else {}
        return json_result(ok, outcome.message, status=status, **extra)
    (messages.success if ok else messages.error)(request, outcome.message)
    return redirect(outcome.redirect or detail)


# --- artifacts ----------------------------------------------------------------------------------


@require_GET
@tenant_view
def artifact_download(request: HttpRequest, artifact_id: uuid.UUID) -> FileResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    artifact = selectors.get_artifact(ctx.tenant, artifact_id)
    try:
        content = artifact.file.open("rb")
    except FileNotFoundError as exc:
        raise Http404("The artifact has no stored content.") from exc
    base_type = artifact.content_type.split(";")[0].strip().lower()
    response = FileResponse(
        content,
        content_type=artifact.content_type,
        as_attachment=request.GET.get("download") == "1" or base_type not in INLINE_TYPES,
        filename=artifact.name,
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response
