"""Open streams lose access with their credential: revoked key 4401, removed member 4403."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from runs import streams
from runs.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from runs.models import Run
from tenants.models import ApiKey, Membership, Tenant
from tenants.services import create_api_key, revoke_api_key
from tests.runs.test_consumers__auth import session_cookie
from tests.runs.test_consumers__delivery import (
    async_db,
    bearer,
    frames_until,
    new_run,
    open_ws,
    synced,
    ws_cleanup,  # noqa: F401 - the fixture async_db uses
)

pytestmark = pytest.mark.usefixtures("queue")

RECHECK = 0.2
# A verdict is shared for half an interval: closed within 1.5 intervals, plus slack.
WITHIN = RECHECK * 1.5 + 2.0


@pytest.fixture(autouse=True)
def quick_recheck(settings: Any) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "STREAM_RECHECK_SECONDS": RECHECK}
    streams.forget_verdicts()


async def both_streams(run: Run, headers: list[tuple[bytes, bytes]]) -> list[Any]:
    sockets = [
        await open_ws(f"/ws/runs/{run.public_id}/", headers),
        await open_ws("/ws/tenant/", headers),
    ]
    for ws in sockets:
        await synced(ws)
    return sockets


async def closed_with(ws: WebsocketCommunicator) -> int:
    """The close code the stream ends with (pings before it are skipped)."""
    got = await frames_until(ws, lambda f: f["type"] == "close")
    await ws.disconnect()
    return int(got[-1]["code"])


async def still_open(ws: WebsocketCommunicator) -> bool:
    """Nothing, no close either, for a few recheck intervals (pings come every 15 s)."""
    return bool(await ws.receive_nothing(RECHECK * 3))


async def new_key(tenant: Tenant) -> tuple[ApiKey, list[tuple[bytes, bytes]]]:
    row, raw = await sync_to_async(create_api_key)(tenant, role="viewer")
    return row, bearer(raw)


@async_db
async def test_streams_of_a_revoked_key_close_4401(tenant: Tenant) -> None:
    run = await new_run(tenant)
    row, headers = await new_key(tenant)
    _, other_headers = await new_key(tenant)
    sockets = await both_streams(run, headers)
    others = await both_streams(run, other_headers)
    assert await still_open(sockets[0])
    await sync_to_async(revoke_api_key)(row)
    for ws in sockets:
        assert await closed_with(ws) == CLOSE_UNAUTHENTICATED
    for ws in others:  # another key of the same tenant keeps its streams
        assert await still_open(ws)
        await ws.disconnect()


@async_db
async def test_streams_of_a_deleted_key_close_4401(tenant: Tenant) -> None:
    run = await new_run(tenant)
    row, headers = await new_key(tenant)
    (ws, tenant_ws) = await both_streams(run, headers)
    await ApiKey.objects.filter(pk=row.pk).adelete()
    assert await closed_with(ws) == CLOSE_UNAUTHENTICATED
    assert await closed_with(tenant_ws) == CLOSE_UNAUTHENTICATED


@async_db
async def test_streams_of_a_deactivated_tenant_close_4403(tenant: Tenant, member: Any) -> None:
    run = await new_run(tenant)
    _, headers = await new_key(tenant)
    sockets = await both_streams(run, headers) + await both_streams(
        run, await session_cookie(member)
    )
    await Tenant.objects.filter(pk=tenant.pk).aupdate(is_active=False)
    for ws in sockets:
        assert await closed_with(ws) == CLOSE_FORBIDDEN


@async_db
async def test_streams_of_a_removed_member_close_4403(tenant: Tenant, member: Any) -> None:
    run = await new_run(tenant)
    sockets = await both_streams(run, await session_cookie(member))
    assert await still_open(sockets[1])
    await Membership.objects.filter(user=member, tenant=tenant).adelete()
    for ws in sockets:
        assert await closed_with(ws) == CLOSE_FORBIDDEN


@async_db
async def test_streams_of_a_deactivated_user_close_4401(tenant: Tenant, member: Any) -> None:
    run = await new_run(tenant)
    sockets = await both_streams(run, await session_cookie(member))
    await get_user_model().objects.filter(pk=member.pk).aupdate(is_active=False)
    for ws in sockets:
        assert await closed_with(ws) == CLOSE_UNAUTHENTICATED


@async_db
async def test_many_streams_of_one_key_share_one_check(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = streams.recheck_context

    def counted(ctx: Any) -> Any:
        calls["n"] += 1
        return real(ctx)

    monkeypatch.setattr(streams, "recheck_context", counted)
    run = await new_run(tenant)
    _, headers = await new_key(tenant)
    sockets = [ws for _ in range(5) for ws in await both_streams(run, headers)]
    assert await still_open(sockets[0])  # three intervals of ten streams
    assert 1 <= calls["n"] <= 6
    for ws in sockets:
        await ws.disconnect()
