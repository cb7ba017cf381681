"""The live feed: each daphne process receives every event once and hands it to its consumers.

Two sources, one per configuration:
- Embedded default (no REDIS_URL): the in-memory channel layer cannot cross processes and
  `append_events` pushes nothing, so a `Poller` tails the Event table by id: one indexed query
  per tick (RUNYARD["EVENT_POLL_SECONDS"]), and one on the live frames' table, however many
  clients are connected.
- REDIS_URL set: `events.publish` sends every transaction's events on commit (one Redis
  PUBLISH per group with the pub/sub layer). A relay (runs/relay.py) subscribes to each group
  that has viewers in this process once, not once per consumer, and returns from `watch` once
  Redis has confirmed the subscription.

Live frames (runs/live_frames.py: `llm.delta` and `branch.*` while a step runs, no seq) take
the same two ways: the poller also tails the LiveFrame table, the relay also passes on
`run.live` messages. They reach only inboxes that asked for them (`Inbox(accepts_live=True)`:
the run websocket), as hints keyed LIVE_KEY.

Either way an event is encoded to JSON once per process and put in the inbox of every local
consumer of its group; an idle live consumer takes the next seqs straight from `put` and
writes them to its socket there and then (no task wake-up per consumer and event).
Consumers take no channel-layer channel of their own. Measured with 100 runs x 10 viewers
(bench/events.py), one channel per consumer cost too much: the in-memory layer scans every
channel and group on each send and receive and deep-copies each message per member;
channels-redis delivers a separate message per consumer through one serial receive
loop per process, several Redis round trips each.

Websocket consumers, SSE streams and `/wait` calls (runs/api/live.py) all subscribe here.
The feed starts lazily on the first subscriber and stops after a minute without
subscribers. `subscribe()` returns only once the feed will see the group's next event (the
poller knows where the table ends; the relay has joined the group), so a consumer that replays
from the database after subscribing cannot miss one in between. Inboxes are bounded: a
consumer that falls that far behind is told to catch up from the database instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections
from django.db.models import Max, Q

from observability import hooks as observe
from runs.events import (
    TENANT_EVENT_PREFIX,
    run_group,
    tenant_group,
    to_tenant_wire,
    to_wire,
)
from runs.live_frames import TAIL_BATCH, FrameTail
from runs.models import Event

log = logging.getLogger(__name__)

# Rows read per query; a full batch means more are waiting, so the next tick starts at once.
BATCH = 500
# On PostgreSQL ids are handed out before commit, so a transaction can commit a lower id after
# a higher one was read. Skipped ids are looked for again this long (then taken as rolled back).
HOLE_SECONDS = 10.0
MAX_HOLES = 2000
IDLE_EXIT_SECONDS = 60.0
ERROR_BACKOFF_SECONDS = 1.0
# A consumer's inbox holds this many batches before it is told to catch up from the database.
INBOX_BATCHES = 1000
# Consumers set this as their channel_layer_alias: no alias of that name exists, so channels
# gives them no channel (and no receive loop) of their own.
NO_CHANNEL_LAYER = "runyard.no-channel-layer"

Hint = tuple[int, str]  # (seq on a run stream or event id on a tenant stream, JSON frame)
# The key of a live frame's hint: no seq (stored seqs and event ids start at 1).
LIVE_KEY = 0


def enabled() -> bool:
    """Whether events reach this process only through the poller (nothing pushes on commit)."""
    return not settings.REDIS_URL


def encode(events: Iterable[Mapping[str, Any]], key: str) -> list[Hint]:
    return [(e[key], json.dumps(e, separators=(",", ":"))) for e in events]


class Inbox:
    """One consumer's hints, in arrival order. Bounded: past `limit` batches it is emptied and
    marked `overflowed`, and its consumer reads what it missed from the database.

    `direct`, when given, is offered each batch first while nothing else waits here and the
    consumer is not working through an earlier one: it handles what it can at once (no task
    wake-up per consumer and event) and returns the hints it left, which queue as usual."""

    def __init__(
        self,
        limit: int = INBOX_BATCHES,
        direct: Callable[[list[Hint]], list[Hint]] | None = None,
        *,
        accepts_live: bool = False,
    ) -> None:
        self.limit = limit
        self.accepts_live = accepts_live
        self.direct = direct
        self.batches: collections.deque[list[Hint]] = collections.deque()
        self.overflowed = False
        self.busy = False  # from get() until the consumer calls done()
        self._ready = asyncio.Event()

    def put(self, hints: list[Hint]) -> None:
        if self.direct is not None and not (self.batches or self.overflowed or self.busy):
            hints = self.direct(hints)
            if not hints:
                return
        if len(self.batches) >= self.limit:
            self.batches.clear()
            self.overflowed = True
        else:
            self.batches.append(hints)
        self._ready.set()

    async def get(self) -> tuple[list[Hint], bool]:
        """Everything waiting (at least one batch, or the overflow flag); call done() after."""
        await self._ready.wait()
        self._ready.clear()
        hints = [h for batch in self.batches for h in batch]
        self.batches.clear()
        overflowed, self.overflowed = self.overflowed, False
        self.busy = True
        return hints, overflowed

    def done(self) -> None:
        self.busy = False

    def lost(self) -> None:
        """The feed may have missed events: the consumer reads them from the database."""
        self.batches.clear()
        self.overflowed = True
        self._ready.set()


class Feed:
    """One per process and event loop: local subscriptions and their fan-out."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.members: dict[str, set[Inbox]] = {}
        self.watching: dict[str, asyncio.Future[None]] = {}
        self.ready = asyncio.Event()
        self.closing = False
        self.idle_since = time.monotonic()
        self.task: asyncio.Task[None] = self.loop.create_task(self._run(), name=type(self).__name__)

    @property
    def subscribers(self) -> int:
        return sum(len(inboxes) for inboxes in self.members.values())

    async def subscribe(self, group: str, inbox: Inbox) -> None:
        self.members.setdefault(group, set()).add(inbox)
        if group not in self.watching:
            self.watching[group] = asyncio.ensure_future(self.watch(group))
        watching = self.watching[group]
        try:
            await asyncio.shield(watching)
        except Exception:
            if self.watching.get(group) is watching:
                del self.watching[group]  # the next subscriber tries again
            self.unsubscribe(group, inbox)
            raise
        await self.ready.wait()

    def unsubscribe(self, group: str, inbox: Inbox) -> None:
        inboxes = self.members.get(group)
        if inboxes is None:
            return
        inboxes.discard(inbox)
        if not inboxes:
            del self.members[group]
            watching = self.watching.pop(group, None)
            if watching is not None:
                self.loop.create_task(self._unwatch_after(group, watching))
        if not self.members:
            self.idle_since = time.monotonic()

    def deliver(self, group: str, hints: list[Hint]) -> None:
        inboxes = self.members.get(group)
        if not inboxes:
            return
        for inbox in inboxes:
            inbox.put(hints)
        # Idle consumers wrote them to their sockets in `put`: the lag to the clients, once.
        observe.events_delivered(group, hints)

    def deliver_live(self, group: str, frames: Iterable[Mapping[str, Any]]) -> None:
        """Live frames (no seq) to the group's inboxes that take them, encoded once."""
        inboxes = [i for i in self.members.get(group, ()) if i.accepts_live]
        if inboxes:
            hints = [(LIVE_KEY, json.dumps(f, separators=(",", ":"))) for f in frames]
            for inbox in inboxes:
                inbox.put(hints)

    async def watch(self, group: str) -> None:
        """Start receiving `group`'s events (returns once they will be seen)."""

    async def unwatch(self, group: str) -> None:
        """Stop receiving `group`'s events."""

    async def _unwatch_after(self, group: str, watching: asyncio.Future[None]) -> None:
        with contextlib.suppress(Exception):
            await watching
        if group not in self.watching:  # nobody subscribed again meanwhile
            await self.unwatch(group)

    def _idle(self) -> bool:
        # Decided without an await, so subscribe() sees `closing` before it could join.
        if not self.members and time.monotonic() - self.idle_since > IDLE_EXIT_SECONDS:
            self.closing = True
        return self.closing

    async def _run(self) -> None:
        raise NotImplementedError


class EventTail:
    """The poller's database side: where the table ended, and the rows added since.

    Synchronous; the poller runs it on a thread of its own, so its one connection is never
    queued behind consumers' queries.
    """

    def __init__(self) -> None:
        self.last_id: int | None = None
        self.holes: dict[int, float] = {}  # id -> when it was first seen missing

    def start(self) -> None:
        self.last_id = Event.objects.aggregate(last=Max("id"))["last"] or 0

    def fetch(self, limit: int = BATCH) -> list[Event]:
        """New rows in id order: one query on the primary key (range plus the open holes)."""
        if self.last_id is None:
            self.start()
        assert self.last_id is not None
        now = time.monotonic()
        self.holes = {i: t for i, t in self.holes.items() if now - t < HOLE_SECONDS}
        where = Q(id__gt=self.last_id)
        if self.holes:
            where |= Q(id__in=list(self.holes))
        rows = list(
            Event.objects.filter(where)
            .select_related("run", "tenant")
            .only("id", "seq", "type", "data", "created_at", "run__public_id", "tenant__public_id")
            .order_by("id")[:limit]
        )
        for row in rows:
            if row.pk <= self.last_id:
                self.holes.pop(row.pk, None)
                continue
            if row.pk > self.last_id + 1:
                for missing in range(max(self.last_id + 1, row.pk - MAX_HOLES), row.pk):
                    self.holes[missing] = now
            self.last_id = row.pk
        if len(self.holes) > MAX_HOLES:
            for old in sorted(self.holes)[: len(self.holes) - MAX_HOLES]:
                del self.holes[old]
        return rows


def hints_for(rows: list[Event]) -> dict[str, list[Hint]]:
    """A batch of rows as hints per group: run groups by seq, tenant groups (run.*) by id."""
    runs: dict[str, list[Mapping[str, Any]]] = {}
    tenants: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        run_hex = row.run.public_id.hex
        runs.setdefault(run_group(run_hex), []).append(to_wire(row, run_hex))
        if row.type.startswith(TENANT_EVENT_PREFIX):
            group = tenant_group(row.tenant.public_id.hex)
            tenants.setdefault(group, []).append(to_tenant_wire(row, run_hex))
    out = {group: encode(events, "seq") for group, events in runs.items()}
    out.update({group: encode(events, "id") for group, events in tenants.items()})
    return out


class Poller(Feed):
    """Embedded default: tails the Event table and delivers new rows to local subscribers."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.tail = EventTail()
        self.frames = FrameTail()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runyard-events")
        self.ticks = 0
        super().__init__()

    async def db(self, fn: Any, *args: Any) -> Any:
        return await self.loop.run_in_executor(self.executor, fn, *args)

    def _start(self) -> None:
        self.tail.start()
        self.frames.start()

    def _fetch(self) -> tuple[list[Event], list[tuple[int, str, str]]]:
        close_old_connections()
        return self.tail.fetch(), self.frames.fetch()

    async def _run(self) -> None:
        try:
            while not self.ready.is_set():
                try:
                    await self.db(self._start)
                    self.ready.set()
                except Exception:
                    log.exception("event poller could not start; retrying")
                    await asyncio.sleep(ERROR_BACKOFF_SECONDS)
            while not self._idle():
                rows, frames = await self._tick()
                if len(rows) < BATCH and len(frames) < TAIL_BATCH:
                    await asyncio.sleep(self.interval)
        finally:
            self.closing = True
            self.ready.set()
            await asyncio.shield(self._release())

    async def tick(self) -> list[Event]:
        """One round: the new events (then the new live frames) to local subscribers."""
        rows, _ = await self._tick()
        return rows

    async def _tick(self) -> tuple[list[Event], list[tuple[int, str, str]]]:
        try:
            rows, frames = await self.db(self._fetch)
        except Exception:
            log.exception("event poller query failed")
            await self.db(connections.close_all)
            await asyncio.sleep(ERROR_BACKOFF_SECONDS)
            return [], []
        self.ticks += 1
        # Frames first: most were published before the rows read with them committed.
        live: dict[str, list[Hint]] = {}
        for _, group, payload in frames:
            live.setdefault(group, []).append((LIVE_KEY, payload))
        for group, hints in live.items():
            for inbox in self.members.get(group, ()):
                if inbox.accepts_live:
                    inbox.put(hints)
        if rows:
            for group, hints in hints_for(rows).items():
                self.deliver(group, hints)
        return rows, frames

    async def _release(self) -> None:
        try:
            await self.db(connections.close_all)
        finally:
            self.executor.shutdown(wait=False)


_feed: Feed | None = None


def current() -> Feed | None:
    return _feed


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def subscribe(group: str, inbox: Inbox) -> None:
    """Deliver `group`'s events to `inbox` from now on; starts this process's feed if needed."""
    global _feed
    loop = asyncio.get_running_loop()
    if _feed is None or _feed.closing or _feed.loop is not loop:
        if enabled():
            _feed = Poller(settings.RUNYARD["EVENT_POLL_SECONDS"])
        else:
            from runs.relay import make_relay  # it builds on this module

            _feed = make_relay()
    await _feed.subscribe(group, inbox)


def unsubscribe(group: str, inbox: Inbox) -> None:
    feed = _feed
    if feed is not None and feed.loop is _running_loop():
        feed.unsubscribe(group, inbox)


async def stop() -> None:
    """Stop this loop's feed and close its connection (tests; process shutdown)."""
    global _feed
    feed = _feed
    if feed is None or feed.loop is not _running_loop():
        return
    _feed = None
    feed.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feed.task
