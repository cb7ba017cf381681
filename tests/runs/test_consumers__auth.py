"""Who may open which stream: Bearer key or session cookie, own tenant only, and close codes."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from config.asgi import application
from runs.consumers import (
    CLOSE_BAD_REQUEST,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
)
from runs.models import Run
from tenants.auth import SESSION_TENANT_KEY
from tenants.models import Tenant
from tests.runs.test_consumers__delivery import (
    TIMEOUT,
    api_key,
    async_db,
    bearer,
    emit,
    frame,
    frames_until,
    lifecycle,
    new_run,
    stored,
    synced,
    ws_cleanup,  # noqa: F401 - the fixture async_db uses
)

pytestmark = pytest.mark.usefixtures("queue")


async def close_code(path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """Open `path` and return the code it is closed with before any event is sent."""
    ws = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await ws.connect(timeout=TIMEOUT)
    if connected:  # accepted so that the code can travel in a close frame
        out = await frame(ws)
        assert out["type"] == "close", out
        code = out["code"]
    await ws.disconnect()
    return code


async def session_cookie(user: Any, tenant: Tenant | None = None) -> list[tuple[bytes, bytes]]:
    def login() -> str:
        client = Client()
        client.force_login(user)
        if tenant is not None:
            session = client.session
            session[SESSION_TENANT_KEY] = str(tenant.public_id)
            session.save()
        return client.cookies[django_settings.SESSION_COOKIE_NAME].value

    value = await sync_to_async(login)()
    return [(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={value}".encode())]


@pytest.fixture
def alice_run(tenant: Tenant) -> Run:
    from runs.services import create_graph_version, create_run
    from tests.runs.conftest import chain_spec

    create_graph_version(tenant, chain_spec())
    return create_run(tenant, graph="chain")


@async_db
async def test_both_streams_close_4401_without_credentials(alice_run: Run) -> None:
    assert await close_code(f"/ws/runs/{alice_run.public_id}/", []) == CLOSE_UNAUTHENTICATED
    assert await close_code("/ws/tenant/", []) == CLOSE_UNAUTHENTICATED


@async_db
async def test_both_streams_close_4401_with_a_bad_key(alice_run: Run) -> None:
    headers = bearer("ry_nothing_here")
    assert await close_code(f"/ws/runs/{alice_run.public_id}/", headers) == CLOSE_UNAUTHENTICATED
    assert await close_code("/ws/tenant/", headers) == CLOSE_UNAUTHENTICATED
    token = [(b"authorization", b"Token whatever")]
    assert await close_code("/ws/tenant/", token) == CLOSE_UNAUTHENTICATED


@async_db
async def test_another_tenants_run_closes_4404_like_an_unknown_one(
    alice_run: Run, other_tenant: Tenant
) -> None:
    bob = bearer(await api_key(other_tenant))
    assert await close_code(f"/ws/runs/{alice_run.public_id}/", bob) == CLOSE_NOT_FOUND
    assert await close_code(f"/ws/runs/{alice_run.public_id.hex}/", bob) == CLOSE_NOT_FOUND
    alice = bearer(await api_key(alice_run.tenant))
    unknown = "5b0c1f4e-0000-4000-8000-000000000000"
    assert await close_code(f"/ws/runs/{unknown}/", alice) == CLOSE_NOT_FOUND
    assert await close_code("/ws/runs/not-a-uuid/", alice) == CLOSE_NOT_FOUND


@async_db
async def test_a_malformed_cursor_closes_4400(alice_run: Run) -> None:
    alice = bearer(await api_key(alice_run.tenant))
    for after in ("x", "-1", "1.5"):
        path = f"/ws/runs/{alice_run.public_id}/?after={after}"
        assert await close_code(path, alice) == CLOSE_BAD_REQUEST
        assert await close_code(f"/ws/tenant/?after={after}", alice) == CLOSE_BAD_REQUEST


@async_db
async def test_bearer_key_of_any_role_opens_both_streams(alice_run: Run) -> None:
    viewer = bearer(await api_key(alice_run.tenant, role="viewer"))
    ws = WebsocketCommunicator(application, f"/ws/runs/{alice_run.public_id}/", headers=viewer)
    assert (await ws.connect(TIMEOUT))[0]
    assert (await synced(ws))[0] == await stored(alice_run)
    await ws.disconnect()
    ws = WebsocketCommunicator(application, "/ws/tenant/?after=0", headers=viewer)
    assert (await ws.connect(TIMEOUT))[0]
    assert (await synced(ws))[0] == await lifecycle(alice_run.tenant)
    await ws.disconnect()


@async_db
async def test_session_cookie_opens_both_streams(alice_run: Run, member: Any) -> None:
    cookie = await session_cookie(member)
    ws = WebsocketCommunicator(application, f"/ws/runs/{alice_run.public_id}/", headers=cookie)
    assert (await ws.connect(TIMEOUT))[0]
    assert (await synced(ws))[0] == await stored(alice_run)
    await emit(alice_run, "run.started")
    assert (await frame(ws))["event"] == "run.started"
    await ws.disconnect()
    ws = WebsocketCommunicator(application, "/ws/tenant/?after=0", headers=cookie)
    assert (await ws.connect(TIMEOUT))[0]
    assert (await synced(ws))[0] == await lifecycle(alice_run.tenant)
    await ws.disconnect()


@async_db
async def test_session_of_another_tenants_member_is_refused_the_run(
    alice_run: Run, outsider: Any
) -> None:
    cookie = await session_cookie(outsider)
    assert await close_code(f"/ws/runs/{alice_run.public_id}/", cookie) == CLOSE_NOT_FOUND


@async_db
async def test_session_choosing_a_tenant_the_user_left_is_unauthenticated(
    alice_run: Run, outsider: Any
) -> None:
    cookie = await session_cookie(outsider, tenant=alice_run.tenant)
    assert await close_code("/ws/tenant/", cookie) == CLOSE_UNAUTHENTICATED


@async_db
async def test_tenant_stream_never_shows_another_tenants_runs(
    alice_run: Run, other_tenant: Tenant, outsider: Any
) -> None:
    bob_run = await new_run(other_tenant)
    for headers in (bearer(await api_key(other_tenant)), await session_cookie(outsider)):
        ws = WebsocketCommunicator(application, "/ws/tenant/?after=0", headers=headers)
        assert (await ws.connect(TIMEOUT))[0]
        replayed, _ = await synced(ws)
        assert {f["run"] for f in replayed} == {bob_run.public_id.hex}
        await emit(alice_run, "run.started", "run.succeeded")
        await emit(bob_run, "run.started")
        got = await frames_until(ws, lambda f: f["event"] == "run.started")
        assert [f["run"] for f in got] == [bob_run.public_id.hex]
        assert await ws.receive_nothing(0.3)
        await ws.disconnect()
