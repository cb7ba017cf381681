"""Publishing committed events to the channel layer: the message shapes, the pub/sub fast path
(a PUBLISH from the committing thread), the fallback for other layers, and failures that never
reach the worker. The Redis tests run only with REDIS_URL."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings as django_settings
from django.db import transaction

from runs import events
from runs.events import append_events, run_group, tenant_group, to_tenant_wire, to_wire
from runs.models import Event, Run
from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tests.runs.conftest import chain_spec
from tests.runs.test_consumers__delivery import async_db, ws_cleanup  # noqa: F401 - fixture

needs_redis = pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs REDIS_URL")


def rows_of(run: Run, *types: str) -> list[Event]:
    with transaction.atomic():
        append_events(run, [(t, {"n": i}) for i, t in enumerate(types)])
    return list(Event.objects.filter(run=run).order_by("seq")[1:])  # after run.queued


@pytest.mark.django_db
def test_one_message_per_group_per_transaction_stamped_with_the_commit(
    tenant: Tenant, queue: Any
) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    rows = rows_of(run, "run.started", "step.started")
    run_hex, tenant_hex = run.public_id.hex, tenant.public_id.hex

    messages = events.messages_for(rows, run_hex, tenant_hex)

    assert [group for group, _ in messages] == [run_group(run_hex), tenant_group(tenant_hex)]
    (_, on_run), (_, on_tenant) = messages
    assert on_run["type"] == "run.events"
    assert on_run["events"] == [to_wire(r, run_hex) for r in rows]
    assert on_tenant["type"] == "tenant.events"
    assert on_tenant["events"] == [to_tenant_wire(rows[0], run_hex)]  # lifecycle only
    assert on_run["committed_at"] == on_tenant["committed_at"] > 0


@pytest.mark.django_db
def test_a_transaction_without_lifecycle_events_sends_nothing_to_the_tenant(
    tenant: Tenant, queue: Any
) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    rows = rows_of(run, "step.started", "llm.delta")
    messages = events.messages_for(rows, run.public_id.hex, tenant.public_id.hex)
    assert [group for group, _ in messages] == [run_group(run.public_id.hex)]


def test_the_pubsub_layer_on_one_redis_is_published_from_the_committing_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = RedisPubSubChannelLayer(hosts=[{"address": "redis://127.0.0.1:6379/0"}])
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    publisher = events._make_publisher()
    assert isinstance(publisher, events._PubSubPublisher)
    assert publisher.address == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "layer",
    [
        RedisChannelLayer(hosts=["redis://127.0.0.1:6379/0"]),
        RedisPubSubChannelLayer(hosts=["redis://a:6379/0", "redis://b:6379/0"]),  # sharded
        InMemoryChannelLayer(),
    ],
    ids=["core", "sharded-pubsub", "in-memory"],
)
def test_other_layers_are_sent_from_the_publishing_loop(
    layer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    assert isinstance(events._make_publisher(), events._LoopPublisher)


def test_an_unreachable_redis_never_fails_the_committer_and_pauses_publishing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = RedisPubSubChannelLayer(hosts=[{"address": "redis://127.0.0.1:1/0"}])
    publisher = events._PubSubPublisher(layer, "redis://127.0.0.1:1/0")
    message = {"type": "run.events", "events": [], "committed_at": 0.0}

    publisher.submit([("run.x", message)])  # refused: logged, not raised
    assert "event publish failed" in caplog.text
    assert publisher._paused_until > 0

    caplog.clear()
    publisher.submit([("run.x", message)])  # paused: not even tried
    assert caplog.text == ""


class HeldReplies:
    """A fake Redis on 127.0.0.1: it answers the client's handshake (HELLO, then +OK to
    anything but PUBLISH) and holds its replies to PUBLISH until told (`reply`), to see
    whether a publish waits for them."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"redis://127.0.0.1:{self.server.getsockname()[1]}/0"
        self.publishes = 0
        self.conn: socket.socket | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.conn, _ = self.server.accept()
        buffer = b""
        while chunk := self.conn.recv(65536):
            buffer += chunk
            while (parsed := _resp_command(buffer)) is not None:
                name, buffer = parsed
                if name == b"PUBLISH":
                    self.publishes += 1
                elif name == b"HELLO":  # redis-py asks for RESP3: a map with the protocol
                    self.conn.sendall(b"%1\r\n+proto\r\n:3\r\n")
                else:
                    self.conn.sendall(b"+OK\r\n")

    def published(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.publishes < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def reply(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


def _resp_command(buffer: bytes) -> tuple[bytes, bytes] | None:
    """The first whole RESP command in `buffer` (its name, upper case) and what follows it;
    None until one has arrived."""
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None
    head, rest = buffer.split(b"\r\n", 1)
    parts = []
    for _ in range(int(head[1:])):
        if b"\r\n" not in rest:
            return None
        size, rest = rest.split(b"\r\n", 1)
        length = int(size[1:])
        if len(rest) < length + 2:
            return None
        parts.append(rest[:length])
        rest = rest[length + 2 :]
    return parts[0].upper(), rest


@pytest.fixture
def held() -> Iterator[HeldReplies]:
    server = HeldReplies()
    yield server
    server.close()


def pubsub_publisher(address: str) -> Any:
    layer = RedisPubSubChannelLayer(hosts=[{"address": address}])
    return events._PubSubPublisher(layer, address)


def test_a_publish_does_not_wait_for_redis_to_reply(held: HeldReplies) -> None:
    """The committing thread sends its PUBLISHes and goes on; their replies are read before
    the next send. Against a Redis that holds its replies, a submit still returns at once
    (waiting would take the 0.5 s socket timeout and pause publishing)."""
    publisher = pubsub_publisher(held.address)
    message = {"type": "run.events", "events": [{"seq": 1}], "committed_at": 0.0}
    started = time.monotonic()
    publisher.submit([("run.a", message), ("tenant.b", message)])
    assert held.published(2)
    assert time.monotonic() - started < publisher.timeout_seconds
    assert publisher._unread == 2 and publisher._paused_until == 0

    held.reply(b":1\r\n:0\r\n")  # the two subscriber counts
    publisher.submit([("run.a", message)])  # reads them, then sends
    assert held.published(3)
    assert publisher._unread == 1 and publisher._paused_until == 0


def one_sent(held: HeldReplies) -> tuple[Any, dict[str, Any]]:
    """A publisher that has sent one PUBLISH to `held`, whose reply is still owed."""
    publisher = pubsub_publisher(held.address)
    message = {"type": "run.events", "events": [], "committed_at": 0.0}
    publisher.submit([("run.a", message)])
    assert held.published(1)
    return publisher, message


def test_an_error_among_the_replies_pauses_publishing(
    held: HeldReplies, caplog: pytest.LogCaptureFixture
) -> None:
    publisher, message = one_sent(held)
    held.reply(b"-OOM command not allowed when used memory > 'maxmemory'\r\n")
    publisher.submit([("run.a", message)])  # the error is read: dropped, paused
    assert "event publish failed" in caplog.text
    assert publisher._paused_until > 0 and publisher._connection is None
    assert held.publishes == 1  # the second was not sent


def test_a_redis_that_never_replies_pauses_publishing_after_the_timeout(
    held: HeldReplies, caplog: pytest.LogCaptureFixture
) -> None:
    publisher, message = one_sent(held)
    started = time.monotonic()
    publisher.submit([("run.a", message)])  # its reply never comes: the read times out
    assert time.monotonic() - started < 2 * publisher.timeout_seconds + 1
    assert "event publish failed" in caplog.text and publisher._paused_until > 0


@needs_redis
async def test_the_pubsub_publisher_speaks_the_layers_group_protocol() -> None:
    """What the committing thread PUBLISHes is what the layer's group members receive."""
    layer = get_channel_layer()
    publisher = events._make_publisher()
    assert isinstance(publisher, events._PubSubPublisher)
    channel = await layer.new_channel()
    await layer.group_add("run.publisher-test", channel)
    await asyncio.sleep(0.05)  # SUBSCRIBE is sent, not confirmed, by group_add
    message = {"type": "run.events", "events": [{"seq": 1}], "committed_at": 1.5}
    await sync_to_async(publisher.submit)([("run.publisher-test", message)])
    assert await asyncio.wait_for(layer.receive(channel), 5) == message
    await layer.group_discard("run.publisher-test", channel)


@needs_redis
@async_db
async def test_with_redis_a_commit_reaches_the_group_with_its_events(
    tenant: Tenant, queue: Any
) -> None:
    def make() -> Run:
        create_graph_version(tenant, chain_spec())
        return Run.objects.select_related("tenant").get(pk=create_run(tenant, graph="chain").pk)

    run = await sync_to_async(make)()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(run_group(run.public_id.hex), channel)
    await asyncio.sleep(0.05)

    rows = await sync_to_async(rows_of, thread_sensitive=True)(run, "run.started", "step.started")

    message = await asyncio.wait_for(layer.receive(channel), 5)
    assert message["type"] == "run.events"
    assert message["events"] == [to_wire(r, run.public_id.hex) for r in rows]
    await layer.group_discard(run_group(run.public_id.hex), channel)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_pipeline", [False, True])
def test_published_events_carry_the_ids_they_were_stored_with(
    tenant: Tenant, queue: Any, settings: Any, monkeypatch: pytest.MonkeyPatch, in_pipeline: bool
) -> None:
    """An event's id is read when it is published, after the commit (in a pipeline its INSERT
    waits for nothing); outside one it is read at once (SQLite refuses to COMMIT with a
    RETURNING statement's rows unread). Either way, what is published is what was stored."""
    from runs.sql import pipelined

    settings.REDIS_URL = settings.REDIS_URL or "redis://127.0.0.1:9/0"  # publishing on
    published: list[Event] = []
    monkeypatch.setattr(events, "publish", lambda rows, run_hex, tenant_hex: published.extend(rows))
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    published.clear()
    with transaction.atomic(), pipelined() if in_pipeline else transaction.atomic():
        append_events(run, [("step.started", {"n": 1}), ("step.completed", {"n": 2})])
    stored = list(Event.objects.filter(run=run, seq__gt=1).order_by("seq"))
    assert [(e.pk, e.seq, e.type, e.data) for e in published] == [
        (e.pk, e.seq, e.type, e.data) for e in stored
    ]
    assert len(stored) == 2
