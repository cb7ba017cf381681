"""A 401 says what to fix: no credentials, a key that is not accepted, or the wrong scheme."""

from __future__ import annotations

from typing import Any

import pytest

from tenants.models import Role, Tenant
from tenants.services import create_api_key, revoke_api_key
from tests.runs.test_api__helpers import Api, anonymous, error_of, session_client

pytestmark = pytest.mark.django_db


def _with_header(value: str) -> Api:
    client = anonymous()
    client.headers = {"Authorization": value}
    return client


def test_no_credentials_is_missing_credentials(tenant: Tenant) -> None:
    error = error_of(anonymous().get("/runs"))
    assert error["code"] == "missing_credentials"
    assert "Authorization: Bearer <key>" in error["message"]


@pytest.mark.parametrize("token", ["ry_nope_nope", "garbage", "ry_" + "x" * 60])
def test_an_unknown_key_is_invalid_key(tenant: Tenant, token: str) -> None:
    response = _with_header(f"Bearer {token}").get("/runs")
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "invalid_key"
    assert "revoked" in error["message"] and "Authentication required" not in error["message"]
    assert token not in error["message"]


def test_a_revoked_key_is_invalid_key(tenant: Tenant) -> None:
    key, raw = create_api_key(tenant, role=Role.MEMBER)
    assert _with_header(f"Bearer {raw}").get("/runs").status_code == 200
    revoke_api_key(key)
    response = _with_header(f"Bearer {raw}").get("/runs")
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_key"


def test_a_key_of_a_deactivated_tenant_is_invalid_key(tenant: Tenant) -> None:
    _, raw = create_api_key(tenant, role=Role.MEMBER)
    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)
    assert error_of(_with_header(f"Bearer {raw}").get("/runs"))["code"] == "invalid_key"


def test_another_scheme_is_told_to_use_bearer(tenant: Tenant) -> None:
    error = error_of(_with_header("Basic abc").get("/runs"))
    assert error["code"] == "missing_credentials"
    assert "must read `Bearer <key>`" in error["message"]


def test_a_dashboard_session_still_works_next_to_a_bad_key(member: Any) -> None:
    client = session_client(member, csrf=False)
    client.headers = {"Authorization": "Bearer ry_nope_nope"}
    assert client.get("/runs").status_code == 200
