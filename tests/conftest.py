"""Shared fixtures: alice's tenant, bob's other tenant, and people with each role."""

from __future__ import annotations

from typing import Any

import pytest

from tenants.models import Role, Tenant
from tests.factories import make_tenant, make_user


@pytest.fixture
def tenant(db: Any) -> Tenant:
    return make_tenant("alice-co")


@pytest.fixture
def other_tenant(db: Any) -> Tenant:
    return make_tenant("bob-co")


@pytest.fixture
def member(tenant: Tenant) -> Any:
    return make_user("alice@example.com", tenant=tenant, role=Role.MEMBER)


@pytest.fixture
def viewer(tenant: Tenant) -> Any:
    return make_user("victor@example.com", tenant=tenant, role=Role.VIEWER)


@pytest.fixture
def tenant_admin(tenant: Tenant) -> Any:
    return make_user("ada@example.com", tenant=tenant, role=Role.ADMIN)


@pytest.fixture
def outsider(other_tenant: Tenant) -> Any:
    return make_user("bob@example.com", tenant=other_tenant, role=Role.OWNER)


@pytest.fixture
def staff(db: Any) -> Any:
    return make_user("operator@example.com", staff=True)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # The default hasher costs ~0.3 s per user; tests make many users and prove nothing by it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
