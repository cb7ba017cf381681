"""runyard_event_delivery_lag_seconds: live events handed to websocket clients, by stream."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from observability import hooks
from observability.metrics import EVENT_DELIVERY_LAG
from runs import live
from runs.events import run_group
from tenants.models import Tenant
from tests.observability.conftest import parse, value
from tests.runs.test_consumers__delivery import (
    api_key,
    async_db,
    bearer,
    close,
    emit,
    frames_until,
    new_run,
    open_ws,
    synced,
    ws_cleanup,  # noqa: F401 - a fixture
)


def lag_count(stream: str) -> float:
    text = Client().get("/metrics").content.decode()
    return value(parse(text), "runyard_event_delivery_lag_seconds_count", stream=stream)


@async_db
async def test_live_events_sent_to_a_websocket_client_are_timed(tenant: Tenant, queue: Any) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    ws = await open_ws(f"/ws/runs/{run.public_id}/", bearer(raw))
    await synced(ws)
    before = await sync_to_async(lag_count)("run")
    await emit(run, "step.started", "step.completed")
    await frames_until(ws, lambda f: f.get("seq") == 3)
    after = await sync_to_async(lag_count)("run")
    assert after - before >= 1  # once per batch handed over (the poller or the relay's)
    await close(ws)


def test_the_lag_is_read_from_the_oldest_frame_of_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, float]] = []
    monkeypatch.setattr(
        hooks.metrics, "observe_delivery_lag", lambda stream, s: seen.append((stream, s))
    )
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    frames = [
        {"type": "event", "run": "ab", "seq": 1, "event": "x",
         "data": {"ts": "2000-01-01T00:00:00+00:00", "note": '"ts":"nope'}, "ts": old.isoformat()},
        {"type": "event", "run": "ab", "seq": 2, "event": "y", "data": {},
         "ts": dt.datetime.now(dt.UTC).isoformat()},
    ]  # fmt: skip
    hooks.events_delivered(run_group("ab"), live.encode(frames, "seq"))
    hooks.events_delivered("tenant.cd", live.encode([{**frames[0], "id": 9}], "id"))
    assert [stream for stream, _ in seen] == ["run", "tenant"]
    assert all(2.0 <= s < 10 for _, s in seen)


def test_frames_without_a_timestamp_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    monkeypatch.setattr(hooks.metrics, "observe_delivery_lag", lambda stream, s: seen.append(s))
    hooks.events_delivered("run.ab", [(1, '{"type":"event","ts":"garbage"}'), (2, "{}")])
    hooks.events_delivered("run.ab", [(1, "{}")])
    assert seen == []
    assert EVENT_DELIVERY_LAG._labelnames == ("stream",)
