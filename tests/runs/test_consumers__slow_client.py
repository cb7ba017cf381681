"""A client that does not read: bounded outbox, close 4008 with where to resume, nobody waits.

The transport's backpressure is what config/asgi.py gives consumers under daphne (a producer
on the socket); here a stand-in pauses it. tests/e2e/test_live__slow_client.py does the same
with a real socket that stops being read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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

    def write_text(self, text: str) -> bool:
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
