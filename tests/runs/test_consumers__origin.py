"""The websocket origin check guards cookie sessions; key-authenticated clients need no Origin."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from config.asgi import application, websocket_app
from config.ws_origin import same_origin, trusted_origin
from runs.consumers import CLOSE_UNAUTHENTICATED
from tenants.models import Tenant
from tests.runs.test_consumers__auth import close_code, session_cookie
from tests.runs.test_consumers__delivery import (
    TIMEOUT,
    api_key,
    async_db,
    bearer,
    synced,
    ws_cleanup,  # noqa: F401 - the fixture async_db uses
)

pytestmark = pytest.mark.usefixtures("queue")

PATH = "/ws/tenant/?after=0"


async def handshake(headers: list[tuple[bytes, bytes]], app: Any = application) -> bool:
    """Whether the stream opens and syncs (False: refused at the handshake or closed)."""
    ws = WebsocketCommunicator(app, PATH, headers=headers)
    connected, _ = await ws.connect(timeout=TIMEOUT)
    if connected:
        await synced(ws)
    await ws.disconnect()
    return bool(connected)


def origin(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"origin", value.encode())]


def host(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", value.encode())]


@async_db
async def test_a_bearer_key_without_origin_is_accepted_with_real_allowed_hosts(
    tenant: Tenant, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["example.com"]
    key = bearer(await api_key(tenant, role="viewer"))
    assert await handshake(key)
    assert await handshake(key + host("example.com"))
    # Built while the setting holds, as in production (a validator may read it once).
    assert await handshake(key, websocket_app())


@async_db
async def test_a_bearer_key_from_a_foreign_origin_is_accepted_without_its_cookies(
    tenant: Tenant, member: Any, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["example.com"]
    foreign = origin("https://evil.test") + host("example.com")
    assert await handshake(bearer(await api_key(tenant)) + foreign)
    # A bad key does not fall back to the browser's session from a foreign page.
    cookie = await session_cookie(member)
    assert await close_code(PATH, bearer("ry_bad_key") + cookie + foreign) == (
        CLOSE_UNAUTHENTICATED
    )


@async_db
@pytest.mark.parametrize("allowed", [["*"], ["example.com", "evil.test"]])
async def test_a_cookie_session_from_a_foreign_origin_is_refused(
    allowed: list[str], member: Any, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = allowed
    cookie = await session_cookie(member)
    assert not await handshake(cookie + origin("https://evil.test") + host("example.com"))
    assert not await handshake(cookie + origin("http://example.com:8001") + host("example.com"))
    assert not await handshake(cookie + origin("null") + host("example.com"))


@async_db
async def test_a_cookie_session_from_its_own_origin_is_accepted(member: Any, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["example.com", "localhost"]
    cookie = await session_cookie(member)
    assert await handshake(cookie + origin("https://example.com") + host("example.com"))
    assert await handshake(cookie + origin("http://localhost:8000") + host("localhost:8000"))


@async_db
async def test_same_origin_needs_an_allowed_host(member: Any, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["example.com"]
    cookie = await session_cookie(member)
    assert not await handshake(cookie + origin("https://evil.test") + host("evil.test"))


@async_db
async def test_csrf_trusted_origins_may_open_cookie_sessions(member: Any, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["api.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.corp.test"]
    cookie = await session_cookie(member)
    headers = cookie + host("api.example.com")
    assert await handshake(headers + origin("https://app.example.com"))
    assert await handshake(headers + origin("https://dash.corp.test"))
    assert not await handshake(headers + origin("http://dash.corp.test"))


@async_db
async def test_a_cookie_session_without_origin_is_no_browser_and_is_accepted(
    member: Any, settings: Any
) -> None:
    # Browsers always send Origin on a websocket handshake; without one, no victim's
    # browser made the request.
    settings.ALLOWED_HOSTS = ["example.com"]
    assert await handshake(await session_cookie(member))


def test_a_secure_handshake_refuses_a_plain_http_origin(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["example.com"]
    assert same_origin("https://example.com", "example.com", "wss")
    assert not same_origin("http://example.com", "example.com", "wss")
    assert same_origin("http://example.com", "example.com", "ws")
    assert not same_origin("https://example.com", None, "ws")
    assert not trusted_origin("https://example.com")
