"""Runs: start, list, read, control, and what they leave behind (steps, events, artifacts)."""

from __future__ import annotations

import uuid

from django.http import FileResponse, HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Header, Path, Query, Router, Status

from runs import selectors, services
from runs.api.common import caller, ensure_json_size, member
from runs.api.run_list import run_list_response
from runs.models import Artifact, Event, Run, Step
from runs.schemas import (
    NO_NUL,
    ApprovalIn,
    ArtifactListOut,
    CancelIn,
    EventListOut,
    GuidanceIn,
    InputIn,
    PageIn,
    RunFiltersIn,
    RunIn,
    RunListOut,
    RunOut,
    StepListOut,
)
from tenants.models import Tenant
from tenants.schemas import error_responses

router = Router(tags=["runs"])
artifacts_router = Router(tags=["artifacts"])

METADATA_PREFIX = "metadata."
# A node name (runs.engine.specfields.NODE_NAME), `@`, and an occurrence or `*`.
APPROVAL_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}@(?:[0-9]{1,9}|\*)$"

# Content types a browser may show inline from the API's origin; anything else (HTML, SVG,
# XML...) could run script there, so it is served as a download.
INLINE_TYPES = frozenset(
    {"text/plain", "application/json", "image/png", "image/jpeg", "image/gif", "image/webp"}
)


def _current(tenant: Tenant, run: Run) -> Run:
    """The run as stored now, with the relations its representation needs."""
    return selectors.run_out(tenant, run.public_id)


@router.post(
    "/runs",
    response={
        200: RunOut,
        201: RunOut,
        **error_responses(400, 403, 404, 409, 413, 429),
    },
    summary="Start a run",
    description=(
        "Validates the input against the graph's `input_schema` (422 `invalid_input`, each "
        "problem in `details.problems`: a rule of the graph, not of this document), applies "
        "the tenant's "
        "admission limits (429 with `Retry-After`), and queues the run (201). "
        "With an `Idempotency-Key` header, repeating the same request returns the run it "
        "created (200) and the same key with another body is a 409 "
        "`idempotency_key_reused`. On a thread with an active run, `multitask_strategy` "
        "decides (`reject`: 409 `thread_busy`). Input is limited to `MAX_INPUT_BYTES` "
        "(256 KB; 413). Needs the member role."
    ),
)
def create_run(
    request: HttpRequest,
    payload: RunIn,
    idempotency_key: str | None = Header(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Makes retries safe: the same key and body return the same run.",
    ),
) -> Status[Run]:
    ctx = member(request)
    ensure_json_size(payload.input, "input")
    ensure_json_size(payload.metadata, "metadata")
    started = timezone.now()
    run = services.create_run(
        ctx.tenant,
        graph=payload.graph,
        version=payload.version,
        input=payload.input,
        thread_id=str(payload.thread_id) if payload.thread_id else None,
        multitask_strategy=payload.multitask_strategy,
        from_checkpoint=str(payload.from_checkpoint) if payload.from_checkpoint else None,
        metadata=payload.metadata,
        idempotency_key=idempotency_key or "",
        by=ctx.actor_label,
        webhook=payload.webhook or "",
        webhook_include_state=payload.webhook_include_state,
        priority=payload.priority,
        created_by=ctx.principal,
    )
    if run.created_at < started:  # a replayed idempotent request: the run as it is now
        return Status(200, _current(ctx.tenant, run))
    # Just written, queued: the run in hand is what the database holds (no read back).
    return Status(201, run)


def _metadata_pairs(request: HttpRequest, filters: RunFiltersIn) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, values in request.GET.lists():
        if key.startswith(METADATA_PREFIX) and len(key) > len(METADATA_PREFIX):
            pairs.extend((key[len(METADATA_PREFIX) :], value) for value in values)
    if (filters.metadata_key is None) != (filters.metadata_value is None):
        missing = "metadata_value" if filters.metadata_value is None else "metadata_key"
        raise services.ValidationFailed(
            "metadata_key and metadata_value go together.",
            code="invalid_filter",
            details={"field": missing},
        )
    if filters.metadata_key is not None and filters.metadata_value is not None:
        pairs.append((filters.metadata_key, filters.metadata_value))
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        raise services.ValidationFailed(
            "Metadata filters cannot hold U+0000.", code="invalid_filter", details={}
        )
    return pairs


@router.get(
    "/runs",
    response={200: RunListOut, **error_responses(400)},
    summary="List runs",
    description=(
        "Newest first. Filters combine with AND: `status` (repeatable or comma-separated), "
        "`graph`, `thread_id`, `created_after`/`created_before`, and metadata: "
        "`metadata_key`+`metadata_value`, or any number of `metadata.<key>=<value>` "
        "parameters (e.g. `metadata.customer=acme`). Cursor pagination is keyset-based, so "
        "runs created while you page never repeat or shift items; pass `next_cursor` back "
        "as `cursor` with the same filters (400 `invalid_cursor` for one no list returned). "
        "`metadata_key` without `metadata_value`, or the reverse, is a 422 `invalid_filter`."
    ),
)
def list_runs(request: HttpRequest, filters: Query[RunFiltersIn]) -> HttpResponse:
    ctx = caller(request)
    criteria = selectors.RunFilters(
        statuses=[str(s) for s in filters.status],
        graph=filters.graph,
        thread_id=filters.thread_id,
        created_after=filters.created_after,
        created_before=filters.created_before,
        metadata=_metadata_pairs(request, filters),
    )
    # Written directly, as RunListOut describes it (runs/api/run_list.py).
    return run_list_response(ctx.tenant, criteria, cursor=filters.cursor, limit=filters.limit)


@router.get(
    "/runs/{run_id}",
    response={200: RunOut, **error_responses(404)},
    summary="Get a run",
)
def get_run(request: HttpRequest, run_id: uuid.UUID) -> Run:
    ctx = caller(request)
    return selectors.run_out(ctx.tenant, run_id)


# --- controls ------------------------------------------------------------------------------------

CONTROL_ERRORS = error_responses(400, 403, 404, 409)


@router.post(
    "/runs/{run_id}/cancel",
    response={200: RunOut, **CONTROL_ERRORS},
    summary="Cancel a run",
    description=(
        "Queued, waiting and paused runs are cancelled at once; a running run becomes "
        "`cancelling` and stops at its next safe point, unless its worker stopped "
        "heartbeating (two heartbeat intervals) or its lease expired: then it is cancelled at "
        "once and that worker is fenced out (`error.worker_lost`). Idempotent on cancelling and "
        "cancelled runs; a run that ended otherwise is a 409 `run_finished`. "
        "Needs the member role."
    ),
)
def cancel_run(request: HttpRequest, run_id: uuid.UUID, payload: CancelIn | None = None) -> Run:
    ctx = member(request)
    run = services.get_run(ctx.tenant, run_id)
    action = payload.action if payload is not None else "interrupt"
    return _current(ctx.tenant, services.cancel_run(run, action=action, by=ctx.actor_label))


@router.post(
    "/runs/{run_id}/pause",
    response={200: RunOut, **CONTROL_ERRORS},
    summary="Pause a run",
    description="At once unless running; a running run pauses at its next step boundary.",
)
def pause_run(request: HttpRequest, run_id: uuid.UUID) -> Run:
    ctx = member(request)
    run = services.get_run(ctx.tenant, run_id)
    return _current(ctx.tenant, services.pause_run(run, by=ctx.actor_label))


@router.post(
    "/runs/{run_id}/resume",
    response={200: RunOut, **CONTROL_ERRORS},
    summary="Resume a paused or interrupted run",
    description=(
        "A paused run goes back to waiting if it was waiting, else it is queued. An "
        "interrupted run is queued to continue from its last checkpoint, admitted like a new "
        "run (429 over the tenant's limits). 409 `not_paused` otherwise."
    ),
)
def resume_run(request: HttpRequest, run_id: uuid.UUID) -> Run:
    ctx = member(request)
    run = services.get_run(ctx.tenant, run_id)
    return _current(ctx.tenant, services.resume_run(run, by=ctx.actor_label, interrupted=True))


@router.post(
    "/runs/{run_id}/retry",
    response={200: RunOut, **error_responses(403, 404, 409, 429)},
    summary="Retry a failed run",
    description=(
        "Queues a failed run again at the node that failed, with the state from before it "
        "(an interrupted run: from its last checkpoint), recording `run.resurrected`. "
        "Admitted like a new run (429 over the tenant's limits). 409 `not_retryable` for "
        "other statuses, child runs, runs that stopped where no node follows or on a per-run "
        "limit (fork from a step instead), and `thread_busy` when the thread has another "
        "active run. Needs the member role."
    ),
)
def retry_run(request: HttpRequest, run_id: uuid.UUID) -> Run:
    ctx = member(request)
    run = services.get_run(ctx.tenant, run_id)
    return _current(ctx.tenant, services.retry_run(run, by=ctx.actor_label))


@router.post(
    "/runs/{run_id}/input",
    response={200: RunOut, **error_responses(400, 403, 404, 409, 413)},
    summary="Answer an input request",
    description=(
        "Gives `value` to the run's current input request, or to the one `input_id` names "
        "(which may be sent before the run asks). Needs the member role."
    ),
)
def submit_input(request: HttpRequest, run_id: uuid.UUID, payload: InputIn) -> Run:
    ctx = member(request)
    ensure_json_size(payload.value, "value")
    run = services.get_run(ctx.tenant, run_id)
    run = services.submit_input(run, payload.value, input_id=payload.input_id, by=ctx.actor_label)
    return _current(ctx.tenant, run)


@router.post(
    "/runs/{run_id}/guidance",
    response={200: RunOut, **CONTROL_ERRORS},
    summary="Send guidance",
    description="Appends `message` to the state's `guidance` list before the run's next node.",
)
def add_guidance(request: HttpRequest, run_id: uuid.UUID, payload: GuidanceIn) -> Run:
    ctx = member(request)
    run = services.get_run(ctx.tenant, run_id)
    return _current(ctx.tenant, services.add_guidance(run, payload.message, by=ctx.actor_label))


@router.post(
    "/runs/{run_id}/approvals/{approval_id}",
    response={200: RunOut, **error_responses(400, 403, 404, 409, 413)},
    summary="Approve or reject",
    description=(
        "Decides the approval `approval_id`: `node@N` for the N-th time the run reaches "
        "that node, or `node@*` for every time. A decision may arrive before the run gets "
        "there. `patch` is merged into the state; `route` picks which edge an approval "
        "takes (422 `invalid_route` when no edge of the node leads there). Needs the member "
        "role."
    ),
)
def decide_approval(
    request: HttpRequest,
    run_id: uuid.UUID,
    payload: ApprovalIn,
    approval_id: str = Path(
        ...,
        min_length=3,
        max_length=150,
        pattern=APPROVAL_ID_PATTERN,
        description="`node@N` or `node@*`, e.g. `approve@1`.",
    ),
) -> Run:
    ctx = member(request)
    ensure_json_size(payload.patch, "patch")
    run = services.get_run(ctx.tenant, run_id)
    run = services.decide_approval(
        run,
        approval_id,
        decision=payload.decision,
        patch=payload.patch,
        route=payload.route,
        by=ctx.actor_label,
    )
    return _current(ctx.tenant, run)


# --- what a run leaves behind ------------------------------------------------------------------


@router.get(
    "/runs/{run_id}/steps",
    response={200: StepListOut, **error_responses(400, 404)},
    summary="List a run's steps",
    description="In step order, with timings, usage and errors.",
)
def list_steps(
    request: HttpRequest, run_id: uuid.UUID, page: Query[PageIn]
) -> selectors.Page[Step]:
    ctx = caller(request)
    run = services.get_run(ctx.tenant, run_id)
    return selectors.step_page(run, cursor=page.cursor, limit=page.limit)


@router.get(
    "/runs/{run_id}/events",
    response={200: EventListOut, **error_responses(404)},
    summary="List a run's events",
    description=(
        "Stored events with `seq` greater than `after`, in order. `seq` is gap-free from 1, "
        "so a client that saw seq n resumes with `after=n`."
    ),
)
def list_events(
    request: HttpRequest,
    run_id: uuid.UUID,
    after: int = Query(0, ge=0, le=2**31 - 1, description="Return events after this seq."),
    limit: int = Query(100, ge=1, le=1000),
) -> selectors.Page[Event]:
    ctx = caller(request)
    run = services.get_run(ctx.tenant, run_id)
    return selectors.event_page(run, after=after, limit=limit)


@router.get(
    "/runs/{run_id}/artifacts",
    response={200: ArtifactListOut, **error_responses(400, 404)},
    summary="List a run's artifacts",
    description="Files the run's nodes stored; fetch each from its `content_url`.",
)
def list_artifacts(
    request: HttpRequest, run_id: uuid.UUID, page: Query[PageIn]
) -> selectors.Page[Artifact]:
    ctx = caller(request)
    run = services.get_run(ctx.tenant, run_id)
    return selectors.artifact_page(run, cursor=page.cursor, limit=page.limit)


@artifacts_router.get(
    "/artifacts/{artifact_id}/content",
    response={200: None, **error_responses(404)},
    url_name="get_artifact_content",
    summary="Download an artifact",
    description="Streams the stored file with its content type.",
    openapi_extra={
        "responses": {
            200: {
                "description": "The artifact's bytes.",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        }
    },
)
def get_artifact_content(request: HttpRequest, artifact_id: uuid.UUID) -> FileResponse:
    ctx = caller(request)
    artifact = selectors.get_artifact(ctx.tenant, artifact_id)
    try:
        content = artifact.file.open("rb")
    except FileNotFoundError as exc:
        raise services.NotFound(f"Artifact {artifact_id} has no stored content.") from exc
    response = FileResponse(
        content,
        content_type=artifact.content_type,
        as_attachment=artifact.content_type.split(";")[0].strip().lower() not in INLINE_TYPES,
        filename=artifact.name,
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response
