"""Publishing committed events to the channel layer: the message shapes, the pub/sub fast path
(a PUBLISH from the committing thread), the fallback for other layers, and failures that never
reach the worker. The Redis tests run only with REDIS_URL."""

from __future__ import annotations

import asyncio
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
