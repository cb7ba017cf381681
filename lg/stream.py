"""A run's stored events as the protocol's Server-Sent Events, resumable from any event id.

Every SSE event is `id: <seq>.<k>` (the k-th protocol event made from the run's stored event
`seq`), `event: <mode>`, `data: <json>`. The first is `metadata` {run_id, attempt}, whose id
is the cursor the stream starts after; a reconnect with `Last-Event-ID` gets exactly what
followed that id, without a second `metadata` (`-1` replays the run from its start,
`metadata` first). Events are read from the database (the source of truth), woken by this
process's live feed (runs/live.py), so a stream serves the same whichever daphne process a
reconnect lands on. LLM tokens also arrive live, before their step commits, with ids
`<cursor>~<n>` (a resume from one starts after the cursor, so the stored copies come then);
the stored copies are skipped on the connection that showed them live.

How stored events become stream modes: lg/translate.py. The stream ends with `end` after the
run's terminal event, or once the run waits on a human or is paused and has nothing more
stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.http import StreamingHttpResponse

from lg.errors import not_found
from lg.translate import TERMINAL_EVENTS, Translator
from runs import live, selectors, streams
from runs.events import run_group
from runs.models import Run
from runs.status import TERMINAL
from tenants.auth import TenantContext

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STREAM_MAX_SECONDS = 900.0
POLL_SECONDS = 1.0
BATCH = 200
SETTLED = frozenset({*TERMINAL, "waiting", "paused"})
Cursor = tuple[int, int]  # (seq, k): everything up to and including part k of seq was sent
WHOLE = 1 << 30  # k meaning "every part of that seq"


def parse_last_event_id(value: str | None) -> Cursor | None:
    """`-1`: from the start; `<seq>` or `<seq>.<k>`: after that (`~<n>` after it names a live
    token sent there). None when absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip().partition("~")[0]  # a live token's id: resume after its cursor
    if value == "-1":
        return (0, WHOLE)
    seq, _, k = value.partition(".")
    if not seq.isdigit() or (k and not k.isdigit()) or len(value) > 24:
        return None
    return (int(seq), int(k) if k else WHOLE)


def cursor_id(cursor: Cursor) -> str:
    return str(cursor[0]) if cursor[1] == WHOLE else f"{cursor[0]}.{cursor[1]}"


def sse(event_id: str | None, name: str, data: Any) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"))
    return f"{head}event: {name}\ndata: {body}\n\n"


class RunStream:
    """One SSE client of one run; see the module docstring."""

    def __init__(
        self,
        ctx: TenantContext,
        run: Run,
        modes: list[str],
        cursor: Cursor,
        slot: streams.Slot,
        *,
        cancel_on_disconnect: bool = False,
        resumed: bool = False,
        subgraphs: bool = False,
    ) -> None:
        self.ctx = ctx
        self.resumed = resumed
        self.subgraphs = subgraphs
        self.run = run
        self.modes = modes
        self.cursor = cursor
        self.slot = slot
        self.cancel_on_disconnect = cancel_on_disconnect
        self.ended = False

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for message in self._messages():
                yield message
        finally:
            self.slot.release()
            if self.cancel_on_disconnect and not self.ended:
                # The client went away before the run settled: cancel it off this (possibly
                # cancelled) task, without waiting.
                loop = asyncio.get_running_loop()
                loop.run_in_executor(None, _cancel_quietly, self.run.pk)

    async def _messages(self) -> AsyncIterator[str]:
        if not self.resumed:  # a reconnect has it already; a replay from -1 gets it again
            metadata = {"run_id": str(self.run.public_id), "attempt": 1}
            yield sse(cursor_id(self.cursor), "metadata", metadata)
        translator = await streams.db(Translator)(
            self.run, self.modes, self.cursor[0], subgraphs=self.subgraphs
        )
        loop = asyncio.get_running_loop()
        interval = streams.recheck_seconds()
        after = self.cursor[0] - (0 if self.cursor[1] == WHOLE else 1)
        group = run_group(self.run.public_id.hex)
        tokens = {"messages-tuple", "messages", "events"} & set(self.modes)
        inbox = live.Inbox(accepts_live=bool(tokens))
        await live.subscribe(group, inbox)
        try:
            now = loop.time()
            ends_at, next_check, last_sent = now + STREAM_MAX_SECONDS, now + interval, now
            live_sent = 0
            while loop.time() < ends_at:
                events = await selectors.aevents_after(self.run.pk, after, BATCH)
                if events:
                    batches = await streams.db(translator.parts)(events)
                    for seq, parts in batches:
                        for k, (name, data) in enumerate(parts):
                            if (seq, k) <= self.cursor:
                                continue
                            self.cursor = (seq, k)
                            yield sse(cursor_id(self.cursor), name, data)
                            last_sent = loop.time()
                        after = seq
                    if any(e.type in TERMINAL_EVENTS for e in events):
                        self.ended = True
                        yield sse(cursor_id((after, WHOLE)), "end", None)
                        return
                    if len(events) == BATCH:
                        continue
                row = (
                    await Run.objects.filter(pk=self.run.pk)
                    .values_list("last_seq", "status")
                    .afirst()
                )
                if row is None or (row[1] in SETTLED and after >= row[0]):
                    self.ended = True
                    yield sse(cursor_id((after, WHOLE)), "end", None)
                    return
                if after < row[0]:
                    continue
                wake = min(
                    ends_at, next_check, last_sent + HEARTBEAT_SECONDS, loop.time() + POLL_SECONDS
                )
                try:
                    hints, _lost = await asyncio.wait_for(inbox.get(), max(0.0, wake - loop.time()))
                    inbox.done()
                except TimeoutError:
                    hints = []
                for key, text in hints:
                    if key == live.LIVE_KEY:
                        for name, data in translator.live(json.loads(text)):
                            live_sent += 1
                            yield sse(f"{cursor_id(self.cursor)}~{live_sent}", name, data)
                            last_sent = loop.time()
                if loop.time() >= next_check:
                    if await streams.recheck(self.ctx):
                        return  # the caller lost access: the stream just ends
                    next_check = loop.time() + interval
                if loop.time() - last_sent >= HEARTBEAT_SECONDS:
                    yield ": heartbeat\n\n"
                    last_sent = loop.time()
        finally:
            live.unsubscribe(group, inbox)


def _cancel_quietly(run_pk: int) -> None:
    from django.db import close_old_connections

    from runs import services

    try:
        run = Run.objects.select_related("tenant", "graph", "thread").get(pk=run_pk)
        if run.status not in TERMINAL:
            services.cancel_run(run, action="interrupt", by="lg:on_disconnect")
    except Exception:  # best effort: the run may have ended or gone meanwhile
        log.warning("lg: could not cancel run %s on disconnect", run_pk, exc_info=True)
    finally:
        close_old_connections()


def stream_response(
    ctx: TenantContext,
    run: Run,
    modes: list[str],
    cursor: Cursor,
    *,
    location: str | None,
    content_location: str | None,
    cancel_on_disconnect: bool = False,
    resumed: bool = False,
    subgraphs: bool = False,
    slot: streams.Slot | None = None,
) -> StreamingHttpResponse:
    """The SSE response; `slot` is the tenant's stream slot when the caller took it already
    (before starting the run, so that a refused stream leaves no run behind)."""
    slot = slot or streams.slots.acquire(ctx.tenant.pk)
    stream = RunStream(
        ctx,
        run,
        modes,
        cursor,
        slot,
        cancel_on_disconnect=cancel_on_disconnect,
        resumed=resumed,
        subgraphs=subgraphs,
    )
    response = StreamingHttpResponse(aiter(stream), content_type="text/event-stream")
    response._resource_closers.append(slot.release)  # type: ignore[attr-defined]
    weakref.finalize(response, slot.release)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    if location:
        response["Location"] = location
    if content_location:
        response["Content-Location"] = content_location
    return response


async def arun(run_pk: int) -> Run:
    """The run again, with what shaping it needs; 404 once it was deleted meanwhile."""

    def read() -> Run:
        run = Run.objects.select_related("tenant", "graph", "thread").filter(pk=run_pk).first()
        if run is None:
            raise not_found("Run", run_pk)
        return run

    return await sync_to_async(read)()
