"""The tenants admin: pages load for staff only; usage and the audit log cannot be edited."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory
from django.urls import reverse

from tenants.models import ApiKey, AuditLog, Tenant, UsageDay, UsageModelDay
from tenants.services import create_api_key, record_audit, set_tenant_limits

MODELS = ["tenant", "membership", "apikey", "usageday", "usagemodelday", "auditlog"]


@pytest.fixture
def staff_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def rows(tenant: Tenant, member: Any) -> dict[str, Any]:
    key, _ = create_api_key(tenant)
    set_tenant_limits(tenant, {"max_tokens": 5})
    day = UsageDay.objects.create(tenant=tenant, day="2026-01-02", tokens_in=3, tokens_out=4)
    model_day = UsageModelDay.objects.create(tenant=tenant, day="2026-01-02", model="gpt")
    return {
        "tenant": tenant,
        "membership": tenant.memberships.get(),
        "apikey": key,
        "usageday": day,
        "usagemodelday": model_day,
        "auditlog": AuditLog.objects.filter(action="tenant.limits").get(),
    }


@pytest.mark.parametrize("model", MODELS)
def test_changelist_and_change_pages_load_for_staff(
    staff_client: Client, rows: dict[str, Any], model: str
) -> None:
    assert staff_client.get(reverse(f"admin:tenants_{model}_changelist")).status_code == 200
    url = reverse(f"admin:tenants_{model}_change", args=[rows[model].pk])
    assert staff_client.get(url).status_code == 200


@pytest.mark.parametrize("model", ["tenant", "membership", "apikey"])
def test_add_pages_load_for_staff(staff_client: Client, model: str) -> None:
    assert staff_client.get(reverse(f"admin:tenants_{model}_add")).status_code == 200


@pytest.mark.parametrize("who", ["anonymous", "member", "tenant_admin"])
def test_non_staff_are_sent_to_the_login_page(
    request: pytest.FixtureRequest, rows: dict[str, Any], who: str
) -> None:
    client = Client()
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    for model in MODELS:
        for url in [
            reverse(f"admin:tenants_{model}_changelist"),
            reverse(f"admin:tenants_{model}_change", args=[rows[model].pk]),
        ]:
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("admin:login"))


def test_tenant_page_shows_limits_counters_and_usage(
    staff_client: Client, rows: dict[str, Any]
) -> None:
    tenant = rows["tenant"]
    Tenant.objects.filter(pk=tenant.pk).update(running_count=3)
    page = staff_client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
    form = page.context["adminform"].form
    assert "max_tokens" in form.fields and "warn_ratio" in form.fields
    assert "running_count" not in form.fields  # read-only counter
    assert b"Usage (UTC)" in page.content


def test_audit_log_cannot_be_added_changed_or_deleted(
    staff_client: Client, staff: Any, rows: dict[str, Any]
) -> None:
    row = rows["auditlog"]
    model_admin = admin.site._registry[AuditLog]
    request = RequestFactory().get("/admin/")
    request.user = staff
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, row)
    assert not model_admin.has_delete_permission(request, row)

    assert staff_client.get(reverse("admin:tenants_auditlog_add")).status_code == 403
    change_url = reverse("admin:tenants_auditlog_change", args=[row.pk])
    response = staff_client.post(change_url, {"action": "tampered", "actor_label": "x"})
    assert response.status_code == 403
    delete_url = reverse("admin:tenants_auditlog_delete", args=[row.pk])
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    bulk = staff_client.post(
        reverse("admin:tenants_auditlog_changelist"),
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    row.refresh_from_db()
    assert row.action == "tenant.limits"
    assert AuditLog.objects.filter(pk=row.pk).exists()


def test_audit_log_change_page_is_read_only(staff_client: Client, rows: dict[str, Any]) -> None:
    row = record_audit("run.cancelled", by="cli", data={"reason": "stuck"})
    page = staff_client.get(reverse("admin:tenants_auditlog_change", args=[row.pk]))
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert b"stuck" in page.content


@pytest.mark.parametrize("model", [UsageDay, UsageModelDay])
def test_usage_ledgers_are_read_only(
    staff_client: Client, rows: dict[str, Any], model: Any
) -> None:
    name = model._meta.model_name
    assert staff_client.get(reverse(f"admin:tenants_{name}_add")).status_code == 403
    obj = model.objects.get()
    response = staff_client.post(reverse(f"admin:tenants_{name}_change", args=[obj.pk]), {})
    assert response.status_code == 403


def test_api_key_pages_never_show_the_hash(staff_client: Client, rows: dict[str, Any]) -> None:
    key: ApiKey = rows["apikey"]
    for url in [
        reverse("admin:tenants_apikey_changelist"),
        reverse("admin:tenants_apikey_change", args=[key.pk]),
    ]:
        page = staff_client.get(url)
        assert key.prefix.encode() in page.content
        assert key.hashed.encode() not in page.content
