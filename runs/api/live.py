"""Long polls: wait for a run to settle, and stream its events as Server-Sent Events.

Both are async views that poll the database with cheap indexed reads and `await
asyncio.sleep` in between, so a waiting client holds no worker thread; the database is the
source of truth, which works the same with one daphne process or many, with or without Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Header, Query, Router

from runs import selectors, services
from runs.api.common import caller
from runs.models import Event, Run
from runs.schemas import EventOut, RunOut
from runs.status import TERMINAL
from tenants.schemas import error_responses

router = Router(tags=["runs"])

WAIT_CAP_SECONDS = 60.0
# Polls start fast (a short run answers quickly) and back off to this interval.
WAIT_POLL_MIN_SECONDS = 0.05
WAIT_POLL_MAX_SECONDS = 1.0
STREAM_POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
# A stream ends after this long even if the run goes on; EventSource clients reconnect with
# Last-Event-ID and lose nothing, and no connection lives forever behind a load balancer.
STREAM_MAX_SECONDS = 900.0
STREAM_BATCH = 500
TERMINAL_EVENTS = frozenset(f"run.{status}" for status in TERMINAL)

# One Server-Sent Event as OpenAPI 3.1 documents an event stream: the fields of one event.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "data"],
    "properties": {
        "id": {"type": "string", "description": "The event's seq.", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "enum": ["message"]},
        "data": {
            "type": "string",
            "description": "JSON: `{seq, type, data, ts}`.",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/EventOut"},
        },
        "retry": {"type": "integer"},
    },
}


async def _get_run(request: HttpRequest, run_id: uuid.UUID) -> Run:
    return await sync_to_async(services.get_run)(caller(request).tenant, run_id)


@router.get(
    "/runs/{run_id}/wait",
    response={200: RunOut, **error_responses(404)},
    summary="Wait for a run",
    description=(
        "Returns the run as soon as it has finished or needs a human (`waiting` or "
        "`paused`), or when `timeout` seconds (at most 60) have passed, whichever is first; "
        "check `status` to tell which."
    ),
)
async def wait_for_run(
    request: HttpRequest,
    run_id: uuid.UUID,
    timeout: float = Query(
        30.0, ge=0, allow_inf_nan=False, description="Seconds to wait at most; capped at 60."
    ),
) -> RunOut:
    run = await _get_run(request, run_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout, WAIT_CAP_SECONDS)
    status: str | None = run.status
    interval = WAIT_POLL_MIN_SECONDS
    while not selectors.is_settled(status):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, WAIT_POLL_MAX_SECONDS)
        status = await selectors.arun_status(run.pk)
    run = await _get_run(request, run_id)  # 404 if it was deleted meanwhile
    return await sync_to_async(RunOut.from_orm)(run)


def sse_message(event: Event) -> str:
    payload = EventOut.from_orm(event).model_dump(mode="json")
    return f"id: {event.seq}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def event_stream(run_pk: int, after: int) -> AsyncIterator[str]:
    """Stored events after `after`, then new ones as they are stored, until the run's
    terminal event; a comment line every HEARTBEAT_SECONDS keeps proxies from timing out."""
    yield "retry: 2000\n\n"
    last, last_sent = after, time.monotonic()
    ends_at = last_sent + STREAM_MAX_SECONDS
    finishing = False
    while time.monotonic() < ends_at:
        events = await selectors.aevents_after(run_pk, last, STREAM_BATCH)
        for event in events:
            yield sse_message(event)
            last, last_sent = event.seq, time.monotonic()
            if event.type in TERMINAL_EVENTS:
                return
        if events:
            continue
        if finishing:
            return  # terminal, and nothing more was stored after a last look
        status = await selectors.arun_status(run_pk)
        if status is None:
            return  # the run was deleted
        if status in TERMINAL:
            # The terminal event commits with the status; one more read picks it up.
            finishing = True
            continue
        if time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
            yield ": heartbeat\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(STREAM_POLL_SECONDS)


@router.get(
    "/runs/{run_id}/events/stream",
    response={200: None, **error_responses(404)},
    summary="Stream a run's events (SSE)",
    description=(
        "Server-Sent Events: replays stored events after `Last-Event-ID` (or `after`), "
        "then streams new ones as the run makes them, and ends after the run's terminal "
        "event, or after 15 minutes. Each message is `id: <seq>` and "
        "`data: {seq, type, data, ts}`; comment lines are heartbeats. EventSource clients "
        "reconnect with `Last-Event-ID` and resume where they left off."
    ),
    openapi_extra={
        "responses": {
            200: {
                "description": "An event stream; the schema describes one event.",
                "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
            }
        }
    },
)
async def stream_events(
    request: HttpRequest,
    run_id: uuid.UUID,
    after: int = Query(0, ge=0, le=2**31 - 1, description="Start after this seq."),
    last_event_id: int | None = Header(
        None,
        alias="Last-Event-ID",
        ge=0,
        le=2**31 - 1,
        description="Sent by reconnecting EventSource clients; wins over `after`.",
    ),
) -> StreamingHttpResponse:
    run = await _get_run(request, run_id)
    start = last_event_id if last_event_id is not None else after
    response = StreamingHttpResponse(event_stream(run.pk, start), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would buffer the stream otherwise
    return response
