"""SSE and /wait: served from the process's shared feed, capped per tenant, re-authorised."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from runs import live, selectors, streams
from runs.api import live as live_api
from runs.events import run_group
from runs.models import Run
from runs.services import create_run
from tenants.models import ApiKey, Membership, Role, Tenant
from tenants.services import create_api_key, revoke_api_key
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import BASE
from tests.runs.test_api__live import _sse_messages
from tests.runs.test_consumers__delivery import (
    no_push,  # noqa: F401 - fixture
    ws_cleanup,  # noqa: F401 - fixture
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ws_cleanup")]


@pytest.fixture(autouse=True)
def quick_recheck(settings: Any) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "STREAM_RECHECK_SECONDS": 0.2}
    streams.forget_verdicts()


@pytest.fixture
def key(tenant: Tenant, make_graph: Any) -> tuple[ApiKey, dict[str, str]]:
    make_graph(tenant, chain_spec())
    make_graph(tenant, approval_spec())
    row, raw = create_api_key(tenant, role=Role.VIEWER)
    return row, {"Authorization": f"Bearer {raw}"}


class Reader:
    """An SSE response read in the background, chunk by chunk."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        self.chunks: list[str] = []
        self.task = asyncio.create_task(self._read(content))

    async def _read(self, content: AsyncIterator[bytes]) -> None:
        async for chunk in content:
            self.chunks.append(chunk.decode())

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    async def until(self, what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while what not in self.text:
            assert time.monotonic() < deadline, f"{what!r} not in {self.text!r}"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def open_stream(run: Run, headers: dict[str, str], client: Any = None) -> Reader:
    response: Any = await (client or AsyncClient()).get(
        f"{BASE}/runs/{run.public_id}/events/stream", headers=headers
    )
    assert response.status_code == 200
    return Reader(response.streaming_content)


async def waiting_run(tenant: Tenant, queue: InlineQueue) -> Run:
    """A run parked at its approval: it stays open without any more events."""
    run = await sync_to_async(create_run)(tenant, graph="approve")
    await sync_to_async(queue.drain)()
    return await Run.objects.aget(pk=run.pk)


# --- the shared feed -----------------------------------------------------------------------------


async def test_sse_streams_live_events_from_the_feed_not_a_poll_per_client(
    tenant: Tenant,
    key: tuple[ApiKey, dict[str, str]],
    queue: InlineQueue,
    no_push: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five idle streams read the database once each on replay and then never again, and
    what the feed hands over reaches every one of them."""
    reads = {"n": 0}
    real = selectors.aevents_after

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads["n"] += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(selectors, "aevents_after", counted)
    run = await waiting_run(tenant, queue)
    readers = [await open_stream(run, key[1]) for _ in range(5)]
    for reader in readers:
        await reader.until("approval.requested")
    after_replay = reads["n"]
    await asyncio.sleep(0.8)  # several recheck intervals: a per-client poll would read here
    assert reads["n"] == after_replay

    last = run.last_seq
    event = {"type": "event", "run": run.public_id.hex, "seq": last + 1, "event": "note",
             "data": {"from": "feed"}, "ts": "2026-12-01T00:00:00+00:00"}  # fmt: skip
    feed = live.current()
    assert feed is not None
    feed.deliver(run_group(run.public_id.hex), live.encode([event], "seq"))
    for reader in readers:
        await reader.until('"from":"feed"')
        message = _sse_messages(reader.text)[-1]
        assert message == {"id": last + 1, "seq": last + 1, "type": "note",
                           "data": {"from": "feed"}, "ts": "2026-12-01T00:00:00Z"}  # fmt: skip
    for reader in readers:
        await reader.stop()


async def test_sse_fills_a_gap_in_the_feed_from_the_database(
    tenant: Tenant,
    key: tuple[ApiKey, dict[str, str]],
    queue: InlineQueue,
    no_push: None,  # noqa: F811
) -> None:
    from tests.runs.test_consumers__delivery import emit, hint, stored

    run = await waiting_run(tenant, queue)
    reader = await open_stream(run, key[1])
    await reader.until("approval.requested")
    written = await emit(run, "custom.one", "custom.two", "custom.three")
    # The feed lost the first two: the third's seq shows the gap, which is read back.
    await hint(run, (await stored(run, after=written[1].seq)))
    await reader.until("custom.three")
    seqs = [m["seq"] for m in _sse_messages(reader.text)]
    assert seqs == list(range(1, written[-1].seq + 1))
    await reader.stop()


async def test_wait_wakes_on_the_feed(
    tenant: Tenant, key: tuple[ApiKey, dict[str, str]], queue: InlineQueue
) -> None:
    run = await sync_to_async(create_run)(tenant, graph="approve")
    waiter = asyncio.create_task(
        AsyncClient().get(f"{BASE}/runs/{run.public_id}/wait", {"timeout": 30}, headers=key[1])
    )
    # The wait takes its stream slot and stays open while the run is queued (polled: on a
    # loaded machine the request can take longer than any fixed sleep to get there).
    deadline = time.monotonic() + 10
    while streams.slots.held(tenant.pk) != 1:
        assert not waiter.done(), "the wait answered before its run was waiting"
        assert time.monotonic() < deadline, "the wait never took its stream slot"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await asyncio.to_thread(queue.drain)
    response = await asyncio.wait_for(waiter, timeout=5)
    assert response.json()["status"] == "waiting"
    assert streams.slots.held(tenant.pk) == 0


# --- the per-tenant cap --------------------------------------------------------------------------


async def test_streams_and_waits_past_the_tenant_cap_are_429(
    tenant: Tenant,
    other_tenant: Tenant,
    key: tuple[ApiKey, dict[str, str]],
    queue: InlineQueue,
    settings: Any,
    make_graph: Any,
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_STREAMS_PER_TENANT": 2}
    run = await waiting_run(tenant, queue)
    first, second = await open_stream(run, key[1]), await open_stream(run, key[1])
    client = AsyncClient()
    refused = [
        await client.get(f"{BASE}/runs/{run.public_id}/events/stream", headers=key[1]),
        await client.get(f"{BASE}/runs/{run.public_id}/wait", {"timeout": 1}, headers=key[1]),
    ]
    for response in refused:
        assert response.status_code == 429
        assert response["Retry-After"] == str(streams.STREAMS_RETRY_AFTER_SECONDS)
        error = response.json()["error"]
        assert error["code"] == "limit_exceeded.max_streams"
        assert error["details"]["max"] == 2 and error["message"]

    # Another tenant is not counted against this one.
    await sync_to_async(make_graph)(other_tenant, approval_spec())
    bob_run = await waiting_run(other_tenant, queue)
    _, bob_raw = await sync_to_async(create_api_key)(other_tenant, role=Role.VIEWER)
    bob = await open_stream(bob_run, {"Authorization": f"Bearer {bob_raw}"})

    # A closed stream gives its slot back.
    await first.stop()
    assert streams.slots.held(tenant.pk) == 1
    third = await open_stream(run, key[1])
    for reader in (second, third, bob):
        await reader.stop()
    assert streams.slots.held(tenant.pk) == 0


async def test_a_finished_stream_and_an_unread_one_give_their_slots_back(
    tenant: Tenant, key: tuple[ApiKey, dict[str, str]], queue: InlineQueue
) -> None:
    run = await sync_to_async(create_run)(tenant, graph="chain")
    await sync_to_async(queue.drain)()
    reader = await open_stream(run, key[1])
    await asyncio.wait_for(reader.task, 5)
    assert _sse_messages(reader.text)[-1]["type"] == "run.succeeded"
    assert streams.slots.held(tenant.pk) == 0
    response = await AsyncClient().get(f"{BASE}/runs/{run.public_id}/events/stream", headers=key[1])
    assert streams.slots.held(tenant.pk) == 1
    await sync_to_async(response.close)()  # never read: the client went away before the body
    assert streams.slots.held(tenant.pk) == 0


# --- re-authorisation ----------------------------------------------------------------------------


async def test_sse_ends_soon_after_its_key_is_revoked(
    tenant: Tenant, key: tuple[ApiKey, dict[str, str]], queue: InlineQueue
) -> None:
    run = await waiting_run(tenant, queue)
    reader = await open_stream(run, key[1])
    await reader.until("approval.requested")
    await asyncio.sleep(0.3)
    assert not reader.task.done()
    await sync_to_async(revoke_api_key)(key[0])
    await asyncio.wait_for(reader.task, 3)
    assert streams.slots.held(tenant.pk) == 0


async def test_sse_ends_soon_after_the_tenant_is_deactivated(
    tenant: Tenant, key: tuple[ApiKey, dict[str, str]], queue: InlineQueue
) -> None:
    run = await waiting_run(tenant, queue)
    reader = await open_stream(run, key[1])
    await reader.until("approval.requested")
    await Tenant.objects.filter(pk=tenant.pk).aupdate(is_active=False)
    await asyncio.wait_for(reader.task, 3)


async def test_sse_of_a_session_ends_soon_after_the_member_is_removed(
    tenant: Tenant, key: tuple[ApiKey, dict[str, str]], queue: InlineQueue, member: Any
) -> None:
    run = await waiting_run(tenant, queue)
    client = AsyncClient()
    await client.aforce_login(member)
    reader = await open_stream(run, {}, client)
    await reader.until("approval.requested")
    await asyncio.sleep(0.3)
    assert not reader.task.done()
    await Membership.objects.filter(user=member, tenant=tenant).adelete()
    await asyncio.wait_for(reader.task, 3)


async def test_wait_answers_401_once_its_key_is_revoked(
    tenant: Tenant, key: tuple[ApiKey, dict[str, str]], queue: InlineQueue
) -> None:
    run = await sync_to_async(create_run)(tenant, graph="chain")  # queued: nothing settles it
    waiter = asyncio.create_task(
        AsyncClient().get(f"{BASE}/runs/{run.public_id}/wait", {"timeout": 30}, headers=key[1])
    )
    await asyncio.sleep(0.3)
    await sync_to_async(revoke_api_key)(key[0])
    response = await asyncio.wait_for(waiter, 3)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_the_configured_recheck_disconnects_within_30_seconds() -> None:
    from django.conf import settings

    # A verdict is cached for half an interval: a stream learns of a revocation at most
    # 1.5 intervals after it.
    assert settings.RUNYARD["STREAM_RECHECK_SECONDS"] * 1.5 <= 30
    assert live_api.HEARTBEAT_SECONDS < 30
