"""A client that does not read: bounded outbox, close 4008 with where to resume, nobody waits.

The transport's backpressure is what config/asgi.py gives consumers under daphne (a producer
on the socket); here a stand-in pauses it. tests/e2e/test_live__slow_client.py does the same
with a real socket that stops being read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from runs.consumers import CLOSE_TOO_SLOW, FLOW_SCOPE_KEY
from tenants.models import Tenant
from tests.runs.test_consumers__delivery import (
    api_key,
    async_db,
    bearer,
    emit,
    frame,
    frames_until,
    new_run,
    open_ws,
    stored,
    synced,
    ws_cleanup,  # noqa: F401 - the fixture async_db uses
)

pytestmark = pytest.mark.usefixtures("queue")


class StalledFlow:
    """A transport whose buffer the test fills and empties."""

    def __init__(self, *, paused: bool = False) -> None:
        self._writable = asyncio.Event()
        if not paused:
            self._writable.set()
        self.closed = False

    @property
    def paused(self) -> bool:
        return not self._writable.is_set()

    def pause(self) -> None:
        self._writable.clear()

    def resume(self) -> None:
        self._writable.set()

    async def wait_writable(self) -> None:
        await self._writable.wait()

    def write_texts(self, texts: Sequence[str]) -> bool:
        return False  # frames go through the consumer's `send`, where the test reads them


def with_flow(flow: StalledFlow) -> Callable[[Any], Any]:
    def wrap(app: Any) -> Any:
        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await app({**scope, FLOW_SCOPE_KEY: flow}, receive, send)

        return asgi

    return wrap


@pytest.fixture
def bound(settings: Any) -> int:
    settings.RUNYARD = {**settings.RUNYARD, "WS_MAX_BUFFERED": 5}
    return 5


@async_db
async def test_a_client_past_the_bound_is_closed_4008_and_resumes_exactly(
    tenant: Tenant, bound: int
) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    flow = StalledFlow()
    slow = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw), with_flow(flow))
    fast = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw))
    for ws in (slow, fast):
        await synced(ws)
    flow.pause()  # the client stopped reading: its socket buffer is full
    for _ in range(3):
        await emit(run, *["llm.delta"] * 4)

    expected = await stored(run, after=1)
    assert await frames_until(fast, lambda f: f["seq"] == 13) == expected
    assert await frame(slow) == {"type": "overflow", "after": 1}
    assert await frame(slow) == {"type": "close", "code": CLOSE_TOO_SLOW, "reason": "after=1"}
    await slow.disconnect()

    again = await open_ws(f"/ws/runs/{run.public_id}/?after=1", bearer(raw))
    assert await synced(again) == (expected, 13)
    await again.disconnect()
    await fast.disconnect()


@async_db
async def test_a_stalled_client_below_the_bound_holds_nobody_up(tenant: Tenant) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    flow = StalledFlow()
    slow = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw), with_flow(flow))
    await synced(slow)
    flow.pause()
    fast = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw))
    await synced(fast)
    await emit(run, "run.started", "step.started", "step.completed")
    expected = await stored(run, after=1)
    assert await frames_until(fast, lambda f: f["seq"] == 4) == expected
    assert await slow.receive_nothing(0.3)  # held in its own outbox, not in anyone's way
    flow.resume()
    assert await frames_until(slow, lambda f: f["seq"] == 4) == expected
    await slow.disconnect()
    await fast.disconnect()


@async_db
async def test_replay_waits_for_the_client_instead_of_closing_it(
    tenant: Tenant, bound: int
) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    await emit(run, *["llm.delta"] * 20)
    flow = StalledFlow(paused=True)
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw), with_flow(flow))
    assert await ws.receive_nothing(0.3)
    flow.resume()
    assert await synced(ws) == (await stored(run), 21)
    await ws.disconnect()


@async_db
async def test_tenant_stream_closes_a_slow_client_too(tenant: Tenant, bound: int) -> None:
    raw = await api_key(tenant)
    flow = StalledFlow()
    slow = await open_ws("/ws/tenant/", bearer(raw), with_flow(flow))
    _, cursor = await synced(slow)
    flow.pause()
    for _ in range(8):
        await new_run(tenant)  # run.queued each
    assert await frame(slow) == {"type": "overflow", "after": cursor}
    closed = await frame(slow)
    assert (closed["type"], closed["code"]) == ("close", CLOSE_TOO_SLOW)
    await slow.disconnect()


class WritingFlow(StalledFlow):
    """A transport that takes frames straight away (as daphne's socket does) and records each
    write: the frames it carried, decoded."""

    def __init__(self, *, paused: bool = False) -> None:
        super().__init__(paused=paused)
        self.writes: list[list[dict[str, Any]]] = []

    def write_texts(self, texts: Sequence[str]) -> bool:
        if self.paused:
            return False
        self.writes.append([json.loads(text) for text in texts])
        return True

    async def written_until(self, seq: int, kind: str = "event") -> list[list[dict[str, Any]]]:
        """The writes up to the one carrying frame `kind` with `seq`; later ones stay."""
        async with asyncio.timeout(5):
            while True:
                for i, write in enumerate(self.writes):
                    if any(f["type"] == kind and f.get("seq") == seq for f in write):
                        done, self.writes = self.writes[: i + 1], self.writes[i + 1 :]
                        return done
                await asyncio.sleep(0.01)


def events_in(writes: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [f for write in writes for f in write if f["type"] == "event"]


@async_db
async def test_a_transactions_events_reach_the_socket_in_one_write(tenant: Tenant) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)  # seq 1: run.queued
    flow = WritingFlow()
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw), with_flow(flow))
    replayed = await flow.written_until(1, "synced")
    assert events_in(replayed) == await stored(run)

    await emit(run, "run.started", "step.started", "step.completed")
    first = await flow.written_until(4)
    assert [[f["seq"] for f in w] for w in first if w[0]["type"] == "event"] == [[2, 3, 4]]
    await emit(run, "llm.delta")
    second = await flow.written_until(5)
    assert [[f["seq"] for f in w] for w in second if w[0]["type"] == "event"] == [[5]]
    assert events_in(first + second) == await stored(run, after=1)
    await ws.disconnect()


@async_db
async def test_frames_queued_while_the_socket_was_full_leave_in_one_write(tenant: Tenant) -> None:
    raw = await api_key(tenant)
    run = await new_run(tenant)
    flow = WritingFlow()
    ws = await open_ws(f"/ws/runs/{run.public_id}/?after=0", bearer(raw), with_flow(flow))
    await flow.written_until(1, "synced")
    flow.pause()
    for _ in range(3):
        await emit(run, "llm.delta", "llm.delta")
    await asyncio.sleep(0.3)  # delivered to the consumer, held in its outbox
    assert flow.writes == []

    flow.resume()
    writes = await flow.written_until(7)
    assert [[f["seq"] for f in w] for w in writes] == [[2, 3, 4, 5, 6, 7]]
    assert events_in(writes) == await stored(run, after=1)
    await ws.disconnect()
