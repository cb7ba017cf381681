"""The live feed with Redis: each daphne process subscribes once per group and fans out locally.

`PubSubRelay` (channels-redis' pub/sub layer on one Redis, our setup): one Redis connection in
subscribe mode per process, read by an asyncio Protocol. A message is parsed (hiredis),
decoded and handed to the group's inboxes inside the event loop's read callback: no task
wake-up between the socket and the consumers. Going through the layer cost more than the rest
of the path: its receive loop polls redis-py's `get_message`, which wakes a task per message,
and each group's relay channel woke another (bench/events.py, 1 run x 10 viewers: commit ->
relay p95 1.1 ms through the layer, 0.6 ms direct). SUBSCRIBE's reply confirms the
subscription, so `watch()` returns once the group's next event will be seen. A lost
connection is made again with every group re-subscribed; then each inbox is told it missed
events, and its consumer reads them from the database.

`Relay` (any other channel layer): one layer channel per group per process, confirmed by a
probe message sent to the group and received back.

Both publish nothing: `events.publish` does, on commit, and `live_frames.publish_live` while a
step runs (`run.live` messages, handed to the inboxes that take live frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import hiredis
from channels.layers import get_channel_layer
from redis.connection import SSLConnection, parse_url

from runs.events import pubsub_address, pubsub_channel
from runs.live import ERROR_BACKOFF_SECONDS, IDLE_EXIT_SECONDS, Feed, encode
from runs.live_frames import live_of

log = logging.getLogger(__name__)

# How long a SUBSCRIBE (or connecting to Redis) may take before watch() gives up.
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
# The subscriber PINGs Redis this often when idle; no PONG in time means a dead connection.
HEALTH_SECONDS = 15.0
# channels-redis forgets group members after a day (group_expiry): join again well before.
REJOIN_SECONDS = 600.0
# The relay's subscription probe (Relay._confirm): how long to wait for it, how many times.
PROBE_TYPE = "relay.probe"
PROBE_TIMEOUT_SECONDS = 0.5
PROBE_ATTEMPTS = 4


def events_of(message: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The wire events a published message carries: one transaction's batch (`events`), or one
    event (`event`, with the tenant stream's `id` beside it). None for other messages."""
    if "events" in message:
        events: list[Mapping[str, Any]] = message["events"]
        return events
    if "event" in message:
        if "id" in message:
            return [{**message["event"], "id": message["id"]}]
        return [message["event"]]
    return None


def key_of(group: str) -> str:
    """Run streams are ordered by seq; tenant streams by the Event id."""
    return "seq" if group.startswith("run.") else "id"


def make_relay() -> Feed:
    layer = get_channel_layer()
    address = pubsub_address(layer)
    return PubSubRelay(layer, address) if address else Relay()


# --- Redis pub/sub, read straight from the socket ------------------------------------------------


class Subscription(asyncio.Protocol):
    """A Redis connection in subscribe mode. Messages go to `on_message` as they are parsed;
    every other reply (SUBSCRIBE, UNSUBSCRIBE, PING, AUTH: one each) resolves the oldest
    command's future, as Redis answers in order."""

    def __init__(
        self,
        on_message: Callable[[bytes, bytes], None],
        on_lost: Callable[[Subscription], None],
    ) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.reader = hiredis.Reader()
        self.replies: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.subscribed: set[bytes] = set()  # channels whose SUBSCRIBE Redis has confirmed

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if isinstance(reply, list) and reply[:1] == [b"message"]:
                self.on_message(reply[1], reply[2])
            elif self.replies:
                future = self.replies.popleft()
                if future.done():
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        while self.replies:
            future = self.replies.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"Redis connection lost: {exc}"))
        self.on_lost(self)

    def command(self, *parts: str | bytes) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        if not self.open:
            future.set_exception(ConnectionError("Redis connection closed"))
            return future
        assert self.transport is not None
        self.replies.append(future)
        self.transport.write(hiredis.pack_command(parts))  # type: ignore[arg-type]
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_subscription(
    address: str,
    on_message: Callable[[bytes, bytes], None],
    on_lost: Callable[[Subscription], None] = lambda _: None,
) -> Subscription:
    """Connect to the Redis at `address` (redis://, rediss:// or unix:// URL) and log in."""
    options = parse_url(address)
    loop = asyncio.get_running_loop()

    def protocol() -> Subscription:
        return Subscription(on_message, on_lost)

    if "path" in options:
        _, conn = await loop.create_unix_connection(protocol, options["path"])
    else:
        secure = options.get("connection_class") is SSLConnection
        tls = ssl.create_default_context() if secure else None
        _, conn = await loop.create_connection(
            protocol, options.get("host", "localhost"), options.get("port", 6379), ssl=tls
        )
    try:
        if options.get("password"):
            login = [options["username"]] if options.get("username") else []
            await conn.command("AUTH", *login, options["password"])
    except BaseException:
        conn.close()
        raise
    return conn


class PubSubRelay(Feed):
    """Our Redis setup: one subscriber connection per process, fanning out from its reads."""

    def __init__(self, layer: Any, address: str) -> None:
        self.layer = layer
        self.address = address
        self.groups: dict[bytes, str] = {}  # Redis channel -> group, for every watched group
        self.conn: Subscription | None = None
        self._connecting = asyncio.Lock()
        self._recovering: asyncio.Task[None] | None = None  # held: the loop keeps weak refs
        self.reconnects = 0
        super().__init__()

    def channel(self, group: str) -> bytes:
        return pubsub_channel(self.layer, group).encode()

    async def watch(self, group: str) -> None:
        channel = self.channel(group)
        self.groups[channel] = group
        for attempt in range(2):
            try:
                conn = await self._connection()
                if channel not in conn.subscribed:
                    await self._subscribe(conn, [channel])
                return
            except ConnectionError:
                if attempt:
                    raise
                # Lost before Redis answered: the next connection subscribes every group.

    async def unwatch(self, group: str) -> None:
        channel = self.channel(group)
        self.groups.pop(channel, None)
        conn = self.conn
        if conn is not None and conn.open and channel in conn.subscribed:
            conn.subscribed.discard(channel)
            with contextlib.suppress(Exception):
                unsubscribed = conn.command("UNSUBSCRIBE", channel)
                await asyncio.wait_for(unsubscribed, SUBSCRIBE_TIMEOUT_SECONDS)

    async def _subscribe(self, conn: Subscription, channels: list[bytes]) -> None:
        replies = [conn.command("SUBSCRIBE", channel) for channel in channels]
        await asyncio.wait_for(asyncio.gather(*replies), SUBSCRIBE_TIMEOUT_SECONDS)
        conn.subscribed.update(channels)

    async def _connection(self) -> Subscription:
        """The open subscriber connection, made (with every watched group) if there is none."""
        async with self._connecting:
            if self.conn is not None and self.conn.open:
                return self.conn
            conn = await asyncio.wait_for(
                open_subscription(self.address, self._message, self._lost),
                SUBSCRIBE_TIMEOUT_SECONDS,
            )
            try:
                if self.groups:
                    await self._subscribe(conn, list(self.groups))
            except BaseException:
                conn.close()
                raise
            self.conn = conn
            return conn

    def _message(self, channel: bytes, data: bytes) -> None:
        group = self.groups.get(channel)
        if group is None:
            return  # unsubscribed a moment ago
        try:
            message = self.layer.deserialize(data)
            frames = live_of(message)
            if frames is not None:
                self.deliver_live(group, frames)
                return
            events = events_of(message)
            if events:
                self.deliver(group, encode(events, key_of(group)))
        except Exception:  # noqa: BLE001 - one bad message must not cut the connection
            log.exception("relay: could not deliver a message on %r", channel)

    def _lost(self, conn: Subscription) -> None:
        if conn is self.conn and not self.closing:
            log.warning("relay: Redis subscriber connection lost; reconnecting")
            self._recovering = self.loop.create_task(self._recover(), name="relay reconnect")

    async def _recover(self) -> None:
        """Connect again (the groups re-subscribed), then send every consumer to the database
        for what was published meanwhile."""
        while not self.closing and self.groups:
            try:
                await self._connection()
            except Exception:  # noqa: BLE001 - Redis may stay away a while
                log.warning("relay: reconnecting to Redis failed", exc_info=True)
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            self.reconnects += 1
            for inboxes in self.members.values():
                for inbox in inboxes:
                    inbox.lost()
            return

    async def _check(self) -> None:
        """PING the connection; one that does not answer is closed (and then made again)."""
        conn = self.conn
        if conn is None or not conn.open:
            return
        try:
            await asyncio.wait_for(conn.command("PING"), SUBSCRIBE_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - whatever failed, this connection is done
            log.warning("relay: Redis did not answer PING; reconnecting")
            if conn.transport is not None:
                conn.transport.abort()

    async def _run(self) -> None:
        self.ready.set()
        try:
            while not self._idle():
                await asyncio.sleep(min(IDLE_EXIT_SECONDS / 4, HEALTH_SECONDS))
                await self._check()
        finally:
            self.closing = True
            if self.conn is not None:
                self.conn.close()


# --- any channel layer ---------------------------------------------------------------------------


class Relay(Feed):
    """Another channel layer: one layer channel per group per process, relaying to subscribers."""

    def __init__(self) -> None:
        self.layer: Any = get_channel_layer()
        self.channels: dict[str, tuple[str, asyncio.Task[None]]] = {}  # group -> its receiver
        self.probes: dict[str, asyncio.Future[None]] = {}  # nonce -> its watch() waiting
        super().__init__()

    async def watch(self, group: str) -> None:
        channel = await self.layer.new_channel()
        await self.layer.group_add(group, channel)
        task = self.loop.create_task(self._receive(group, channel), name=f"relay {group}")
        self.channels[group] = (channel, task)
        await self._confirm(group)

    async def _confirm(self, group: str) -> None:
        """Wait until the group's messages reach this relay.

        A layer's `group_add` may return before the subscription is in force (with Redis
        pub/sub: once SUBSCRIBE is written, not applied). A probe sent to the group and
        received back proves it is, so an event published after this returns is seen.
        Without the probe coming back, go on anyway: consumers still find lost events by
        seq gap or periodic resync.
        """
        for _ in range(PROBE_ATTEMPTS):
            nonce = uuid.uuid4().hex
            arrived = self.loop.create_future()
            self.probes[nonce] = arrived
            try:
                await self.layer.group_send(group, {"type": PROBE_TYPE, "probe": nonce})
                await asyncio.wait_for(arrived, PROBE_TIMEOUT_SECONDS)
                return
            except TimeoutError:
                continue
            finally:
                self.probes.pop(nonce, None)
        log.warning("relay %s: the subscription did not confirm; going on", group)

    async def unwatch(self, group: str) -> None:
        entry = self.channels.pop(group, None)
        if entry is None:
            return
        channel, task = entry
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):
            await self.layer.group_discard(group, channel)

    async def _receive(self, group: str, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must outlive Redis hiccups
                # redis-py 8 cuts blocking reads after its default 5 s socket timeout; that
                # is no error here, and receiving again is safe.
                if type(exc).__name__ != "TimeoutError":
                    log.warning("relay %s: receive failed", group, exc_info=True)
                    await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            if message.get("type") == PROBE_TYPE:  # other processes' probes come here too
                arrived = self.probes.get(message.get("probe", ""))
                if arrived is not None and not arrived.done():
                    arrived.set_result(None)
                continue
            frames = live_of(message)
            if frames is not None:
                self.deliver_live(group, frames)
                continue
            events = events_of(message)
            if events:
                self.deliver(group, encode(events, key_of(group)))

    async def _run(self) -> None:
        self.ready.set()
        last_join = time.monotonic()
        try:
            while not self._idle():
                await asyncio.sleep(min(IDLE_EXIT_SECONDS, REJOIN_SECONDS) / 4)
                if time.monotonic() - last_join > REJOIN_SECONDS:
                    last_join = time.monotonic()
                    for group, (channel, _) in list(self.channels.items()):
                        with contextlib.suppress(Exception):
                            await self.layer.group_add(group, channel)
        finally:
            self.closing = True
            for group in list(self.channels):
                await asyncio.shield(self.unwatch(group))
