"""Run and tenant streams: replay after a cursor, synced, live in order, no gap, no duplicate.

Driven through the real ASGI app (config.asgi.application) with WebsocketCommunicator. Live
delivery takes the configured path: the embedded poller (runs/live.py) without Redis, or
events.publish through channels-redis with REDIS_URL. Tests about hints the layer lost or
repeated silence both (`no_push`) and send the hints themselves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import connections, transaction

from config.asgi import application
from runs import live, streams
from runs.consumers import StreamConsumer
from runs.events import (
    WireEvent,
    append_events,
    run_group,
    tenant_group,
    to_tenant_wire,
    to_wire,
)
from runs.models import Event, Run
from runs.relay import PubSubRelay
from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tenants.services import create_api_key
from tests.runs.conftest import InlineQueue, chain_spec

TIMEOUT = 5.0


# --- helpers (the other test_consumers__ files import these) -----------------------------------


@pytest.fixture
async def ws_cleanup() -> AsyncIterator[None]:
    yield
    await live.stop()
    # database_sync_to_async's thread and the streams' pool keep persistent connections:
    # close them so the test database can be flushed and, on PostgreSQL, dropped.
    await sync_to_async(connections.close_all)()
    await asyncio.to_thread(streams.close_db)


def async_db(test: Any) -> Any:
    test = pytest.mark.django_db(transaction=True)(test)
    return pytest.mark.usefixtures("ws_cleanup")(test)


@pytest.fixture
def no_push(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing hints consumers (no Redis publish, a poller that sees nothing): the test
    hands hints to the feed itself, as if the poller or the relay had received them."""
    settings.REDIS_URL = ""
    monkeypatch.setattr(live.EventTail, "fetch", lambda self, limit=0: [])


def redis_subscribers(channel: bytes) -> int:
    """How many connections Redis has subscribed to `channel`."""
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    try:
        return int(dict(client.pubsub_numsub(channel))[channel])
    finally:
        client.close()


def bearer(raw: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {raw}".encode())]


async def api_key(tenant: Tenant, role: str = "member") -> str:
    _, raw = await sync_to_async(create_api_key)(tenant, role=role)
    return raw


async def new_run(tenant: Tenant, queue: InlineQueue | None = None, n: int = 2) -> Run:
    def make() -> Run:
        create_graph_version(tenant, chain_spec(n=n))
        return create_run(tenant, graph="chain")

    return await sync_to_async(make)()


async def emit(run: Run, *types: str) -> list[Event]:
    """Commit events for `run` the way services do (so they are pushed the configured way)."""

    def write() -> list[Event]:
        row = Run.objects.select_related("tenant").get(pk=run.pk)
        with transaction.atomic():
            append_events(row, [(t, {"n": i}) for i, t in enumerate(types)])
        return list(
            Event.objects.filter(run=row, seq__gt=row.last_seq - len(types)).order_by("seq")
        )

    return await sync_to_async(write)()


async def stored(run: Run, after: int = 0) -> list[WireEvent]:
    def read() -> list[WireEvent]:
        rows = Event.objects.filter(run=run, seq__gt=after).order_by("seq")
        return [to_wire(e, run.public_id.hex) for e in rows]

    return await sync_to_async(read)()


async def open_ws(
    path: str, headers: list[tuple[bytes, bytes]], wrap: Callable[[Any], Any] | None = None
) -> WebsocketCommunicator:
    app = wrap(application) if wrap else application
    ws = WebsocketCommunicator(app, path, headers=headers)
    connected, _ = await ws.connect(timeout=TIMEOUT)
    assert connected
    return ws


async def frame(ws: WebsocketCommunicator, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame; a close comes back as {"type": "close", "code", "reason"}."""
    out = await ws.receive_output(timeout)
    if out["type"] == "websocket.close":
        return {"type": "close", "code": out.get("code"), "reason": out.get("reason", "")}
    assert out["type"] == "websocket.send", out
    return json.loads(out["text"])


async def frames_until(
    ws: WebsocketCommunicator, stop: Callable[[dict[str, Any]], bool], *, skip_pings: bool = True
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while True:
        f = await frame(ws)
        if skip_pings and f["type"] == "ping":
            continue
        got.append(f)
        if stop(f):
            return got


async def synced(ws: WebsocketCommunicator) -> tuple[list[dict[str, Any]], int]:
    """Frames of the replay, and the synced seq."""
    got = await frames_until(ws, lambda f: f["type"] in ("synced", "close"))
    assert got[-1]["type"] == "synced", got[-1]
    return got[:-1], got[-1]["seq"]


async def hint(run: Run, events: Iterable[WireEvent]) -> None:
    """The feed got these events (one by one, as from Redis) for the run's viewers."""
    feed = live.current()
    assert feed is not None
    for event in events:
        feed.deliver(run_group(run.public_id.hex), live.encode([event], "seq"))


async def close(*sockets: WebsocketCommunicator) -> None:
    for ws in sockets:
        await ws.disconnect()


# --- run stream -------------------------------------------------------------------------------


@async_db
async def test_replay_after_seq_then_synced_then_live_in_order(tenant: Tenant, queue: Any) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)  # seq 1: run.queued
    await emit(run, "run.started", "step.started", "step.completed")
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=2", bearer(raw))

    replayed, seq = await synced(ws)
    assert replayed == await stored(run, after=2)
    assert [f["seq"] for f in replayed] == [3, 4] and seq == 4

    await emit(run, "state.updated", "step.started")
    await emit(run, "step.completed")
    live_frames = await frames_until(ws, lambda f: f["seq"] == 7)
    assert live_frames == await stored(run, after=4)
    assert await ws.receive_nothing(0.3)
    await close(ws)


@async_db
async def test_no_after_replays_everything(tenant: Tenant, queue: Any) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    await emit(run, "run.started")
    ws = await open_ws(f"/ws/runs/{run.public_id.hex}/", bearer(raw))
    replayed, seq = await synced(ws)
    assert replayed == await stored(run) and seq == 2
    await close(ws)


@async_db
async def test_after_beyond_the_log_replays_nothing(tenant: Tenant, queue: Any) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=1", bearer(raw))
    assert await synced(ws) == ([], 1)
    await close(ws)


@async_db
async def test_a_whole_run_executed_inline_streams_every_event_once(
    tenant: Tenant, queue: InlineQueue
) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant, n=4)
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw))
    replayed, _ = await synced(ws)
    await sync_to_async(queue.drain)()
    got = replayed + await frames_until(ws, lambda f: f["event"] == "run.succeeded")
    assert got == await stored(run)  # 1..m: in seq order, gap-free, exactly once
    assert await ws.receive_nothing(0.3)
    await close(ws)


@async_db
async def test_a_gap_in_live_hints_is_filled_from_the_database(
    tenant: Tenant, queue: Any, no_push: None
) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw))
    await synced(ws)
    await emit(run, "run.started", "step.started", "step.completed")
    assert await ws.receive_nothing(0.2)  # nothing pushed them
    events = await stored(run, after=1)
    await hint(run, events[-1:])  # only the last one's hint arrives
    assert await frames_until(ws, lambda f: f["seq"] == 4) == events
    await close(ws)


@async_db
async def test_duplicate_and_stale_hints_are_dropped(
    tenant: Tenant, queue: Any, no_push: None
) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    await emit(run, "run.started", "step.started")
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw))
    replayed, _ = await synced(ws)
    await hint(run, replayed)  # hints for what the replay already sent
    await hint(run, reversed(replayed))
    assert await ws.receive_nothing(0.3)
    await emit(run, "step.completed")
    (new,) = await stored(run, after=3)
    await hint(run, [new, new, replayed[0], new])
    assert await frame(ws) == new
    assert await ws.receive_nothing(0.3)
    await close(ws)


@async_db
async def test_hints_out_of_order_are_delivered_in_seq_order(
    tenant: Tenant, queue: Any, no_push: None
) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=1", bearer(raw))
    await synced(ws)
    await emit(run, "run.started", "step.started", "step.completed", "run.succeeded")
    events = await stored(run, after=1)
    await hint(run, [events[2], events[0], events[3], events[1]])
    got = [await frame(ws) for _ in events]
    assert got == events
    assert await ws.receive_nothing(0.3)
    await close(ws)


@async_db
async def test_a_lost_final_hint_is_caught_up_at_the_next_ping(
    tenant: Tenant, queue: Any, no_push: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StreamConsumer, "ping_seconds", 0.2)
    raw = await api_key(tenant)
    run = await new_run(tenant)
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw))
    await synced(ws)
    await emit(run, "run.started", "run.succeeded")  # and the layer lost both hints
    got = await frames_until(ws, lambda f: f["type"] == "ping", skip_pings=False)
    assert got[:-1] == await stored(run, after=1)
    await close(ws)


@async_db
async def test_pings_are_sent_periodically(
    tenant: Tenant, queue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StreamConsumer, "ping_seconds", 0.1)
    raw = await api_key(tenant)
    run = await new_run(tenant)
    ws = await open_ws(f"/ws/runs/{run.public_id}/", bearer(raw))
    await synced(ws)
    assert await frame(ws) == {"type": "ping"}
    assert await frame(ws) == {"type": "ping"}
    await close(ws)


@async_db
async def test_several_viewers_of_one_run_each_get_every_event(
    tenant: Tenant, queue: InlineQueue
) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant, n=3)
    viewers = [await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw)) for _ in range(5)]
    for ws in viewers:
        await synced(ws)
    await sync_to_async(queue.drain)()
    expected = await stored(run, after=1)
    for ws in viewers:
        assert await frames_until(ws, lambda f: f["event"] == "run.succeeded") == expected
    await close(*viewers)


# --- tenant stream ----------------------------------------------------------------------------


async def lifecycle(tenant: Tenant, after: int = 0) -> list[dict[str, Any]]:
    def read() -> list[dict[str, Any]]:
        rows = (
            Event.objects.filter(tenant=tenant, id__gt=after, type__startswith="run.")
            .select_related("run")
            .order_by("id")
        )
        return [dict(to_tenant_wire(e, e.run.public_id.hex)) for e in rows]

    return await sync_to_async(read)()


@async_db
async def test_tenant_stream_replays_run_lifecycle_after_the_cursor(
    tenant: Tenant, queue: Any
) -> None:
    raw = await api_key(tenant)
    first = await new_run(tenant)
    (cursor,) = await emit(first, "run.started")
    second = await new_run(tenant)
    await emit(second, "run.started", "step.started", "step.completed", "run.succeeded")
    await emit(first, "llm.delta", "run.failed")

    ws = await open_ws(f"/ws/tenant/?after={cursor.pk}", bearer(raw))
    replayed, seq = await synced(ws)
    expected = await lifecycle(tenant, after=cursor.pk)
    assert replayed == expected
    assert [(f["run"], f["event"]) for f in replayed] == [
        (second.public_id.hex, "run.queued"),
        (second.public_id.hex, "run.started"),
        (second.public_id.hex, "run.succeeded"),
        (first.public_id.hex, "run.failed"),
    ]
    assert seq == expected[-1]["id"]
    await close(ws)


@async_db
async def test_tenant_stream_streams_only_lifecycle_events_live(
    tenant: Tenant, queue: InlineQueue
) -> None:
    raw = await api_key(tenant)
    ws = await open_ws("/ws/tenant/", bearer(raw))  # no cursor: from now on
    assert (await synced(ws))[0] == []
    run = await new_run(tenant, n=3)
    await sync_to_async(queue.drain)()
    got = await frames_until(ws, lambda f: f["event"] == "run.succeeded")
    assert got == await lifecycle(tenant)
    assert [f["event"] for f in got] == ["run.queued", "run.started", "run.succeeded"]
    assert {f["run"] for f in got} == {run.public_id.hex}
    assert await ws.receive_nothing(0.3)
    await close(ws)


@async_db
async def test_tenant_stream_resumes_from_the_last_id_without_gap_or_duplicate(
    tenant: Tenant, queue: Any
) -> None:
    raw = await api_key(tenant)
    ws = await open_ws("/ws/tenant/?after=0", bearer(raw))
    await synced(ws)
    run = await new_run(tenant)
    await emit(run, "run.started")
    got = await frames_until(ws, lambda f: f["event"] == "run.started")
    await close(ws)
    await emit(run, "step.started", "run.paused")  # while disconnected
    await emit(run, "run.resumed")
    ws = await open_ws(f"/ws/tenant/?after={got[-1]['id']}", bearer(raw))
    replayed, _ = await synced(ws)
    await emit(run, "run.succeeded")
    later = await frames_until(ws, lambda f: f["event"] == "run.succeeded")
    assert got + replayed + later == await lifecycle(tenant)
    await close(ws)


@async_db
async def test_tenant_stream_delivers_an_id_committed_after_a_higher_one_once(
    tenant: Tenant, queue: Any, no_push: None
) -> None:
    """PostgreSQL hands out ids before commit: a lower id can become visible later."""
    raw = await api_key(tenant)
    one, two = await new_run(tenant), await new_run(tenant)
    ws = await open_ws("/ws/tenant/", bearer(raw))
    await synced(ws)
    (early,) = await emit(one, "run.started")
    (late,) = await emit(two, "run.started")
    # `early` "has not committed yet": take it out, let the consumer see `late`, put it back.
    await sync_to_async(Event.objects.filter(pk=early.pk).delete)()
    feed = live.current()
    assert feed is not None
    group = tenant_group(tenant.public_id.hex)
    wire_late = to_tenant_wire(late, two.public_id.hex)
    feed.deliver(group, live.encode([wire_late], "id"))
    assert await frame(ws) == wire_late
    await sync_to_async(Event.objects.bulk_create)([early])
    wire_early = to_tenant_wire(early, one.public_id.hex)
    for _ in range(2):
        feed.deliver(group, live.encode([wire_early], "id"))
    assert await frame(ws) == wire_early
    assert await ws.receive_nothing(0.3)
    await close(ws)


# --- the embedded poller ----------------------------------------------------------------------


@async_db
async def test_poller_starts_on_first_connect_and_stops_when_idle(
    tenant: Tenant, queue: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.REDIS_URL = ""
    monkeypatch.setattr(live, "IDLE_EXIT_SECONDS", 0.2)
    await live.stop()
    raw = await api_key(tenant)
    run = await new_run(tenant)
    assert live.current() is None
    ws = await open_ws(f"/ws/runs/{run.public_id}/", bearer(raw))
    await synced(ws)
    poller = live.current()
    assert isinstance(poller, live.Poller)
    assert poller.subscribers == 1 and not poller.closing
    await close(ws)
    assert poller.subscribers == 0
    await asyncio.wait_for(poller.task, TIMEOUT)
    assert poller.closing


@async_db
async def test_poller_makes_one_query_per_tick_however_many_clients(
    tenant: Tenant, queue: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.REDIS_URL = ""  # the poller is the only source of live events
    queries: list[int] = []
    fetch = live.Poller._fetch

    def counted(self: live.Poller) -> tuple[list[Event], list[Any]]:
        with CaptureQueriesContext(connection) as ctx:
            rows = fetch(self)
        queries.append(len(ctx.captured_queries))
        return rows

    monkeypatch.setattr(live.Poller, "_fetch", counted)
    raw = await api_key(tenant)
    runs = [await new_run(tenant) for _ in range(3)]
    viewers = [
        await open_ws(f"/ws/runs/{run.public_id}/?after=1", bearer(raw))
        for run in runs
        for _ in range(3)
    ]
    viewers.append(await open_ws("/ws/tenant/", bearer(raw)))
    for ws in viewers:
        await synced(ws)
    for run in runs:
        await emit(run, "run.started", "step.started")
    for i, ws in enumerate(viewers[:-1]):
        assert await frames_until(ws, lambda f: f["seq"] == 3) == await stored(runs[i // 3], 1)
    got = await frames_until(viewers[-1], lambda f: f["run"] == runs[-1].public_id.hex)
    assert [f["event"] for f in got] == ["run.started"] * 3
    await close(*viewers)
    # The event tail's query and the live frames' (runs/live_frames.py), whatever the clients.
    assert queries and set(queries) == {2}, queries


@pytest.mark.django_db(transaction=True)
def test_event_tail_reads_new_rows_and_ids_committed_late(
    tenant: Tenant, queue: Any, django_assert_num_queries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    tail = live.EventTail()
    tail.start()
    with transaction.atomic():
        append_events(run, [("run.started", {}), ("step.started", {}), ("step.failed", {})])
    rows = list(Event.objects.filter(run=run, seq__gt=1).order_by("seq"))
    missing = rows[1]
    Event.objects.filter(pk=missing.pk).delete()  # as if not committed yet
    with django_assert_num_queries(1):
        got = tail.fetch()
    assert [e.pk for e in got] == [rows[0].pk, rows[2].pk]
    assert set(tail.holes) == {missing.pk}
    Event.objects.bulk_create([missing])  # commits now
    with django_assert_num_queries(1):
        assert [e.pk for e in tail.fetch()] == [missing.pk]
    assert tail.holes == {}
    with django_assert_num_queries(1):
        assert tail.fetch() == []
    run_hex = run.public_id.hex
    assert live.hints_for(got) == {
        run_group(run_hex): live.encode([to_wire(e, run_hex) for e in got], "seq"),
        tenant_group(tenant.public_id.hex): live.encode([to_tenant_wire(got[0], run_hex)], "id"),
    }


@pytest.mark.django_db(transaction=True)
def test_event_tail_gives_up_on_a_hole_after_a_while(
    tenant: Tenant, queue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    tail = live.EventTail()
    tail.start()
    with transaction.atomic():
        append_events(run, [("run.started", {}), ("step.started", {})])
    rows = list(Event.objects.filter(run=run, seq__gt=1).order_by("seq"))
    Event.objects.filter(pk=rows[0].pk).delete()  # rolled back, say
    tail.fetch()
    assert set(tail.holes) == {rows[0].pk}
    monkeypatch.setattr(live, "HOLE_SECONDS", 0.0)
    tail.fetch()
    assert tail.holes == {}


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="the relay runs with Redis only")
@async_db
async def test_with_redis_a_process_joins_each_group_once_for_all_its_viewers(
    tenant: Tenant, queue: Any
) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    viewers = [await open_ws(f"/ws/runs/{run.public_id}/?after=1", bearer(raw)) for _ in range(3)]
    dashboard = await open_ws("/ws/tenant/", bearer(raw))
    for ws in [*viewers, dashboard]:
        await synced(ws)
    feed = live.current()
    assert isinstance(feed, PubSubRelay)
    channels = [
        feed.channel(run_group(run.public_id.hex)),
        feed.channel(tenant_group(tenant.public_id.hex)),
    ]
    assert set(feed.groups) == set(channels)
    assert [await sync_to_async(redis_subscribers)(c) for c in channels] == [1, 1]
    await emit(run, "run.started", "step.started")
    for ws in viewers:
        assert await frames_until(ws, lambda f: f["seq"] == 3) == await stored(run, after=1)
    assert (await frame(dashboard))["event"] == "run.started"
    await close(*viewers, dashboard)
    for _ in range(50):
        if not feed.groups:
            break
        await asyncio.sleep(0.02)
    assert feed.groups == {}
    assert [await sync_to_async(redis_subscribers)(c) for c in channels] == [0, 0]
