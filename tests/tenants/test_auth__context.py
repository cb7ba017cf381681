"""TenantContext roles, require_role, and the websocket handshake's context_from_scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import connections

from tenants.auth import SESSION_TENANT_KEY, TenantContext, context_from_scope
from tenants.models import Role, Tenant
from tenants.permissions import Forbidden, require_role
from tenants.services import create_api_key, revoke_api_key


@pytest.mark.parametrize(
    ("role", "read", "write", "manage"),
    [
        (Role.VIEWER, True, False, False),
        (Role.MEMBER, True, True, False),
        (Role.ADMIN, True, True, True),
        (Role.OWNER, True, True, True),
    ],
)
def test_role_helpers(tenant: Tenant, role: str, read: bool, write: bool, manage: bool) -> None:
    ctx = TenantContext(tenant=tenant, role=role)
    assert (ctx.can_read, ctx.can_write, ctx.can_manage) == (read, write, manage)


def test_require_role_returns_the_context_for_that_role_or_higher(tenant: Tenant) -> None:
    ctx = TenantContext(tenant=tenant, role=Role.ADMIN)
    assert require_role(ctx, Role.MEMBER) is ctx
    assert require_role(ctx, Role.ADMIN) is ctx


def test_require_role_raises_forbidden_below_it(tenant: Tenant) -> None:
    with pytest.raises(Forbidden) as info:
        require_role(TenantContext(tenant=tenant, role=Role.VIEWER), Role.MEMBER)
    exc = info.value
    assert exc.code == "forbidden"
    assert "member role or higher" in exc.message
    assert exc.details == {"required_role": "member", "role": "viewer"}
    assert isinstance(exc, PermissionDenied)


def test_require_role_without_a_context_is_forbidden() -> None:
    with pytest.raises(Forbidden):
        require_role(None, Role.VIEWER)


def _scope(headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "websocket", "path": "/ws/tenant/", "headers": raw_headers, **extra}


@pytest.fixture
async def thread_connections_closed() -> AsyncIterator[None]:
    yield
    # The thread database_sync_to_async uses keeps its own persistent connection; close it so
    # the test database can be dropped at the end of the session (PostgreSQL refuses otherwise).
    await sync_to_async(connections.close_all)()


def async_db(test: Any) -> Any:
    # database_sync_to_async runs in another thread, on another connection: rows must be
    # committed for it to see them.
    test = pytest.mark.django_db(transaction=True)(test)
    return pytest.mark.usefixtures("thread_connections_closed")(test)


@async_db
async def test_bearer_header_on_the_handshake(tenant: Tenant) -> None:
    key, raw = await _create_key(tenant)
    ctx = await context_from_scope(_scope({"Authorization": f"Bearer {raw}"}))
    assert ctx is not None
    assert ctx.tenant.pk == tenant.pk and ctx.api_key == key and ctx.role == Role.MEMBER


@async_db
async def test_session_user_on_the_handshake(member: Any) -> None:
    ctx = await context_from_scope(_scope(user=member, session={}))
    assert ctx is not None
    assert (ctx.tenant.slug, ctx.role, ctx.user) == ("alice-co", Role.MEMBER, member)


@async_db
async def test_session_tenant_choice_applies_to_the_handshake(
    outsider: Any, tenant: Tenant
) -> None:
    session = {SESSION_TENANT_KEY: str(tenant.public_id)}
    assert await context_from_scope(_scope(user=outsider, session=session)) is None


@async_db
async def test_nobody_on_the_handshake(tenant: Tenant) -> None:
    _, raw = await _create_key(tenant)
    assert await context_from_scope(_scope()) is None
    assert await context_from_scope(_scope(user=AnonymousUser(), session={})) is None
    assert await context_from_scope(_scope({"Authorization": "Bearer ry_x_y"})) is None
    assert await context_from_scope(_scope({"Authorization": f"Token {raw}"})) is None


@async_db
async def test_revoked_key_on_the_handshake_is_refused(tenant: Tenant) -> None:
    key, raw = await _create_key(tenant)
    await sync_to_async(revoke_api_key)(key)
    assert await context_from_scope(_scope({"Authorization": f"Bearer {raw}"})) is None


async def _create_key(tenant: Tenant) -> tuple[Any, str]:
    return await sync_to_async(create_api_key)(tenant)
