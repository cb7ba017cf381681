"""The API's auth: Bearer keys, or the dashboard session with CSRF; request.auth is the context."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from ninja import NinjaAPI

from tenants.auth import SESSION_TENANT_KEY, TenantContext, api_auth, remember_tenant
from tenants.models import Membership, Role, Tenant
from tenants.permissions import Forbidden, require_role
from tenants.services import create_api_key, revoke_api_key
from tests.factories import make_user

api = NinjaAPI(urls_namespace="test-tenants-auth", auth=api_auth)


@api.exception_handler(Forbidden)
def forbidden(request: HttpRequest, exc: Forbidden) -> HttpResponse:
    return api.create_response(request, {"error": {"code": exc.code}}, status=403)


def _describe(ctx: TenantContext) -> dict[str, Any]:
    return {
        "tenant": ctx.tenant.slug,
        "role": ctx.role,
        "via": "key" if ctx.api_key is not None else "session",
        "user": ctx.user.get_username() if ctx.user is not None else None,
    }


@api.get("/whoami")
def whoami(request: HttpRequest) -> dict[str, Any]:
    return _describe(request.auth)  # type: ignore[attr-defined]


@api.post("/write")
def write(request: HttpRequest) -> dict[str, Any]:
    return _describe(require_role(request.auth, Role.MEMBER))  # type: ignore[attr-defined]


@api.get("/async-whoami")
async def async_whoami(request: HttpRequest) -> dict[str, Any]:
    return _describe(request.auth)  # type: ignore[attr-defined]


urlpatterns = [path("api/", api.urls)]
pytestmark = pytest.mark.urls(__name__)

CSRF = "a" * 32


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def session_client(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


# --- Bearer keys ------------------------------------------------------------------------------


def test_bearer_key_gives_its_tenant_and_role(tenant: Tenant) -> None:
    _, raw = create_api_key(tenant, role=Role.ADMIN)
    response = Client().get("/api/whoami", headers=bearer(raw))
    assert response.status_code == 200
    assert response.json() == {"tenant": "alice-co", "role": "admin", "via": "key", "user": None}


def test_bearer_key_works_on_async_operations(tenant: Tenant) -> None:
    _, raw = create_api_key(tenant)
    response = Client().get("/api/async-whoami", headers=bearer(raw))
    assert response.status_code == 200
    assert response.json()["tenant"] == "alice-co"


def test_tenant_b_key_is_tenant_b(tenant: Tenant, other_tenant: Tenant) -> None:
    _, raw = create_api_key(other_tenant)
    assert Client().get("/api/whoami", headers=bearer(raw)).json()["tenant"] == "bob-co"


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Bearer ry_nope_nope", "Token {raw}", "Basic {raw}", "{raw}"],
)
def test_missing_or_wrong_credentials_are_401(tenant: Tenant, header: str | None) -> None:
    _, raw = create_api_key(tenant)
    extra = {} if header is None else {"Authorization": header.format(raw=raw)}
    assert Client().get("/api/whoami", headers=extra).status_code == 401


def test_revoked_key_is_401(tenant: Tenant) -> None:
    key, raw = create_api_key(tenant)
    revoke_api_key(key)
    assert Client().get("/api/whoami", headers=bearer(raw)).status_code == 401


def test_bearer_requests_need_no_csrf_token(tenant: Tenant) -> None:
    _, raw = create_api_key(tenant)
    response = Client(enforce_csrf_checks=True).post("/api/write", headers=bearer(raw))
    assert response.status_code == 200


def test_viewer_key_cannot_write(tenant: Tenant) -> None:
    _, raw = create_api_key(tenant, role=Role.VIEWER)
    response = Client().post("/api/write", headers=bearer(raw))
    assert response.status_code == 403
    assert response.json() == {"error": {"code": "forbidden"}}


def test_anonymous_post_is_401_not_a_csrf_403(db: Any) -> None:
    assert Client(enforce_csrf_checks=True).post("/api/write").status_code == 401


# --- Dashboard session ------------------------------------------------------------------------


def test_session_user_gets_their_membership(member: Any) -> None:
    response = session_client(member).get("/api/whoami")
    assert response.status_code == 200
    assert response.json() == {
        "tenant": "alice-co",
        "role": "member",
        "via": "session",
        "user": "alice@example.com",
    }


def test_session_post_without_csrf_token_is_refused(member: Any) -> None:
    response = session_client(member).post("/api/write")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_session_post_with_csrf_token_is_accepted(member: Any) -> None:
    client = session_client(member)
    client.cookies["csrftoken"] = CSRF
    response = client.post("/api/write", headers={"X-CSRFToken": CSRF})
    assert response.status_code == 200
    assert response.json()["via"] == "session"


def test_session_viewer_cannot_write(viewer: Any) -> None:
    client = session_client(viewer)
    client.cookies["csrftoken"] = CSRF
    assert client.post("/api/write", headers={"X-CSRFToken": CSRF}).status_code == 403


def test_session_chooses_the_tenant_stored_in_the_session(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    user = make_user("two@example.com", tenant=tenant, role=Role.VIEWER)
    Membership.objects.create(tenant=other_tenant, user=user, role=Role.ADMIN)
    client = session_client(user)
    assert client.get("/api/whoami").json()["tenant"] == "alice-co"  # first membership

    session = client.session
    remember_tenant(session, other_tenant)
    session.save()
    assert client.get("/api/whoami").json() == {
        "tenant": "bob-co",
        "role": "admin",
        "via": "session",
        "user": "two@example.com",
    }


def test_session_naming_a_tenant_the_user_is_not_in_is_401(outsider: Any, tenant: Tenant) -> None:
    client = session_client(outsider)
    assert client.get("/api/whoami").json()["tenant"] == "bob-co"

    session = client.session
    session[SESSION_TENANT_KEY] = str(tenant.public_id)
    session.save()
    assert client.get("/api/whoami").status_code == 401


def test_logged_in_user_without_membership_is_401(staff: Any) -> None:
    assert session_client(staff).get("/api/whoami").status_code == 401


def test_membership_of_an_inactive_tenant_is_401(member: Any, tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)
    assert session_client(member).get("/api/whoami").status_code == 401


def test_openapi_documents_both_schemes(db: Any) -> None:
    schema = api.get_openapi_schema()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKeyAuth"] == {"type": "http", "scheme": "bearer"}
    assert schemes["SessionTenantAuth"]["in"] == "cookie"
