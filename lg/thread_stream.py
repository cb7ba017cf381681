"""A thread's stream (`GET /threads/{id}/stream`, the SDK's `threads.join_stream`): the
thread's runs one after another, each as its own run stream (lg/stream.py) would serve it.

It starts at the run active on the thread when it opens, at what comes next (as a run join
without an id does), or, with no run active, waits for the next run. Each run opens with its
`metadata` {run_id, attempt} and closes, once it has ended (a run waiting on a human is
followed until it goes on and ends: a resume is the same run in Runyard), with `run_done`
{run_id, thread_id, status}; then the stream follows the thread's next run. Modes:
`run_modes` (each run's events in the stream modes it was started with), `lifecycle` (only
`metadata` and `run_done`). It lasts until the client leaves, or STREAM_MAX_SECONDS.

Ids are `<run id>:<run stream id>` (`<run id>:done` for `run_done`): `Last-Event-ID` resumes
after that event of that run, on any web process.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse

from lg import shapes
from lg.errors import Refused
from lg.models import RunOptions
from lg.stream import (
    HEARTBEAT_SECONDS,
    POLL_SECONDS,
    STREAM_MAX_SECONDS,
    WHOLE,
    Cursor,
    RunStream,
    parse_last_event_id,
    sse,
)
from runs import streams
from runs.models import Run, Thread
from runs.status import TERMINAL
from tenants.auth import TenantContext

THREAD_MODES = ("run_modes", "lifecycle")
DONE = "done"


def thread_modes(asked: list[str]) -> list[str]:
    modes = list(dict.fromkeys(asked or ["run_modes"]))
    unknown = [m for m in modes if m not in THREAD_MODES]
    if unknown:
        raise Refused(
            f"Thread stream_mode {unknown} is not supported; Runyard streams a thread's runs "
            f"as {list(THREAD_MODES)} (state updates come as each run's `values`)."
        )
    return modes


def parse_thread_event_id(value: str | None) -> tuple[uuid.UUID, Cursor | None] | None:
    """(run, cursor in it) of a thread stream's event id; cursor None after its `run_done`.
    None when absent or not one of ours."""
    if not value or ":" not in value or len(value) > 80:
        return None
    run_part, _, rest = value.strip().partition(":")
    try:
        run_id = uuid.UUID(run_part)
    except ValueError:
        return None
    if rest == DONE:
        return run_id, None
    cursor = parse_last_event_id(rest)
    return (run_id, cursor) if cursor is not None else None


def _run_row(run_pk: int) -> Run | None:
    return Run.objects.select_related("tenant", "graph", "thread").filter(pk=run_pk).first()


def _modes_of(run: Run) -> list[str]:
    options = RunOptions.objects.filter(run=run).values_list("stream_mode", flat=True).first()
    return list(options or ["values"])


def _next_run(thread_pk: int, after_pk: int) -> tuple[bool, Run | None]:
    """(whether the thread still exists, its first root run after `after_pk`)."""
    if not Thread.objects.filter(pk=thread_pk).exists():
        return False, None
    run = (
        Run.objects.filter(thread_id=thread_pk, parent__isnull=True, pk__gt=after_pk)
        .select_related("tenant", "graph", "thread")
        .order_by("pk")
        .first()
    )
    return True, run


def _start(thread: Thread, last_event_id: str | None) -> tuple[Run | None, Cursor | None, int]:
    """Where the stream begins: (run, cursor in it or None for "what comes next", the run pk
    runs are looked for after when there is no run)."""
    parsed = parse_thread_event_id(last_event_id)
    if parsed is not None:
        run_id, cursor = parsed
        run = Run.objects.filter(thread=thread, public_id=run_id, parent__isnull=True).first()
        if run is not None:
            if cursor is None:  # after its run_done: the thread's next run
                return None, None, run.pk
            return _run_row(run.pk), cursor, run.pk
    active = (
        Run.objects.filter(thread=thread, parent__isnull=True)
        .exclude(status__in=TERMINAL)
        .order_by("pk")
        .first()
    )
    if active is not None:
        return _run_row(active.pk), None, active.pk
    newest = Run.objects.filter(thread=thread).order_by("-pk").values_list("pk", flat=True).first()
    return None, None, newest or 0


class ThreadStream:
    def __init__(
        self,
        ctx: TenantContext,
        thread: Thread,
        modes: list[str],
        last_event_id: str | None,
        slot: streams.Slot,
    ) -> None:
        self.ctx = ctx
        self.thread = thread
        self.lifecycle_only = modes == ["lifecycle"]
        self.last_event_id = last_event_id
        self.slot = slot
        self.cursor: Cursor = (0, WHOLE)

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for message in self._messages():
                yield message
        finally:
            self.slot.release()

    async def _messages(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + STREAM_MAX_SECONDS
        run, cursor, after_pk = await streams.db(_start)(self.thread, self.last_event_id)
        resumed = cursor is not None
        last_sent = loop.time()
        next_check = loop.time() + streams.recheck_seconds()
        while loop.time() < ends_at:
            if run is None:
                exists, run = await streams.db(_next_run)(self.thread.pk, after_pk)
                if not exists:
                    return  # the thread was deleted
                if run is None:
                    if loop.time() >= next_check:
                        if await streams.recheck(self.ctx):
                            return
                        next_check = loop.time() + streams.recheck_seconds()
                    if loop.time() - last_sent >= HEARTBEAT_SECONDS:
                        yield ": heartbeat\n\n"
                        last_sent = loop.time()
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                cursor, resumed = (0, WHOLE), False  # a run started since: all of it
            async for message in self._follow(run, cursor, resumed):
                yield message
                last_sent = loop.time()
            latest = await streams.db(_run_row)(run.pk)
            if latest is None:  # deleted meanwhile
                after_pk, run = run.pk, None
                continue
            if latest.status in TERMINAL:
                done = {
                    "run_id": str(latest.public_id),
                    "thread_id": str(self.thread.public_id),
                    "status": shapes.RUN_STATUS.get(latest.status, "error"),
                }
                yield sse(f"{latest.public_id}:{DONE}", "run_done", done)
                last_sent = loop.time()
                after_pk, run = run.pk, None
                continue
            # Waiting on a human (or paused): the same run goes on once answered.
            cursor, resumed = self.cursor, True
            if latest.last_seq <= cursor[0]:
                if loop.time() - last_sent >= HEARTBEAT_SECONDS:
                    yield ": heartbeat\n\n"
                    last_sent = loop.time()
                await asyncio.sleep(POLL_SECONDS)
            if await streams.recheck(self.ctx):
                return

    async def _follow(self, run: Run, cursor: Cursor | None, resumed: bool) -> AsyncIterator[str]:
        """The run's stream from `cursor` (None: what comes next), ids prefixed with the
        run's, without its `end`; leaves `self.cursor` where it stopped."""
        modes = [] if self.lifecycle_only else await streams.db(_modes_of)(run)
        start = cursor if cursor is not None else (run.last_seq, WHOLE)
        inner = RunStream(self.ctx, run, modes, start, self.slot, resumed=resumed)
        prefix = f"id: {run.public_id}:"
        try:
            async for message in inner._messages():
                if message.startswith("id: "):
                    if "\nevent: end\n" in message:
                        continue
                    message = prefix + message[len("id: ") :]
                yield message
        finally:
            self.cursor = inner.cursor


def thread_stream_response(
    ctx: TenantContext, thread: Thread, modes: list[str], last_event_id: str | None
) -> StreamingHttpResponse:
    slot = streams.slots.acquire(ctx.tenant.pk)
    stream = ThreadStream(ctx, thread, modes, last_event_id, slot)
    response = StreamingHttpResponse(aiter(stream), content_type="text/event-stream")
    response._resource_closers.append(slot.release)  # type: ignore[attr-defined]
    weakref.finalize(response, slot.release)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
