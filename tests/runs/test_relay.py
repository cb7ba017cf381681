"""runs/relay.py: the Redis subscriber read straight from the socket (its RESP handling against
a fake server, and against the real Redis: confirmation, reconnection), and the generic relay
for other channel layers. The real-Redis tests run only with REDIS_URL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import hiredis
import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings as django_settings

from runs import events, live, relay
from tests.runs.test_consumers__delivery import (  # noqa: F401 - fixture
    async_db,
    redis_subscribers,
    ws_cleanup,
)

needs_redis = pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs REDIS_URL")
TIMEOUT = 5.0


def message_for(seq: int) -> dict[str, Any]:
    return {"type": "run.events", "events": [{"seq": seq, "event": "x"}], "committed_at": 0.0}


async def publish(group: str, message: dict[str, Any]) -> None:
    """PUBLISH the way a worker's commit does."""
    await sync_to_async(events._make_publisher().submit)([(group, message)])


# --- the protocol, against a fake Redis ----------------------------------------------------------


Answer = bytes | Callable[[list[bytes], int], bytes | None]


class FakeRedis:
    """A RESP server on 127.0.0.1 that records the commands it reads and answers from a script:
    bytes, or a function of the command and the connection's number (None hangs up)."""

    def __init__(self, answers: dict[bytes, Answer]) -> None:
        self.answers = answers
        self.commands: list[list[bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FakeRedis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        number = len(self.writers)
        parser = hiredis.Reader()
        while data := await reader.read(4096):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                self.commands.append(command)
                answer = self.answers[command[0].upper()]
                reply = answer if isinstance(answer, bytes) else answer(command, number)
                if reply is None:
                    writer.close()
                    return
                writer.write(reply)


async def test_the_subscriber_logs_in_with_the_urls_user_and_password() -> None:
    async with FakeRedis({b"AUTH": b"+OK\r\n"}) as server:
        conn = await relay.open_subscription(
            f"redis://relay-user:s3cret@127.0.0.1:{server.port}/4", lambda c, d: None
        )
        conn.close()
    assert server.commands == [[b"AUTH", b"relay-user", b"s3cret"]]


async def test_a_refused_login_fails_the_connection() -> None:
    async with FakeRedis({b"AUTH": b"-WRONGPASS invalid username-password pair\r\n"}) as server:
        with pytest.raises(hiredis.ReplyError, match="WRONGPASS"):
            await relay.open_subscription(f"redis://:nope@127.0.0.1:{server.port}", print)


async def test_a_subscribe_cut_off_by_a_lost_connection_is_made_on_the_next() -> None:
    """Redis hangs up before confirming: the relay connects again, subscribes every group
    there, and the viewer's subscribe() still returns with the group live."""

    def subscribe(command: list[bytes], connection: int) -> bytes | None:
        if connection == 1:
            return None
        return b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(command[1]), command[1])

    async with FakeRedis({b"SUBSCRIBE": subscribe}) as server:
        address = f"redis://127.0.0.1:{server.port}"
        layer = RedisPubSubChannelLayer(hosts=[{"address": address}])
        feed = relay.PubSubRelay(layer, address)
        inbox = live.Inbox()
        try:
            await asyncio.wait_for(feed.subscribe("run.cut-off", inbox), TIMEOUT)
            channel = feed.channel("run.cut-off")
            assert feed.conn is not None and channel in feed.conn.subscribed
            assert len(server.writers) == 2

            message = layer.serialize(message_for(3))
            server.writers[1].write(
                b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                % (len(channel), channel, len(message), message)
            )
            hints, _ = await asyncio.wait_for(inbox.get(), TIMEOUT)
            assert [seq for seq, _ in hints] == [3]
        finally:
            feed.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed.task


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing


async def test_replies_resolve_commands_in_order_and_messages_go_out_as_parsed() -> None:
    """Redis answers in order; a message may arrive between a command and its reply, and
    either may be split across reads."""
    got: list[tuple[bytes, bytes]] = []
    conn = relay.Subscription(lambda channel, data: got.append((channel, data)), lambda c: None)
    conn.connection_made(Transport())
    first = conn.command("SUBSCRIBE", b"asgi__group__run.a")
    second = conn.command("SUBSCRIBE", b"asgi__group__run.b")
    stream = (
        b"*3\r\n$9\r\nsubscribe\r\n$18\r\nasgi__group__run.a\r\n:1\r\n"
        b"*3\r\n$7\r\nmessage\r\n$18\r\nasgi__group__run.a\r\n$5\r\nhello\r\n"
        b"*3\r\n$9\r\nsubscribe\r\n$18\r\nasgi__group__run.b\r\n:2\r\n"
    )
    for i in range(0, len(stream), 7):
        conn.data_received(stream[i : i + 7])
    assert got == [(b"asgi__group__run.a", b"hello")]
    assert first.result() == [b"subscribe", b"asgi__group__run.a", 1]
    assert second.result() == [b"subscribe", b"asgi__group__run.b", 2]

    error = conn.command("SUBSCRIBE")
    conn.data_received(b"-ERR wrong number of arguments\r\n")
    with pytest.raises(hiredis.ReplyError):
        error.result()

    waiting = conn.command("PING")
    conn.connection_lost(None)
    with pytest.raises(ConnectionError):
        waiting.result()


# --- against Redis ------------------------------------------------------------------------------


@needs_redis
@async_db
async def test_an_event_published_right_after_subscribe_returns_is_delivered() -> None:
    """subscribe() returns once Redis confirmed the SUBSCRIBE: the next PUBLISH is seen."""
    inbox = live.Inbox()
    group = "run.relay-confirm-test"
    await live.subscribe(group, inbox)
    feed = live.current()
    assert isinstance(feed, relay.PubSubRelay)
    await publish(group, message_for(7))

    hints, overflowed = await asyncio.wait_for(inbox.get(), TIMEOUT)
    assert not overflowed
    assert [seq for seq, _ in hints] == [7]
    assert redis_subscribers(feed.channel(group)) == 1
    live.unsubscribe(group, inbox)


@needs_redis
@async_db
async def test_after_redis_drops_the_subscriber_it_reconnects_and_consumers_resync() -> None:
    """Events published while the connection was down are lost to the relay: once it has
    subscribed again, every inbox is told so (its consumer reads the database), and later
    events arrive as before."""
    inbox = live.Inbox()
    group = "run.relay-reconnect-test"
    await live.subscribe(group, inbox)
    feed = live.current()
    assert isinstance(feed, relay.PubSubRelay) and feed.conn is not None
    host, port = feed.conn.transport.get_extra_info("sockname")[:2]  # type: ignore[union-attr]
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    try:
        assert client.client_kill(f"{host}:{port}")
    finally:
        client.close()

    hints, overflowed = await asyncio.wait_for(inbox.get(), TIMEOUT)
    inbox.done()
    assert overflowed and hints == []
    assert feed.reconnects == 1
    await publish(group, message_for(8))
    hints, overflowed = await asyncio.wait_for(inbox.get(), TIMEOUT)
    assert [seq for seq, _ in hints] == [8] and not overflowed
    live.unsubscribe(group, inbox)


@needs_redis
@async_db
async def test_other_layers_go_through_the_generic_relay_confirmed_by_a_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """subscribe() waits for the relay's probe to come back through the layer; probes (its
    own and other processes') never reach the inboxes."""
    monkeypatch.setattr(relay, "pubsub_address", lambda layer: None)
    inbox = live.Inbox()
    group = "run.relay-probe-test"
    await live.subscribe(group, inbox)
    feed = live.current()
    assert isinstance(feed, relay.Relay) and feed.probes == {}

    layer = get_channel_layer()
    await layer.group_send(group, {"type": relay.PROBE_TYPE, "probe": "someone-elses"})
    await publish(group, message_for(9))

    hints, overflowed = await asyncio.wait_for(inbox.get(), TIMEOUT)
    assert not overflowed
    assert [seq for seq, _ in hints] == [9]
    live.unsubscribe(group, inbox)
