"""Admin writes go through the services: validated, audited, and never clobbering counters."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from tenants.models import ApiKey, AuditLog, Role, Tenant
from tenants.services import authenticate_api_key, create_api_key, tenant_limits_dict


@pytest.fixture
def staff_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def tenant_form(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"slug": tenant.slug, "name": tenant.name, "is_active": "on"}
    for name, value in tenant_limits_dict(tenant).items():
        if name == "http_allowed_hosts":
            data[name] = ", ".join(value)
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = "" if value is None else str(value)
    data.update(
        {
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        }
    )
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_editing_limits_saves_them_and_writes_an_audit_row(
    staff_client: Client, staff: Any, tenant: Tenant
) -> None:
    url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
    response = staff_client.post(
        url,
        tenant_form(
            tenant,
            max_tokens="2000",
            max_cost_usd="3.5",
            http_allowed_hosts="a.example.com, B.example.com",
        ),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors

    tenant.refresh_from_db()
    assert tenant.max_tokens == 2000
    assert tenant.http_allowed_hosts == ["a.example.com", "b.example.com"]
    row = AuditLog.objects.get(action="tenant.limits")
    assert row.actor == staff
    assert row.data["changed"] == {
        "max_tokens": [None, 2000],
        "max_cost_usd": [None, 3.5],
        "http_allowed_hosts": [[], ["a.example.com", "b.example.com"]],
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("warn_ratio", "1.5", "warn_ratio must be above 0 and at most 1"),
        ("warn_ratio", "0", "warn_ratio must be above 0 and at most 1"),
        ("max_steps", "-3", ""),
        ("http_allowed_hosts", "http://x.com/path", "is not a host name"),
        ("max_concurrent_runs", "", "required"),
    ],
)
def test_invalid_limits_are_form_errors(
    staff_client: Client, tenant: Tenant, field: str, value: str, message: str
) -> None:
    before = tenant_limits_dict(tenant)
    url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
    response = staff_client.post(url, tenant_form(tenant, **{field: value}))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors
    assert message in " ".join(errors[field])
    tenant.refresh_from_db()
    assert tenant_limits_dict(tenant) == before
    assert not AuditLog.objects.exists()


def test_saving_the_form_keeps_counters_changed_meanwhile(
    staff_client: Client, tenant: Tenant
) -> None:
    data = tenant_form(tenant, name="Alice & Co", max_concurrent_runs="4")
    Tenant.objects.filter(pk=tenant.pk).update(running_count=7, queued_count=2)

    url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
    assert staff_client.post(url, data).status_code == 302

    tenant.refresh_from_db()
    assert (tenant.name, tenant.max_concurrent_runs) == ("Alice & Co", 4)
    assert (tenant.running_count, tenant.queued_count) == (7, 2)
    assert AuditLog.objects.get(action="tenant.updated").data == {
        "changed": {"name": ["Alice-Co", "Alice & Co"]}
    }


def test_adding_a_tenant_in_the_admin_is_audited(staff_client: Client, db: Any) -> None:
    data = tenant_form(Tenant(slug="new-co", name="New Co"))
    response = staff_client.post(reverse("admin:tenants_tenant_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    tenant = Tenant.objects.get(slug="new-co")
    assert AuditLog.objects.get(action="tenant.created").tenant == tenant


def test_creating_a_key_in_the_admin_shows_it_once(staff_client: Client, tenant: Tenant) -> None:
    response = staff_client.post(
        reverse("admin:tenants_apikey_add"),
        {"tenant": tenant.pk, "name": "from-admin", "role": Role.VIEWER},
    )
    assert response.status_code == 302

    shown = " ".join(str(m) for m in get_messages(response.wsgi_request))
    match = re.search(r"ry_[A-Za-z0-9]+_[A-Za-z0-9_-]+", shown)
    assert match, shown
    key = ApiKey.objects.get()
    assert authenticate_api_key(match.group(0)) == key
    assert (key.name, key.role) == ("from-admin", Role.VIEWER)
    assert AuditLog.objects.get(action="api_key.created").actor_label == "operator@example.com"

    # The next page shows the message; after that the key is gone for good.
    page = staff_client.get(response["Location"])
    assert match.group(0).encode() in page.content
    again = staff_client.get(reverse("admin:tenants_apikey_change", args=[key.pk]))
    assert match.group(0).encode() not in again.content


def test_revoke_action_revokes_and_audits(staff_client: Client, staff: Any, tenant: Tenant) -> None:
    key1, raw1 = create_api_key(tenant)
    key2, raw2 = create_api_key(tenant)
    keep, raw_keep = create_api_key(tenant)
    response = staff_client.post(
        reverse("admin:tenants_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [key1.pk, key2.pk]},
    )
    assert response.status_code == 302
    assert authenticate_api_key(raw1) is None
    assert authenticate_api_key(raw2) is None
    assert authenticate_api_key(raw_keep) == keep
    rows = AuditLog.objects.filter(action="api_key.revoked")
    assert sorted(r.target_id for r in rows) == sorted([str(key1.public_id), str(key2.public_id)])
    assert {r.actor for r in rows} == {staff}


def test_renaming_a_key_does_not_undo_a_revocation_made_meanwhile(
    staff_client: Client, tenant: Tenant
) -> None:
    key, raw = create_api_key(tenant)
    url = reverse("admin:tenants_apikey_change", args=[key.pk])
    page = staff_client.get(url)
    assert page.status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(revoked_at="2026-01-01T00:00:00Z")

    assert staff_client.post(url, {"name": "renamed"}).status_code == 302
    key.refresh_from_db()
    assert key.name == "renamed"
    assert key.revoked_at is not None
    assert authenticate_api_key(raw) is None


def test_api_keys_cannot_be_deleted_only_revoked(staff_client: Client, tenant: Tenant) -> None:
    key, _ = create_api_key(tenant)
    url = reverse("admin:tenants_apikey_delete", args=[key.pk])
    assert staff_client.post(url, {"post": "yes"}).status_code == 403
    assert ApiKey.objects.filter(pk=key.pk).exists()
