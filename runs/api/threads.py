"""Threads: runs that share state, and the checkpoints new runs can fork from."""

from __future__ import annotations

import uuid

from django.http import HttpRequest
from ninja import Query, Router, Status

from runs import selectors, services
from runs.api.common import caller, ensure_json_size, member
from runs.models import Checkpoint, Thread
from runs.schemas import CheckpointListOut, PageIn, ThreadIn, ThreadOut
from tenants.schemas import error_responses

router = Router(tags=["threads"])


@router.post(
    "/threads",
    response={201: ThreadOut, **error_responses(400, 403, 413)},
    summary="Create a thread",
    description=(
        "A thread groups runs that share state: each run on it starts from the state its "
        "previous run left. Needs the member role."
    ),
)
def create_thread(request: HttpRequest, payload: ThreadIn | None = None) -> Status[Thread]:
    ctx = member(request)
    payload = payload or ThreadIn()
    ensure_json_size(payload.state, "state")
    ensure_json_size(payload.metadata, "metadata")
    thread = services.create_thread(ctx.tenant, metadata=payload.metadata, state=payload.state)
    return Status(201, thread)


@router.get(
    "/threads/{thread_id}",
    response={200: ThreadOut, **error_responses(404)},
    summary="Get a thread",
)
def get_thread(request: HttpRequest, thread_id: uuid.UUID) -> Thread:
    ctx = caller(request)
    return services.get_thread(ctx.tenant, thread_id)


@router.get(
    "/threads/{thread_id}/checkpoints",
    response={200: CheckpointListOut, **error_responses(400, 404)},
    summary="List a thread's checkpoints",
    description=(
        "The state after every step of every run on the thread, oldest first. Start a run "
        "with `from_checkpoint` to fork from one (time travel)."
    ),
)
def list_checkpoints(
    request: HttpRequest, thread_id: uuid.UUID, page: Query[PageIn]
) -> selectors.Page[Checkpoint]:
    ctx = caller(request)
    thread = services.get_thread(ctx.tenant, thread_id)
    return selectors.checkpoint_page(thread, cursor=page.cursor, limit=page.limit)
