"""The step inspector: one step of a run as a person debugging it wants it, its input state,
the prompt it sent, its output, the state diff it made, usage, timing, errors and artifacts.

Answered as an HTML fragment for the run page's side panel (`?partial=1`, loaded by
runs/static/runs/inspector.js) or as a page of its own. Read-only, so viewers may look; the run
is looked up through the caller's tenant, so another tenant's run is a 404.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from runs import services
from runs.models import Artifact, Checkpoint, Event, Run, Step
from runs.statediff import Shown, diff_states, pretty, truncated_paths
from runs.views.common import fmt_ms, tenant_view
from runs.views.pages import page
from tenants.auth import TenantContext

STEP_ENDS = ("step.completed", "step.failed")
STATE_CHARS = 64_000  # the input state shown; the API's checkpoints have it whole
NODE_SPEC_CHARS = 8_000
MAX_REQUESTS = 20  # llm.request events shown (a parallel step has one per llm branch)
MAX_STEP_EVENTS = 100
MAX_NODE_NAME = 100  # Step.node's length: a longer name cannot have run


@dataclass(frozen=True)
class Window:
    """The seqs between which a step's own events lie: after the previous step ended, up to
    this step's `step.completed`/`step.failed` (events of one run are written in order)."""

    after: int
    end: int


def _window(run: Run, step: Step) -> Window | None:
    end = (
        Event.objects.filter(run=run, type__in=STEP_ENDS, data__index=step.index)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
    if end is None:
        return None
    after = (
        Event.objects.filter(run=run, seq__lt=end, type__in=STEP_ENDS)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return Window(after=after or 0, end=end)


def _llm_requests(run: Run, window: Window | None) -> list[dict[str, Any]]:
    if window is None:
        return []
    rows = Event.objects.filter(
        run=run, seq__gt=window.after, seq__lt=window.end, type="llm.request"
    ).order_by("seq")[:MAX_REQUESTS]
    out = []
    for event in rows:
        data = event.data if isinstance(event.data, dict) else {}
        messages = data.get("messages")
        out.append(
            {
                **{k: data.get(k) for k in ("node", "attempt", "provider", "model")},
                "options": {
                    k: data[k] for k in ("format", "temperature", "max_tokens") if k in data
                },
                "messages": [m for m in messages if isinstance(m, dict)]
                if isinstance(messages, list)
                else [],
                "omitted_messages": data.get("omitted_messages"),
                # The whole record was over the event cap (an older or odd provider).
                "cut": "truncated" in data and not isinstance(messages, list),
            }
        )
    return out


def _step_events(run: Run, window: Window | None) -> tuple[list[dict[str, Any]], bool]:
    if window is None:
        return [], False
    rows = list(
        Event.objects.filter(run=run, seq__gt=window.after, seq__lte=window.end)
        .exclude(type="llm.delta")
        .order_by("seq")[: MAX_STEP_EVENTS + 1]
    )
    shown = [
        {
            "seq": e.seq,
            "type": e.type,
            "family": e.type.split(".", 1)[0],
            "data": Shown.of(e.data),
        }
        for e in rows[:MAX_STEP_EVENTS]
    ]
    return shown, len(rows) > MAX_STEP_EVENTS


def _states(run: Run, step: Step) -> tuple[Checkpoint | None, Checkpoint | None]:
    """The checkpoint before the step (its input) and the one it wrote (its result)."""
    before = (
        Checkpoint.objects.filter(run=run, step_index__lt=step.index)
        .order_by("-step_index")
        .first()
    )
    after = Checkpoint.objects.filter(run=run, step_index=step.index).first()
    return before, after


def _usage(step: Step) -> dict[str, Any]:
    usage = step.usage if isinstance(step.usage, dict) else {}
    by_model = usage.get("by_model") if isinstance(usage.get("by_model"), dict) else {}
    return {
        "tokens_in": int(usage.get("tokens_in") or 0),
        "tokens_out": int(usage.get("tokens_out") or 0),
        "cost_usd": float(usage.get("cost_usd") or 0.0),
        "models": [
            {"model": model, **entry}
            for model, entry in sorted((by_model or {}).items())
            if isinstance(entry, dict)
        ],
    }


def _error(step: Step, run: Run, is_last: bool) -> dict[str, Any] | None:
    """The step's error, and the run's error when this step ended the run (its `cause`)."""
    if not step.error and not (is_last and _run_error_here(run, step)):
        return None
    error = step.error if isinstance(step.error, dict) else {}
    known = {"code", "message", "details"}
    out: dict[str, Any] = {
        "code": error.get("code"),
        "message": error.get("message"),
        "details": pretty(error["details"]) if error.get("details") else None,
        "extra": pretty({k: v for k, v in error.items() if k not in known})
        if set(error) - known
        else None,
        "run_error": None,
    }
    if is_last and _run_error_here(run, step):
        run_error = dict(run.error or {})
        cause = run_error.pop("cause", None)
        out["run_error"] = {
            "code": run_error.get("code"),
            "message": run_error.get("message"),
            "cause": pretty(cause) if cause else None,
        }
    return out


def _run_error_here(run: Run, step: Step) -> bool:
    return isinstance(run.error, dict) and run.error.get("node") == step.node


def _utc_ms(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _retries(events: list[dict[str, Any]]) -> int:
    return sum(1 for e in events if e["type"] == "step.retrying")


def inspect_step(run: Run, step: Step) -> dict[str, Any]:
    """Everything the inspector shows for `step`, bounded (see the module's constants)."""
    before, after = _states(run, step)
    input_state = before.state if before is not None else {}
    window = _window(run, step)
    events, events_cut = _step_events(run, window)
    neighbours = Step.objects.filter(run=run)
    prev_index = (
        neighbours.filter(index__lt=step.index)
        .order_by("-index")
        .values_list("index", flat=True)
        .first()
    )
    next_index = (
        neighbours.filter(index__gt=step.index).order_by("index").values_list("index", flat=True)
    ).first()
    spec_nodes = run.graph.spec.get("nodes") if isinstance(run.graph.spec, dict) else None
    node_spec = (spec_nodes or {}).get(step.node)
    update = step.update if isinstance(step.update, dict) else {}
    return {
        "run": run,
        "step": step,
        "title": f"Step {step.index} ({step.node})",
        "not_run": None,
        "via_branch": None,
        "kind": node_spec.get("kind", "") if isinstance(node_spec, dict) else "",
        "node_spec": pretty(node_spec, NODE_SPEC_CHARS) if node_spec is not None else None,
        "duration": fmt_ms(step.duration_ms),
        "started": _utc_ms(step.started_at),
        "finished": _utc_ms(step.finished_at),
        "usage": _usage(step),
        "error": _error(step, run, is_last=next_index is None),
        "retries": _retries(events),
        "llm_requests": _llm_requests(run, window),
        "input_state": pretty(input_state, STATE_CHARS),
        "input_from": before.step_index if before is not None else None,
        "update": pretty(update) if update else None,
        "update_cuts": truncated_paths(update),
        "diff": diff_states(input_state, after.state) if after is not None else None,
        "artifacts": list(Artifact.objects.filter(run=run, step=step).order_by("id")),
        "events": events,
        "events_cut": events_cut,
        "prev_index": prev_index,
        "next_index": next_index,
    }


def _render(request: HttpRequest, run: Run, context: dict[str, Any]) -> HttpResponse:
    if request.GET.get("partial"):
        return render(request, "runs/_step_inspector.html", context)
    return page(request, "runs/step_detail.html", context, nav="runs")


@require_GET
@tenant_view
def step_detail(request: HttpRequest, run_id: uuid.UUID, index: int) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    run = services.get_run(ctx.tenant, run_id)
    step = Step.objects.filter(run=run, index=index).first()
    if step is None:
        raise Http404(f"Run {run.public_id} has no step {index}.")
    return _render(request, run, inspect_step(run, step))


def _now_at(run: Run, node: str) -> str:
    """What the run is doing at a node that has no step yet: "waiting", "running" or ""."""
    waiting = run.waiting_for if isinstance(run.waiting_for, dict) else {}
    if waiting.get("node") == node and run.status in ("waiting", "paused"):
        return str(waiting.get("kind") or "waiting")
    position = run.position if isinstance(run.position, dict) else {}
    if position.get("node") == node and run.status in ("queued", "running", "cancelling"):
        return "running"
    return ""


def _parallel_of(run: Run, node: str) -> str | None:
    """The parallel node that runs `node` as a branch: branches have no steps of their own."""
    nodes = run.graph.spec.get("nodes") if isinstance(run.graph.spec, dict) else None
    for name, spec in (nodes or {}).items():
        is_parallel = isinstance(spec, dict) and spec.get("kind") == "parallel"
        if is_parallel and node in (spec.get("branches") or []):
            return str(name)
    return None


@require_GET
@tenant_view
def node_step(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """The latest step of the node named by `?node=` (what a click on the diagram opens)."""
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    run = services.get_run(ctx.tenant, run_id)
    node = request.GET.get("node", "")[: MAX_NODE_NAME + 1]
    via = None
    step = None
    if len(node) <= MAX_NODE_NAME:
        step = Step.objects.filter(run=run, node=node).order_by("-index").first()
        if step is None and (parent := _parallel_of(run, node)) is not None:
            step = Step.objects.filter(run=run, node=parent).order_by("-index").first()
            via = node if step is not None else None
    if step is None:
        # Not an error: a pending node is a normal thing to click on.
        context = {"run": run, "not_run": node, "title": f"Node {node}", "now": _now_at(run, node)}
        return _render(request, run, context)
    return _render(request, run, {**inspect_step(run, step), "via_branch": via})
