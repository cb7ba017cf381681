"""Who is calling, for which tenant, with which role: API keys and dashboard sessions.

Routers use `auth=api_auth`; `request.auth` is then a TenantContext. Channels consumers call
`context_from_scope(scope)` in `connect()`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest
from ninja.errors import AuthorizationError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from tenants.models import ROLE_RANK, ApiKey, Membership, Role, Tenant
from tenants.services import authenticate_api_key

logger = logging.getLogger(__name__)

# The dashboard stores the chosen tenant's public id under this session key.
SESSION_TENANT_KEY = "tenant_id"
# Why ApiKeyAuth refused a request's Authorization header, kept on the request so that the 401
# (config/api.py) can say what to fix: "invalid_key" (a Bearer key that is unknown, revoked or
# of a deactivated tenant) or "wrong_scheme" (an Authorization header that is not Bearer).
AUTH_REFUSAL_ATTR = "runyard_auth_refusal"


def auth_refusal(request: HttpRequest) -> str | None:
    return getattr(request, AUTH_REFUSAL_ATTR, None)


@dataclass(frozen=True)
class TenantContext:
    """The caller as every service sees it: a tenant, a role in it, and who holds that role."""

    tenant: Tenant
    role: str
    user: Any = None
    api_key: ApiKey | None = None

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]

    @property
    def can_read(self) -> bool:
        return self.has_role(Role.VIEWER)

    @property
    def can_write(self) -> bool:
        return self.has_role(Role.MEMBER)

    @property
    def can_manage(self) -> bool:
        return self.has_role(Role.ADMIN)

    @property
    def principal(self) -> str:
        """Who starts a run, as runs record it (`created_by`): "key:<api key name>" or
        "user:<login>"."""
        if self.api_key is not None:
            return f"key:{self.api_key.name or self.api_key.prefix}"
        if self.user is not None:
            return f"user:{self.user.get_username()}"
        return "anonymous"

    @property
    def actor_label(self) -> str:
        if self.api_key is not None:
            return f"api_key:{self.api_key.prefix}"
        if self.user is not None:
            return str(self.user.get_username())
        return "anonymous"


def context_for_key(raw: str) -> TenantContext | None:
    key = authenticate_api_key(raw)
    if key is None:
        return None
    return TenantContext(tenant=key.tenant, role=key.role, api_key=key)


def _parse_tenant_ref(value: Any) -> dict[str, Any] | None:
    # Public ids are what the dashboard stores; a bare primary key is accepted as well.
    if isinstance(value, int) and not isinstance(value, bool):
        return {"tenant_id": value}
    if isinstance(value, str):
        if value.isdigit():
            return {"tenant_id": int(value)}
        try:
            return {"tenant__public_id": uuid.UUID(value)}
        except ValueError:
            return None
    return None


def context_for_user(user: Any, tenant_ref: Any = None) -> TenantContext | None:
    """The context of a logged-in user in the tenant `tenant_ref` names (a public id or pk),
    or in their first tenant when it names none.

    A reference to a tenant the user no longer belongs to gives None rather than another
    tenant: a dashboard showing tenant A must never act on tenant B.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    memberships = Membership.objects.select_related("tenant").filter(
        user=user, tenant__is_active=True
    )
    if tenant_ref not in (None, ""):
        lookup = _parse_tenant_ref(tenant_ref)
        if lookup is None:
            return None
        memberships = memberships.filter(**lookup)
    membership = memberships.order_by("created_at", "pk").first()
    if membership is None:
        return None
    return TenantContext(tenant=membership.tenant, role=membership.role, user=user)


def remember_tenant(session: Any, tenant: Tenant) -> None:
    """Make `tenant` the one the dashboard session acts on."""
    session[SESSION_TENANT_KEY] = str(tenant.public_id)


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer ry_<prefix>_<secret>`."""

    def __call__(self, request: HttpRequest) -> TenantContext | None:
        # HttpBearer logs the whole header value on a wrong scheme when DEBUG is on, which
        # would put a key in the logs; this parses the header without logging it.
        value = request.headers.get(self.header, "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != self.openapi_scheme or not token.strip():
            if value.strip():
                setattr(request, AUTH_REFUSAL_ATTR, "wrong_scheme")
            return None
        ctx = self.authenticate(request, token.strip())
        if ctx is None:
            setattr(request, AUTH_REFUSAL_ATTR, "invalid_key")
        return ctx

    def authenticate(self, request: HttpRequest, token: str) -> TenantContext | None:
        return context_for_key(token)


class SessionTenantAuth(APIKeyCookie):
    """The dashboard's session cookie, with CSRF enforced, like ninja's `django_auth`.

    Differences from ninja's SessionAuth: the CSRF check runs only for a logged-in user (so a
    request without a session answers 401, not 403), and the caller must be a member of the
    tenant chosen in the session (or of some tenant when none is chosen).
    """

    param_name: str = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key: str | None) -> TenantContext | None:
        user = getattr(request, "user", None)
        if key is None or user is None or not user.is_authenticated:
            return None
        csrf_exempt = getattr(request, "_ninja_csrf_exempt", False)
        if self.csrf and not csrf_exempt and check_csrf(request) is not None:
            raise AuthorizationError(message="CSRF check failed")
        session = getattr(request, "session", None)
        tenant_ref = session.get(SESSION_TENANT_KEY) if session is not None else None
        return context_for_user(user, tenant_ref)


api_auth = [ApiKeyAuth(), SessionTenantAuth()]


def _bearer_token(headers: Iterable[tuple[bytes, bytes]] | Iterable[list[bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def context_from_scope_sync(scope: Mapping[str, Any]) -> TenantContext | None:
    token = _bearer_token(scope.get("headers") or [])
    if token is not None:
        ctx = context_for_key(token)
        if ctx is not None:
            return ctx
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    session = scope.get("session")
    tenant_ref = session.get(SESSION_TENANT_KEY) if session is not None else None
    return context_for_user(user, tenant_ref)


async def context_from_scope(scope: Mapping[str, Any]) -> TenantContext | None:
    """The caller of a websocket handshake, from `Authorization: Bearer` or the session user.

    Session auth needs the consumer wrapped in channels' AuthMiddlewareStack, and, since
    browsers send cookies with cross-site websocket handshakes, in an origin validator.
    """
    return await database_sync_to_async(context_from_scope_sync)(scope)


def recheck_context(ctx: TenantContext) -> Literal["unauthenticated", "forbidden"] | None:
    """Why a caller authenticated earlier (a stream's handshake) may no longer read, or None.

    One indexed query. A key revoked or deleted, or a user deactivated, is "unauthenticated";
    a tenant deactivated, or a user no longer a member of it, is "forbidden".
    """
    if ctx.api_key is not None:
        key = (
            ApiKey.objects.filter(pk=ctx.api_key.pk)
            .values_list("revoked_at", "tenant__is_active")
            .first()
        )
        if key is None or key[0] is not None:
            return "unauthenticated"
        return None if key[1] else "forbidden"
    if ctx.user is None:
        return "unauthenticated"
    member = (
        Membership.objects.filter(user_id=ctx.user.pk, tenant_id=ctx.tenant.pk)
        .values_list("role", "tenant__is_active", "user__is_active")
        .first()
    )
    if member is None:
        return "forbidden"
    role, tenant_active, user_active = member
    if not user_active:
        return "unauthenticated"
    if not tenant_active or ROLE_RANK[Role(role)] < ROLE_RANK[Role.VIEWER]:
        return "forbidden"
    return None
