"""Websocket streams: one run's event log, or the run lifecycle of a whole tenant.

Routes (runs/routing.py):
    /ws/runs/<run id>/?after=<seq>   every event of one run, in seq order; after defaults to 0
    /ws/tenant/?after=<event id>     the `run.*` events of every run of the caller's tenant, in
                                     id order; without `after`, only what happens from now on

Server frames (JSON text; client frames are ignored):
    {"type": "event", "run", "seq", "event", "data", "ts"}   a WireEvent (runs/events.py); on
        the tenant stream a TenantWireEvent, whose "id" is the cursor to resume with
    {"type": "live", "run", "event", "data", "ts"}   run stream only: an event shown while its
        step still runs (`llm.delta` pieces, `branch.started|completed|failed`), with no seq
        (runs/live_frames.py). The same events are stored when the step commits and then
        arrive again as "event" frames with a seq (the stored `llm.delta` holds the whole
        text): show live frames as provisional and replace them by the stored ones. Live
        frames are best-effort: never replayed, and dropped rather than queued for a client
        whose outbox is full. `data.step` is the index of the step that streamed it.
    {"type": "synced", "seq": n}   the replay is done; n is the last seq (tenant: id) sent
    {"type": "ping"}               every `ping_seconds`
    {"type": "overflow", "after": n}  just before close 4008 (best effort)

Close codes. The handshake is accepted before the checks, because a code can only travel in a
close frame (a refused handshake is a bare HTTP 403):
    4400  `after` is not a non-negative integer
    4401  not authenticated: no valid `Authorization: Bearer <key>` and no session user
    4403  authenticated, but the role may not read runs
    4401/4403 later, while streaming: the key was revoked or deleted, the user deactivated
          (4401); the tenant deactivated or the user no longer its member (4403). Checked every
          RUNYARD["STREAM_RECHECK_SECONDS"] (runs/streams.py).
    4404  no such run, or another tenant's run (the same answer, like the API's 404)
    4008  too slow: more than `max_buffered` frames waited for the client. Reconnect with
          ?after=<last seq received>; the close reason (where the server carries it) and the
          overflow frame say what the server last handed to the socket.

Delivery. The Event table is the log. Live events arrive as hints through this process's feed
(runs/live.py: the embedded poller; runs/relay.py: a Redis subscriber with Redis), which
may lose some. A consumer subscribes to its group before replaying from the
database, so nothing falls between replay and live. The run stream remembers the last seq
sent: a hint at or below it is dropped, one beyond the next is preceded by the missing events
read from the database, and every `ping_seconds` the run's `last_seq` is checked in case the
final hint was lost. The tenant stream, where ids have gaps, reads the database on each hint
instead (`run.*` events are few), and looks back a few seconds for ids that PostgreSQL
committed after higher ones.

Queries run on the streams' thread pool (runs/streams.py `db`), not channels' one shared
thread, so one consumer's slow replay does not hold up other tenants' handshakes and streams.

Frames leave through a bounded per-consumer outbox drained by one writer task that waits while
the transport is backed up (config/asgi.py exposes daphne's socket buffer). When nothing waits
in the outbox, frames go straight to the socket (`SendFlow.write_texts`: a transaction's events
in one write) without waking the writer, and the writer too hands over what has queued up in
one write. Hints are handled without waiting for the client, so a slow client never slows the
feed, workers or other clients: its outbox fills, and past `max_buffered` frames (or
`max_buffered_bytes`) it is closed with 4008.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
from collections.abc import Sequence
from typing import Any, Literal, Protocol, TypedDict
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from runs import live, streams
from tenants.auth import TenantContext, context_from_scope_sync

log = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4008

# Where config/asgi.py puts the transport's backpressure for this connection.
FLOW_SCOPE_KEY = "runyard.send_flow"
# The most the writer hands the socket in one write when frames have queued up.
WRITE_BATCH_FRAMES = 64
WRITE_BATCH_BYTES = 256 << 10


class SyncedFrame(TypedDict):
    type: Literal["synced"]
    seq: int


class PingFrame(TypedDict):
    type: Literal["ping"]


class OverflowFrame(TypedDict):
    type: Literal["overflow"]
    after: int


class SendFlow(Protocol):
    """Backpressure of one connection's transport (see config/asgi.py)."""

    @property
    def paused(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    async def wait_writable(self) -> None: ...

    def write_texts(self, texts: Sequence[str]) -> bool:
        """Put text frames on the socket now, in order, if it takes them; False: use `send`."""


def parse_after(scope: dict[str, Any]) -> int | None | Literal[False]:
    """`after` from the query string: an int, None when absent, False when malformed."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after")
    if not values or values[-1] == "":
        return None
    try:
        after = int(values[-1])
    except ValueError:
        return False
    return after if after >= 0 else False


class StreamConsumer(AsyncWebsocketConsumer):
    """What both streams share: auth, the feed's inbox, the bounded outbox and its writer."""

    # No channel-layer channel per consumer: the process's feed receives each event once.
    channel_layer_alias = live.NO_CHANNEL_LAYER
    # Whether this stream shows live frames (runs/live_frames.py) besides stored events.
    accepts_live: bool = False
    ping_seconds: float = 15.0
    page_size: int = 500

    # --- subclass hooks -----------------------------------------------------------------------

    async def open_stream(self, ctx: TenantContext) -> int | None:
        """Resolve what to stream; set `self.group` and `self.last`. A close code refuses."""
        raise NotImplementedError

    async def replay(self) -> None:
        """Send what is stored after `self.last` (the outbox waits for the client here)."""
        raise NotImplementedError

    async def on_hints(self, hints: list[live.Hint]) -> None:
        """Live events from the feed, in order (called under the lock)."""
        raise NotImplementedError

    async def resync(self) -> None:
        """Send what the feed lost (called under the lock)."""
        raise NotImplementedError

    # --- lifecycle ----------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._subscribed: tuple[str, live.Inbox] | None = None
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._shutdown()

    async def connect(self) -> None:
        self.last = 0  # the last seq (tenant: id) put in the outbox
        self.written = 0  # the last seq (tenant: id) handed to the transport
        self.max_buffered: int = settings.RUNYARD.get("WS_MAX_BUFFERED", 1000)
        self.max_buffered_bytes: int = settings.RUNYARD.get("WS_MAX_BUFFERED_BYTES", 8 << 20)
        self._outbox: collections.deque[tuple[int | None, str]] = collections.deque()
        self._outbox_bytes = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closed = False
        self._stalled = False  # the writer waits for the transport
        self._flow: SendFlow | None = self.scope.get(FLOW_SCOPE_KEY)
        await self.accept()
        ctx = await streams.db(context_from_scope_sync)(self.scope)
        if ctx is None:
            return await self._refuse(CLOSE_UNAUTHENTICATED)
        if not ctx.can_read:
            return await self._refuse(CLOSE_FORBIDDEN)
        self.ctx = ctx
        code = await self.open_stream(ctx)
        if code is not None:
            return await self._refuse(code)
        # Subscribed first: the feed sees the group's next event from here on, so the replay
        # below overlaps with live delivery rather than leaving a gap before it.
        inbox = live.Inbox(accepts_live=self.accepts_live)
        await live.subscribe(self.group, inbox)
        self._subscribed = (self.group, inbox)
        self._writer = asyncio.create_task(self._write_loop())
        self._tasks.append(self._writer)
        async with self._lock:
            await self.replay()
            self._push(SyncedFrame(type="synced", seq=self.last), None)
        inbox.direct = self.take_now  # live from here: hints in order go out as they arrive
        self._tasks.append(asyncio.create_task(self._pump(inbox)))
        self._tasks.append(asyncio.create_task(self._heartbeat_loop()))
        self._tasks.append(asyncio.create_task(self._recheck_loop()))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        return  # the streams are one-way; clients resume by reconnecting with ?after=

    async def _refuse(self, code: int) -> None:
        self._closed = True
        await self.close(code=code)

    async def _shutdown(self) -> None:
        self._closed = True
        if self._subscribed is not None:
            live.unsubscribe(*self._subscribed)
            self._subscribed = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def take_now(self, hints: list[live.Hint]) -> list[live.Hint]:
        """Handle live hints synchronously where nothing needs waiting for; the rest back.
        The run stream overrides this; by default everything goes through the pump."""
        return hints

    async def _pump(self, inbox: live.Inbox) -> None:
        while not self._closed:
            hints, overflowed = await inbox.get()
            try:
                async with self._lock:
                    if overflowed:
                        await self.resync()  # the inbox dropped hints: read them instead
                    if hints and not self._closed:
                        await self.on_hints(hints)
            finally:
                inbox.done()

    async def _recheck_loop(self) -> None:
        """Close the stream once its credential no longer holds (runs/streams.py)."""
        interval = streams.recheck_seconds()
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                verdict = await streams.recheck(self.ctx)
            except Exception:  # noqa: BLE001 - a database hiccup is no revocation; next time
                log.warning("websocket credential recheck failed", exc_info=True)
                continue
            if verdict is not None and not self._closed:
                code = CLOSE_UNAUTHENTICATED if verdict == "unauthenticated" else CLOSE_FORBIDDEN
                log.info("closing websocket %s: %s", self.scope.get("path"), verdict)
                await self._revoke(code)

    def _stop_writing(self) -> None:
        """Mark the socket closed and drop what waits for it: nothing more is written."""
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
        self._outbox.clear()
        self._outbox_bytes = 0
        self._drained.set()

    async def _revoke(self, code: int) -> None:
        """Close now with `code`, dropping whatever the client has not read yet."""
        self._stop_writing()
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.close(code=code)

    async def _heartbeat_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.ping_seconds)
            try:
                async with self._lock:
                    await self.resync()
            except Exception:
                log.exception("websocket resync failed")
            if not self._closed and not self._full():
                self._push(PingFrame(type="ping"), None)

    # --- outbox -------------------------------------------------------------------------------

    def _full(self) -> bool:
        return (
            len(self._outbox) >= self.max_buffered or self._outbox_bytes >= self.max_buffered_bytes
        )

    def _push_text(self, text: str, key: int | None) -> None:
        if not self._outbox and not self._stalled and self._write_now([(key, text)]):
            return  # nothing queued or in flight: straight to the socket, no writer wake-up
        self._outbox.append((key, text))
        self._outbox_bytes += len(text)
        self._drained.clear()
        self._wake.set()

    def _push(self, frame: Any, key: int | None) -> None:
        self._push_text(json.dumps(frame, separators=(",", ":")), key)

    async def _push_live(self, text: str, key: int) -> bool:
        """Queue a live frame, or close 4008 if the client is too far behind. False: closed."""
        while self._full() and not self._closed:
            if self._stalled or self._writer is None or self._writer.done():
                await self._overflow()
                return False
            await asyncio.sleep(0)  # the writer is runnable: a burst, not a slow client
        if self._closed:
            return False
        self._push_text(text, key)
        self.last = key
        return True

    def _push_frame(self, text: str) -> None:
        """A live frame (no seq): out now, or dropped if the client is behind (its stored
        copy follows with the step's events)."""
        if not self._closed and not self._full():
            self._push_text(text, None)

    async def _push_paced(self, text: str, key: int) -> bool:
        """Queue a replayed frame, waiting while the outbox is full. False: closed."""
        while self._full() and not self._closed:
            await self._drained.wait()
        if self._closed:
            return False
        self._push_text(text, key)
        self.last = key
        return True

    async def _write_loop(self) -> None:
        sent = 0
        try:
            while True:
                if not self._outbox:
                    self._drained.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                flow = self._flow
                if flow is not None and flow.paused:
                    self._stalled = True
                    await flow.wait_writable()
                    self._stalled = False
                    if flow.closed:
                        return  # the connection is gone
                    continue
                batch = self._next_batch()
                if self._write_now(batch):
                    taken = len(batch)
                else:  # one frame through a `send` that waits (not daphne's)
                    taken = 1
                    key, text = batch[0]
                    self._stalled = True
                    await self.send(text_data=text)
                    self._stalled = False
                    if key is not None:
                        self.written = key
                for _ in range(taken):
                    self._outbox_bytes -= len(self._outbox.popleft()[1])
                if (
                    len(self._outbox) <= self.max_buffered // 2
                    and self._outbox_bytes <= self.max_buffered_bytes // 2
                ):
                    self._drained.set()
                sent += taken
                if sent >= WRITE_BATCH_FRAMES:
                    sent = 0
                    await asyncio.sleep(0)  # a long backlog must not hog the loop
        finally:
            self._closed = True
            self._drained.set()

    def _next_batch(self) -> list[tuple[int | None, str]]:
        """The outbox's first frames (at least one), as many as one socket write should take."""
        batch: list[tuple[int | None, str]] = []
        size = 0
        for key, text in itertools.islice(self._outbox, WRITE_BATCH_FRAMES):
            if batch and size + len(text) > WRITE_BATCH_BYTES:
                break
            batch.append((key, text))
            size += len(text)
        return batch

    def _write_now(self, frames: Sequence[tuple[int | None, str]]) -> bool:
        """Frames straight to the socket, in one write; False: the flow took none of them."""
        flow = self._flow
        if flow is None or self._closed or not flow.write_texts([text for _, text in frames]):
            return False
        keys = [key for key, _ in frames if key is not None]
        if keys:
            self.written = keys[-1]
        return True

    async def _overflow(self) -> None:
        """Close a client that fell too far behind, telling it where to resume."""
        self._stop_writing()
        after = self.written
        log.info("closing slow websocket %s after %s", self.scope.get("path"), after)
        try:
            await self.send(text_data=json.dumps(OverflowFrame(type="overflow", after=after)))
            await self.close(code=CLOSE_TOO_SLOW, reason=f"after={after}")
        except Exception:  # noqa: BLE001 - the client may be gone already
            log.debug("overflow close failed", exc_info=True)


def encode(frame: Any) -> str:
    return json.dumps(frame, separators=(",", ":"))
