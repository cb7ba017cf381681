"""The event log: gap-free `seq` per run, written in the change's transaction, pushed on commit.

The database is the source of truth; the channel layer only wakes clients up (it is
at-most-once). With Redis, events are pushed to the run's and tenant's groups on commit
(`publish`: with channels-redis' pub/sub layer, straight from the committing thread). In the
embedded default the in-memory layer cannot cross processes, so each daphne process runs one
poller (runs/live.py) that tails this table by id and fans out locally.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypedDict

import redis
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from runs.models import Event, Run
from runs.perprocess import PerProcess
from runs.sql import check_at_end, insert_rows, is_plain, send_guarded_update, send_rows

log = logging.getLogger(__name__)


EVENT_FIELDS = ["id", "run_id", "tenant_id", "seq", "type", "data", "created_at"]

# Lifecycle events also go to the tenant's stream (dashboard lists).
TENANT_EVENT_PREFIX = "run."


class WireEvent(TypedDict):
    """What websocket clients receive for one event."""

    type: Literal["event"]
    run: str
    seq: int
    event: str
    data: dict[str, Any]
    ts: str


class Fenced(Exception):
    """The run moved on (another epoch or status): this worker must write nothing more."""


class TenantWireEvent(WireEvent):
    """A lifecycle event on the tenant stream: `id` (the Event's id) is the resume cursor."""

    id: int


def run_group(run_public_hex: str) -> str:
    return f"run.{run_public_hex}"


def tenant_group(tenant_public_hex: str) -> str:
    return f"tenant.{tenant_public_hex}"


def to_wire(event: Event, run_public_hex: str) -> WireEvent:
    return {
        "type": "event",
        "run": run_public_hex,
        "seq": event.seq,
        "event": event.type,
        "data": event.data,
        "ts": event.created_at.isoformat(),
    }


def to_tenant_wire(event: Event, run_public_hex: str) -> TenantWireEvent:
    return TenantWireEvent(**to_wire(event, run_public_hex), id=event.pk)


def append_events(
    run: Run,
    events: Sequence[tuple[str, dict[str, Any]]],
    *,
    fence: dict[str, Any] | None = None,
    held: bool = False,
    **run_updates: Any,
) -> None:
    """Write `events` for `run` and apply `run_updates` to it in one guarded UPDATE.

    Must run inside a transaction. `fence` adds conditions to the UPDATE (e.g. epoch and
    status): if the run no longer matches, nothing is written and Fenced is raised. The UPDATE
    also takes the run's row lock, which serialises concurrent writers so `seq` stays gap-free.

    `held`: this transaction already holds the run's row through an earlier guarded UPDATE of
    it (a step's commit, then the run's end), so `run.last_seq` is current and nobody can
    change the row: the events are numbered from it without waiting for the UPDATE, whose
    result is checked when the pipeline ends (`check_at_end`), before the commit.
    """
    assert transaction.get_connection().in_atomic_block, "append_events needs a transaction"
    n = len(events)
    fence = fence or {}
    if is_plain(run_updates) and is_plain(fence):
        read = send_guarded_update(
            Run,
            run.pk,
            where=fence,
            sets=run_updates,
            increments={"last_seq": n},
            returning="last_seq",
        )
        if held:
            last = run.last_seq + n

            def counted(expected: int = last) -> None:
                if read() != expected:
                    raise Fenced(f"run {run.public_id} no longer matches {fence}")

            check_at_end(counted)
        else:
            last = read()
            if last is None:
                raise Fenced(f"run {run.public_id} no longer matches {fence}")
    else:
        updated = Run.objects.filter(pk=run.pk, **fence).update(
            last_seq=F("last_seq") + n, **run_updates
        )
        if not updated:
            raise Fenced(f"run {run.public_id} no longer matches {fence}")
        last = Run.objects.values_list("last_seq", flat=True).get(pk=run.pk)
    run.last_seq = last
    insert_events(run, events, last)


def append_first_events(run: Run, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Write the first events of a run inserted in this transaction with `last_seq` already
    counting them: no UPDATE of the run (and no row lock to take: nobody else sees it yet)."""
    assert transaction.get_connection().in_atomic_block, "append_first_events needs a transaction"
    assert run.last_seq == len(events), "insert the run with last_seq = len(events)"
    insert_events(run, events, run.last_seq)


def insert_events(run: Run, events: Sequence[tuple[str, dict[str, Any]]], last: int) -> None:
    """INSERT `events` as seq `last - n + 1` .. `last`, published after the commit. For a
    caller whose own guarded UPDATE of the run counted them into `last_seq` (see
    `append_events`, which is that UPDATE and this)."""
    n = len(events)
    if not n:
        return
    first, now = last - n + 1, timezone.now()
    fields = [
        {
            "run": run.pk,
            "tenant": run.tenant_id,
            "seq": first + i,
            "type": etype,
            "data": data,
            "created_at": now,
        }
        for i, (etype, data) in enumerate(events)
    ]
    if not settings.REDIS_URL:
        insert_rows(Event, fields, returning=False)
        return
    # The ids are read when publishing, after the commit: in a pipeline the INSERT then
    # shares the COMMIT's round trip.
    ids = send_rows(Event, fields)
    publish_on_commit(
        run,
        lambda: [
            (pk, first + i, etype, data)
            for pk, (i, (etype, data)) in zip(ids(), enumerate(events), strict=True)
        ],
        now,
    )


Written = Sequence[tuple[int, int, str, dict[str, Any]]]


def publish_on_commit(run: Run, written: Written | Callable[[], Written], created_at: Any) -> None:
    """Publish events of `run` just written, as (pk, seq, type, data) or a function that
    reads them, once the transaction commits (at once when there is none: the statement
    that wrote them committed). Nothing to do without Redis: each daphne tails the table
    (runs/live.py)."""
    if not settings.REDIS_URL:
        return
    run_pk, tenant_id = run.pk, run.tenant_id
    hex_id, tenant_hex = run.public_id.hex, run.tenant.public_id.hex

    def send() -> None:
        # from_db takes the values in field order: the fast way to build model instances.
        rows = [
            Event.from_db(None, EVENT_FIELDS, (pk, run_pk, tenant_id, seq, etype, data, created_at))
            for pk, seq, etype, data in (written() if callable(written) else written)
        ]
        publish(rows, hex_id, tenant_hex)

    transaction.on_commit(send)


class _LoopPublisher:
    """Channel-layer sends from one long-lived event loop per process (any layer).

    `async_to_sync` per commit would build a new loop, and with it new Redis connections, for
    every transaction; here one thread keeps the loop (and the layer's connections) and a
    single task sends the batches in commit order. A forked worker process starts its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[list[tuple[str, dict[str, Any]]]] | None = None

    def submit(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        loop, queue = self._ensure()
        loop.call_soon_threadsafe(queue.put_nowait, messages)

    def _ensure(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._serve, args=(ready,), name="event-publisher", daemon=True
                )
                self._thread.start()
                ready.wait(timeout=5)
            assert self._loop is not None and self._queue is not None
            return self._loop, self._queue

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop, self._queue = loop, asyncio.Queue()
        loop.create_task(self._drain(self._queue))
        ready.set()
        loop.run_forever()

    async def _drain(self, queue: asyncio.Queue[list[tuple[str, dict[str, Any]]]]) -> None:
        layer = get_channel_layer()
        while True:
            messages = await queue.get()
            if layer is None:
                continue
            try:
                for group, message in messages:
                    await layer.group_send(group, message)
            except Exception:  # noqa: BLE001 - the events are committed; the layer is best-effort
                log.warning("channel layer publish failed", exc_info=True)


class _PubSubPublisher:
    """With channels-redis' pub/sub layer on one Redis: PUBLISH from the committing thread.

    A group_send of that layer is a single PUBLISH of the layer's serialized message on the
    group's Redis channel, so the same bytes are sent here on a connection of our own, from
    the committing thread: no hop to another thread. The hop cost most of the publish latency
    under load (measured with bench/events.py): a loop thread in a busy worker process waits
    for the GIL at each wake-up.

    The PUBLISHes are sent without waiting for their replies (the subscriber count, which
    nobody reads): they are read before the next send, by when they have long arrived. So a
    commit's publish costs a socket write, not a round trip: a worker goes on to its next
    step (or a claimed run to its first) without waiting for Redis. Redis is the task broker
    in this setup too, so a worker depends on it anyway; the timeouts are short, and after a
    failure (sending, or an error among the replies) publishing pauses for a while instead of
    stalling every commit.
    """

    timeout_seconds = 0.5
    pause_seconds = 5.0

    def __init__(self, layer: Any, address: str) -> None:
        self.layer = layer
        self.address = address
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._connection: Any = None
        self._unread = 0  # replies sent for and not read yet
        self._paused_until = 0.0

    def submit(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        if time.monotonic() < self._paused_until:
            return
        commands = [
            ("PUBLISH", pubsub_channel(self.layer, group), self.layer.serialize(message))
            for group, message in messages
        ]
        with self._lock:
            try:
                conn = self._connect()
                self._read_replies(conn)
                conn.send_packed_command(conn.pack_commands(commands))
                self._unread = len(commands)
            except (redis.RedisError, OSError):
                self._drop()
                self._paused_until = time.monotonic() + self.pause_seconds
                log.warning("event publish failed; paused %ss", self.pause_seconds, exc_info=True)

    def _connect(self) -> Any:
        if self._connection is None:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self.address,
                    socket_timeout=self.timeout_seconds,
                    socket_connect_timeout=self.timeout_seconds,
                )
            # Kept, with the client that owns its pool (the pool closes its connections when
            # the client is collected).
            self._connection = self._client.connection_pool.get_connection()
            self._unread = 0
        return self._connection

    def _read_replies(self, conn: Any) -> None:
        while self._unread:
            self._unread -= 1
            reply = conn.read_response(disable_decoding=True)
            if isinstance(reply, redis.ResponseError):
                raise reply

    def _drop(self) -> None:
        conn, self._connection, self._unread = self._connection, None, 0
        if conn is not None and self._client is not None:
            conn.disconnect()
            self._client.connection_pool.release(conn)


_publishers: PerProcess[_LoopPublisher | _PubSubPublisher] = PerProcess(lambda: _make_publisher())


def _publisher() -> _LoopPublisher | _PubSubPublisher:
    return _publishers.get()


def pubsub_address(layer: Any) -> str | None:
    """The Redis URL when `layer` is channels-redis' pub/sub layer on a single Redis (our
    setup): then a group_send is one PUBLISH on a channel named after the group, and the
    publisher and the relay (runs/relay.py) talk to Redis directly. None for any other layer."""
    hosts = getattr(layer, "_kwargs", {}).get("hosts") or []
    if (
        isinstance(layer, RedisPubSubChannelLayer)
        and len(hosts) == 1
        and isinstance(hosts[0], dict)
        and "address" in hosts[0]
    ):
        return str(hosts[0]["address"])
    return None


def pubsub_channel(layer: Any, group: str) -> str:
    """The Redis channel the pub/sub layer publishes `group` on (its _get_group_channel_name)."""
    return f"{layer._kwargs.get('prefix', 'asgi')}__group__{group}"


def _make_publisher() -> _LoopPublisher | _PubSubPublisher:
    layer = get_channel_layer()
    address = pubsub_address(layer)
    return _PubSubPublisher(layer, address) if address else _LoopPublisher()


def publish(rows: list[Event], run_hex: str, tenant_hex: str) -> None:
    """Wake subscribers (after commit). Losing a message is fine: clients catch up from the
    database, so this never fails the worker."""
    _publisher().submit(messages_for(rows, run_hex, tenant_hex))


def messages_for(
    rows: list[Event], run_hex: str, tenant_hex: str
) -> list[tuple[str, dict[str, Any]]]:
    """One message per group per transaction; the per-process relay (runs/relay.py) fans out.

    `committed_at` (epoch seconds, taken just after the commit) lets bench/events.py measure
    commit -> receipt; receivers need not read it."""
    committed_at = time.time()
    events = [to_wire(r, run_hex) for r in rows]
    messages: list[tuple[str, dict[str, Any]]] = [
        (
            run_group(run_hex),
            {"type": "run.events", "events": events, "committed_at": committed_at},
        )
    ]
    lifecycle = [to_tenant_wire(r, run_hex) for r in rows if r.type.startswith(TENANT_EVENT_PREFIX)]
    if lifecycle:
        messages.append(
            (
                tenant_group(tenant_hex),
                {"type": "tenant.events", "events": lifecycle, "committed_at": committed_at},
            )
        )
    return messages
