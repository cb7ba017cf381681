"""Long polls: GET /runs/{id}/wait and the Server-Sent Events stream, through the ASGI stack."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import AsyncClient

from runs.api import live
from runs.models import Run
from runs.services import cancel_run, create_run, decide_approval
from tenants.models import Role, Tenant
from tenants.services import create_api_key
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import BASE, key_client
from tests.runs.test_consumers__delivery import ws_cleanup  # noqa: F401 - stops the feed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ws_cleanup")]


@pytest.fixture
def auth(tenant: Tenant, make_graph: Any) -> dict[str, str]:
    make_graph(tenant, chain_spec())
    make_graph(tenant, approval_spec())
    _, raw = create_api_key(tenant, role=Role.VIEWER)
    return {"Authorization": f"Bearer {raw}"}


def _drain_in_thread(queue: InlineQueue) -> list[str]:
    try:
        return queue.drain()
    finally:
        connection.close()


def _sse_messages(text: str) -> list[dict[str, Any]]:
    messages = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            messages.append({"id": int(fields["id"]), **json.loads(fields["data"])})
    return messages


async def _read(content: AsyncIterator[bytes]) -> str:
    return "".join([chunk.decode() async for chunk in content])


# --- wait ----------------------------------------------------------------------------------------


async def test_wait_returns_at_once_for_a_finished_run(
    tenant: Tenant, auth: dict[str, str], queue: InlineQueue
) -> None:
    run = await sync_to_async(create_run)(tenant, graph="chain")
    await sync_to_async(queue.drain)()
    started = time.monotonic()
    response = await AsyncClient().get(
        f"{BASE}/runs/{run.public_id}/wait", {"timeout": 30}, headers=auth
    )
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert time.monotonic() - started < 5


async def test_wait_returns_when_the_run_starts_waiting(
    tenant: Tenant, auth: dict[str, str], queue: InlineQueue
) -> None:
    run = await sync_to_async(create_run)(tenant, graph="approve")
    waiter = asyncio.create_task(
        AsyncClient().get(f"{BASE}/runs/{run.public_id}/wait", {"timeout": 30}, headers=auth)
    )
    await asyncio.sleep(0.3)
    assert not waiter.done(), "a queued run keeps the client waiting"
    # The worker runs in another thread, as it would in another process.
    assert await asyncio.to_thread(_drain_in_thread, queue) == ["waiting"]
    response = await asyncio.wait_for(waiter, timeout=10)
    assert response.json()["status"] == "waiting"
    assert response.json()["waiting_for"]["id"] == "gate@1"


async def test_wait_gives_up_at_the_timeout(
    tenant: Tenant, auth: dict[str, str], queue: InlineQueue
) -> None:
    run = await sync_to_async(create_run)(tenant, graph="chain")
    started = time.monotonic()
    response = await AsyncClient().get(
        f"{BASE}/runs/{run.public_id}/wait", {"timeout": "0.4"}, headers=auth
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert 0.4 <= elapsed < 5


async def test_many_waiters_share_one_event_loop(
    tenant: Tenant, auth: dict[str, str], queue: InlineQueue
) -> None:
    """Waiting holds no worker thread: 30 concurrent waits take about one timeout in total."""
    run = await sync_to_async(create_run)(tenant, graph="chain")
    started = time.monotonic()
    responses = await asyncio.gather(
        *[
            AsyncClient().get(f"{BASE}/runs/{run.public_id}/wait", {"timeout": 1}, headers=auth)
            for _ in range(30)
        ]
    )
    assert {r.status_code for r in responses} == {200}
    assert time.monotonic() - started < 8


async def test_wait_timeout_is_capped_and_validated(
    tenant: Tenant, auth: dict[str, str], queue: InlineQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "WAIT_CAP_SECONDS", 0.2)
    run = await sync_to_async(create_run)(tenant, graph="chain")
    client = AsyncClient()
    started = time.monotonic()
    capped = await client.get(f"{BASE}/runs/{run.public_id}/wait", {"timeout": 999}, headers=auth)
    assert capped.status_code == 200 and time.monotonic() - started < 5
    negative = await client.get(f"{BASE}/runs/{run.public_id}/wait", {"timeout": -1}, headers=auth)
    assert negative.status_code == 422


# --- Server-Sent Events ---------------------------------------------------------------------------


async def test_stream_replays_a_finished_run_and_ends(
    tenant: Tenant, auth: dict[str, str], queue: InlineQueue
) -> None:
    run = await sync_to_async(create_run)(tenant, graph="chain")
    await sync_to_async(queue.drain)()
    response = await AsyncClient().get(f"{BASE}/runs/{run.public_id}/events/stream", headers=auth)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache"
    messages = _sse_messages(await _read(response.streaming_content))
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [m["id"] for m in messages] == seqs
    assert messages[0]["type"] == "run.queued"
    assert messages[-1]["type"] == "run.succeeded"
    assert set(messages[0]) == {"id", "seq", "type", "data", "ts"}


async def test_stream_resumes_after_last_event_id_or_after(
    tenant: Tenant, auth: dict[str, str], queue: InlineQueue
) -> None:
    run = await sync_to_async(create_run)(tenant, graph="chain")
    await sync_to_async(queue.drain)()
    url = f"{BASE}/runs/{run.public_id}/events/stream"
    client = AsyncClient()
    resumed = await client.get(url, headers={**auth, "Last-Event-ID": "3"})
    assert _sse_messages(await _read(resumed.streaming_content))[0]["seq"] == 4
    after = await client.get(url, {"after": 5}, headers=auth)
    assert _sse_messages(await _read(after.streaming_content))[0]["seq"] == 6
    both = await client.get(url, {"after": 1}, headers={**auth, "Last-Event-ID": "5"})
    assert _sse_messages(await _read(both.streaming_content))[0]["seq"] == 6
    bad = await client.get(url, headers={**auth, "Last-Event-ID": "soon"})
    assert bad.status_code == 422


async def test_stream_tails_a_live_run_until_its_terminal_event(
    tenant: Tenant, auth: dict[str, str], queue: InlineQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.1)
    run = await sync_to_async(create_run)(tenant, graph="approve")
    response = await AsyncClient().get(f"{BASE}/runs/{run.public_id}/events/stream", headers=auth)
    chunks: list[str] = []

    async def consume() -> None:
        async for chunk in response.streaming_content:
            chunks.append(chunk.decode())

    reader = asyncio.create_task(consume())
    await asyncio.to_thread(_drain_in_thread, queue)  # runs until the approval
    await asyncio.sleep(0.4)
    assert not reader.done(), "a waiting run keeps the stream open"
    text = "".join(chunks)
    assert ": heartbeat" in text
    assert "approval.requested" in text

    await sync_to_async(decide_approval)(
        await Run.objects.aget(pk=run.pk), "gate@1", decision="approve"
    )
    await asyncio.to_thread(_drain_in_thread, queue)
    await asyncio.wait_for(reader, timeout=10)
    messages = _sse_messages("".join(chunks))
    assert messages[-1]["type"] == "run.succeeded"
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(1, len(seqs) + 1)), "every event once, in order"


async def test_stream_ends_after_a_cancel(
    tenant: Tenant, auth: dict[str, str], queue: InlineQueue
) -> None:
    run = await sync_to_async(create_run)(tenant, graph="chain")
    response = await AsyncClient().get(f"{BASE}/runs/{run.public_id}/events/stream", headers=auth)
    reader = asyncio.create_task(_read(response.streaming_content))
    await asyncio.sleep(0.2)
    await sync_to_async(cancel_run)(await Run.objects.aget(pk=run.pk))
    text = await asyncio.wait_for(reader, timeout=10)
    assert _sse_messages(text)[-1]["type"] == "run.cancelled"


def test_stream_and_wait_of_another_tenants_run_are_404(
    tenant: Tenant, other_tenant: Tenant, auth: dict[str, str], queue: InlineQueue
) -> None:
    run = create_run(tenant, graph="chain")
    bob = key_client(other_tenant, Role.OWNER)
    for path in ("wait?timeout=0", "events/stream"):
        assert bob.get(f"/runs/{run.public_id}/{path}").status_code == 404
