"""Small builders for test data; services create everything with real rows."""

from __future__ import annotations

import itertools
from typing import Any

from django.contrib.auth import get_user_model

from tenants.models import Membership, Role, Tenant

_seq = itertools.count(1)


def make_tenant(slug: str | None = None, **limits: Any) -> Tenant:
    n = next(_seq)
    slug = slug or f"tenant-{n}"
    return Tenant.objects.create(slug=slug, name=slug.title(), **limits)


def make_user(
    email: str | None = None,
    *,
    tenant: Tenant | None = None,
    role: str = Role.MEMBER,
    staff: bool = False,
    password: str = "pw-123456789",  # noqa: S107 - a test fixture
) -> Any:
    n = next(_seq)
    email = email or f"user{n}@example.com"
    user = get_user_model().objects.create_user(
        username=email, email=email, password=password, is_staff=staff, is_superuser=staff
    )
    if tenant is not None:
        Membership.objects.create(tenant=tenant, user=user, role=role)
    return user
