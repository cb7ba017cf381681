"""Long polls: wait for a run to settle, and stream its events as Server-Sent Events.

Both are async views, so a waiting client holds no worker thread. Neither polls the database
per client: each subscribes to the run's group on this process's live feed (runs/live.py: one
poller per process without Redis, one Redis subscriber per process with it), reads the
database once for what was stored before, then waits on its inbox. The database is still the
source of truth: a gap in seqs or an inbox that overflowed is read back from it, and every
RUNYARD["STREAM_RECHECK_SECONDS"] one cheap read (the run's `last_seq` and status) catches a
hint the feed lost, alongside the credential's re-authorisation (runs/streams.py): a revoked
key or removed member ends the stream, or answers the wait with 401/403.

A tenant holds at most RUNYARD["MAX_STREAMS_PER_TENANT"] streams and waits at once in one
daphne process; past it the answer is 429 `limit_exceeded.max_streams` with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Header, Query, Router
from ninja.errors import HttpError

from runs import live, selectors, services, streams
from runs.api.common import caller
from runs.events import TENANT_EVENT_PREFIX, run_group
from runs.models import Event, Run
from runs.schemas import EventOut, RunOut
from runs.status import TERMINAL
from tenants.auth import TenantContext
from tenants.schemas import error_responses

router = Router(tags=["runs"])

WAIT_CAP_SECONDS = 60.0
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


class RunFollower:
    """One request's subscription to a run's group on this process's live feed."""

    def __init__(self, run: Run) -> None:
        self.group = run_group(run.public_id.hex)
        self.inbox = live.Inbox()

    async def __aenter__(self) -> RunFollower:
        # Subscribed before the first read: the feed sees every event committed after it.
        await live.subscribe(self.group, self.inbox)
        return self

    async def __aexit__(self, *exc: object) -> None:
        live.unsubscribe(self.group, self.inbox)

    async def next(self, timeout: float) -> tuple[list[live.Hint], bool]:
        """The hints that arrived (waiting up to `timeout`), and whether some were lost."""
        if timeout <= 0 and not self.inbox.batches and not self.inbox.overflowed:
            return [], False
        try:
            hints, overflowed = await asyncio.wait_for(self.inbox.get(), max(timeout, 0))
        except TimeoutError:
            return [], False
        self.inbox.done()
        return hints, overflowed


def _refused(verdict: streams.Verdict) -> HttpError:
    if verdict == "unauthenticated":
        return HttpError(
            401, "The credential is no longer valid: the key was revoked or the user deactivated."
        )
    return HttpError(403, "The caller may no longer read this tenant's runs.")


def _changes_status(hint: live.Hint) -> bool:
    return str(json.loads(hint[1]).get("event", "")).startswith(TENANT_EVENT_PREFIX)


async def wait_until_settled(ctx: TenantContext, run: Run, timeout: float) -> None:
    """Return once the run is settled or `timeout` has passed; HttpError if the caller lost
    access meanwhile. Status is read again only when a `run.*` event arrives (a status
    change always commits one), the feed lost events, or at each recheck."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if selectors.is_settled(run.status) or timeout <= 0:
        return
    interval = streams.recheck_seconds()
    async with RunFollower(run) as follower:
        status = await selectors.arun_status(run.pk)
        next_check = loop.time() + interval
        while not selectors.is_settled(status):
            now = loop.time()
            if now >= deadline:
                return
            hints, lost = await follower.next(min(deadline, next_check) - now)
            read = lost or any(_changes_status(hint) for hint in hints)
            if loop.time() >= next_check:
                if verdict := await streams.recheck(ctx):
                    raise _refused(verdict)
                next_check = loop.time() + interval
                read = True
            if read:
                status = await selectors.arun_status(run.pk)


@router.get(
    "/runs/{run_id}/wait",
    response={200: RunOut, **error_responses(403, 404, 429)},
    summary="Wait for a run",
    description=(
        "Returns the run as soon as it has finished or needs a human (`waiting` or "
        "`paused`), or when `timeout` seconds (at most 60) have passed, whichever is first; "
        "check `status` to tell which. Counts toward the tenant's concurrent streams (429 "
        "`limit_exceeded.max_streams` past the limit)."
    ),
)
async def wait_for_run(
    request: HttpRequest,
    run_id: uuid.UUID,
    timeout: float = Query(
        30.0, ge=0, allow_inf_nan=False, description="Seconds to wait at most; capped at 60."
    ),
) -> RunOut:
    ctx = caller(request)
    run = await _get_run(request, run_id)
    slot = streams.slots.acquire(ctx.tenant.pk)
    try:
        await wait_until_settled(ctx, run, min(timeout, WAIT_CAP_SECONDS))
    finally:
        slot.release()
    run = await _get_run(request, run_id)  # 404 if it was deleted meanwhile
    return await sync_to_async(RunOut.from_orm)(run)


def sse_message(event: Event) -> str:
    payload = EventOut.from_orm(event).model_dump(mode="json")
    return _sse(event.seq, payload)


def _sse(seq: int, payload: dict[str, Any]) -> str:
    return f"id: {seq}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


def sse_from_hint(text: str) -> tuple[str, str]:
    """A feed hint (a websocket WireEvent) as an SSE message shaped like EventOut, and its type."""
    wire = json.loads(text)
    ts = str(wire["ts"])
    if ts.endswith("+00:00"):
        ts = ts[:-6] + "Z"  # as pydantic writes UTC, so replayed and live events look alike
    data = wire["data"] if isinstance(wire["data"], dict) else {"value": wire["data"]}
    payload = {"seq": wire["seq"], "type": wire["event"], "data": data, "ts": ts}
    return _sse(wire["seq"], payload), wire["event"]


class EventStream:
    """One SSE client: stored events after `after`, then the feed's, until the run's terminal
    event, the caller losing access, or STREAM_MAX_SECONDS; heartbeats in between."""

    def __init__(self, ctx: TenantContext, run: Run, after: int, slot: streams.Slot) -> None:
        self.ctx = ctx
        self.run = run
        self.last = after
        self.slot = slot
        self.ended = False

    async def stored(self, upto: int | None = None) -> AsyncIterator[str]:
        """Messages for the stored events after `last` (up to `upto`); sets `ended` at the
        terminal event."""
        while not self.ended and (upto is None or self.last < upto):
            events = await selectors.aevents_after(self.run.pk, self.last, STREAM_BATCH)
            for event in events:
                if upto is not None and event.seq > upto:
                    return
                yield sse_message(event)
                self.last = event.seq
                if event.type in TERMINAL_EVENTS:
                    self.ended = True
                    return
            if len(events) < STREAM_BATCH:
                return

    async def resync(self) -> AsyncIterator[str]:
        """What the feed may have lost; `ended` once the run is gone or finished."""
        row = await Run.objects.filter(pk=self.run.pk).values_list("last_seq", "status").afirst()
        if row is None:
            self.ended = True  # the run was deleted
            return
        last_seq, status = row
        if last_seq > self.last:
            async for message in self.stored(last_seq):
                yield message
        if status in TERMINAL:
            async for message in self.stored():  # the terminal event commits with the status
                yield message
            self.ended = True

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for message in self._messages():
                yield message
        finally:
            self.slot.release()

    async def _messages(self) -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        loop = asyncio.get_running_loop()
        interval = streams.recheck_seconds()
        async with RunFollower(self.run) as follower:
            async for message in self.stored():
                yield message
            async for message in self.resync():
                yield message
            now = loop.time()
            ends_at, next_check, last_sent = now + STREAM_MAX_SECONDS, now + interval, now
            while not self.ended and (now := loop.time()) < ends_at:
                wake = min(ends_at, next_check, last_sent + HEARTBEAT_SECONDS)
                hints, lost = await follower.next(wake - now)
                if lost:
                    async for message in self.stored():
                        yield message
                        last_sent = loop.time()
                for seq, text in hints:
                    if self.ended or seq <= self.last:
                        continue  # replayed or read back already
                    if seq > self.last + 1:
                        async for message in self.stored(seq - 1):
                            yield message
                        if self.ended or seq <= self.last:
                            continue
                    message, kind = sse_from_hint(text)
                    yield message
                    self.last, last_sent = seq, loop.time()
                    self.ended = kind in TERMINAL_EVENTS
                if self.ended:
                    return
                if loop.time() >= next_check:
                    if await streams.recheck(self.ctx):
                        return  # the caller lost access: the stream just ends
                    async for message in self.resync():
                        yield message
                        last_sent = loop.time()
                    next_check = loop.time() + interval
                if not self.ended and loop.time() - last_sent >= HEARTBEAT_SECONDS:
                    yield ": heartbeat\n\n"
                    last_sent = loop.time()


@router.get(
    "/runs/{run_id}/events/stream",
    response={200: None, **error_responses(404, 429)},
    summary="Stream a run's events (SSE)",
    description=(
        "Server-Sent Events: replays stored events after `Last-Event-ID` (or `after`), "
        "then streams new ones as the run makes them, and ends after the run's terminal "
        "event, or after 15 minutes, or soon after the caller's key is revoked or access "
        "removed. Each message is `id: <seq>` and `data: {seq, type, data, ts}`; comment "
        "lines are heartbeats. EventSource clients reconnect with `Last-Event-ID` and resume "
        "where they left off. Counts toward the tenant's concurrent streams (429 "
        "`limit_exceeded.max_streams` past the limit)."
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
    ctx = caller(request)
    run = await _get_run(request, run_id)
    start = last_event_id if last_event_id is not None else after
    slot = streams.slots.acquire(ctx.tenant.pk)
    stream = EventStream(ctx, run, start, slot)
    response = StreamingHttpResponse(aiter(stream), content_type="text/event-stream")
    # The stream releases its slot when it ends. A response never read gives it back when
    # the handler closes it, or, dropped without that (the client gone before it was sent),
    # when it is collected.
    response._resource_closers.append(slot.release)  # type: ignore[attr-defined]
    weakref.finalize(response, slot.release)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would buffer the stream otherwise
    return response
