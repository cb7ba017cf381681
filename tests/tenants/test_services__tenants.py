"""create_tenant: a tenant with its limits and its owner, in one transaction."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from tenants.models import AuditLog, Membership, Role, Tenant
from tenants.services import create_tenant
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def test_owner_is_created_with_an_unusable_password() -> None:
    tenant = create_tenant("acme", name="Acme", owner_email="owner@acme.test")

    user = get_user_model().objects.get(username="owner@acme.test")
    assert user.email == "owner@acme.test"
    assert not user.has_usable_password()
    membership = Membership.objects.get(tenant=tenant, user=user)
    assert membership.role == Role.OWNER


def test_owner_password_is_set_when_given() -> None:
    create_tenant("acme", name="Acme", owner_email="o@acme.test", owner_password="s3cret-pass!")
    assert get_user_model().objects.get(username="o@acme.test").check_password("s3cret-pass!")


def test_existing_user_becomes_owner_and_keeps_their_password(other_tenant: Tenant) -> None:
    user = make_user("both@example.com", tenant=other_tenant)
    tenant = create_tenant("acme", name="Acme", owner_email="both@example.com")

    assert get_user_model().objects.filter(username="both@example.com").count() == 1
    user.refresh_from_db()
    assert user.check_password("pw-123456789")
    assert Membership.objects.get(tenant=tenant, user=user).role == Role.OWNER


def test_limits_are_validated_and_stored() -> None:
    tenant = create_tenant("acme", name="Acme", max_tokens="5000", max_cost_usd="2.5")
    tenant.refresh_from_db()
    assert tenant.max_tokens == 5000
    assert tenant.max_cost_usd == Decimal("2.5")
    assert tenant.max_concurrent_runs == 10  # untouched defaults


def test_tenant_creation_is_audited() -> None:
    tenant = create_tenant("acme", name="Acme", owner_email="o@acme.test", by="cli")
    row = AuditLog.objects.get(action="tenant.created")
    assert (row.tenant, row.actor_label, row.target_id) == (tenant, "cli", str(tenant.public_id))
    assert row.data["owner"] == "o@acme.test"
    assert row.data["limits"]["max_concurrent_runs"] == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slug": "no spaces", "name": "X"}, "letters, digits, hyphens"),
        ({"slug": "x" * 65, "name": "X"}, "longer than 64"),
        ({"slug": "acme", "name": "  "}, "name is required"),
        ({"slug": "acme", "name": "X", "max_tokns": 5}, "unknown limit 'max_tokns'"),
        ({"slug": "acme", "name": "X", "warn_ratio": "2"}, "warn_ratio must be above 0"),
        ({"slug": "acme", "name": "X", "owner_email": "not-an-email"}, "not an e-mail"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(kwargs: dict[str, Any], message: str) -> None:
    slug = kwargs.pop("slug")
    with pytest.raises(ValueError, match=message):
        create_tenant(slug, **kwargs)
    assert not Tenant.objects.exists()
    assert not get_user_model().objects.exists()
    assert not AuditLog.objects.exists()


def test_duplicate_slug_is_refused(tenant: Tenant) -> None:
    with pytest.raises(ValueError, match="'alice-co' already exists"):
        create_tenant("alice-co", name="Again")
