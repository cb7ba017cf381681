"""The tenant page for operators: usage today and this month against the budgets, members,
and API keys (created with the raw key shown once, revoked), all audited; the audit log of
operator actions is readable and not editable."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tenants.models import ApiKey, AuditLog, Tenant, UsageDay
from tenants.services import authenticate_api_key, create_api_key, record_audit, set_tenant_limits
from tests.factories import make_tenant, make_user

pytestmark = pytest.mark.django_db

RAW_KEY = re.compile(r"ry_[A-Za-z0-9]{12}_[A-Za-z0-9_-]+")


@pytest.fixture
def staff_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def tenant_page(client: Client, tenant: Tenant) -> Any:
    response = client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
    assert response.status_code == 200
    return response


def test_usage_today_and_this_month_against_budgets(staff_client: Client, tenant: Tenant) -> None:
    today = timezone.now().date()
    set_tenant_limits(
        tenant,
        {
            "daily_token_budget": 1000,
            "monthly_token_budget": 10000,
            "daily_cost_budget_usd": "2",
        },
    )
    UsageDay.objects.create(
        tenant=tenant, day=today, runs=3, steps=9, tokens_in=200, tokens_out=50, cost_usd="0.5"
    )
    if today.day > 1:
        UsageDay.objects.create(tenant=tenant, day=today.replace(day=1), tokens_in=750)
    UsageDay.objects.create(tenant=tenant, day=today - dt.timedelta(days=40), tokens_in=99999)
    html = tenant_page(staff_client, tenant).content.decode()
    assert "250 / 1000 (25%)" in html  # tokens today
    assert "$0.5000 / $2 (25%)" in html  # cost today
    month_tokens = 250 + (750 if today.day > 1 else 0)
    assert f"{month_tokens} / 10000" in html
    assert "/ unlimited" in html  # the monthly cost budget is not set
    assert "running of max_concurrent_runs" in html


def test_members_are_listed_and_editable_inline(
    staff_client: Client, tenant: Tenant, member: Any
) -> None:
    page = tenant_page(staff_client, tenant)
    [members] = page.context["inline_admin_formsets"]
    assert members.formset.model.__name__ == "Membership"
    assert member.username.encode() in page.content


def test_api_keys_section_lists_keys_without_secrets(staff_client: Client, tenant: Tenant) -> None:
    key, raw = create_api_key(tenant, name="ci")
    revoked, _ = create_api_key(tenant, name="old")
    revoked.revoked_at = timezone.now()
    revoked.save(update_fields=["revoked_at"])
    html = tenant_page(staff_client, tenant).content.decode()
    assert key.prefix in html and "ci" in html
    assert raw not in html and key.hashed not in html
    assert reverse("admin:tenants_tenant_revoke_key", args=[tenant.pk, key.pk]) in html
    assert reverse("admin:tenants_tenant_revoke_key", args=[tenant.pk, revoked.pk]) not in html
    assert reverse("admin:tenants_tenant_create_key", args=[tenant.pk]) in html


def test_create_key_shows_the_raw_key_once(
    staff_client: Client, staff: Any, tenant: Tenant
) -> None:
    url = reverse("admin:tenants_tenant_create_key", args=[tenant.pk])
    assert staff_client.get(url).status_code == 200
    assert not ApiKey.objects.exists()
    response = staff_client.post(url, {"name": "deploy", "role": "admin"})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:tenants_tenant_change", args=[tenant.pk])
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    found = RAW_KEY.search(message)
    assert found is not None, message
    raw = found.group(0)
    key = authenticate_api_key(raw)
    assert key is not None and key.tenant == tenant and key.name == "deploy" and key.role == "admin"
    row = AuditLog.objects.get(action="api_key.created")
    assert row.actor == staff and row.target_id == str(key.public_id)
    # Shown once: on the page the redirect leads to, and never again.
    assert raw.encode() in tenant_page(staff_client, tenant).content
    assert raw.encode() not in tenant_page(staff_client, tenant).content


def test_create_key_validates_its_form(staff_client: Client, tenant: Tenant) -> None:
    url = reverse("admin:tenants_tenant_create_key", args=[tenant.pk])
    response = staff_client.post(url, {"name": "x", "role": "emperor"})
    assert response.status_code == 200 and response.context["form"].errors["role"]
    assert not ApiKey.objects.exists()


def test_revoke_key_confirms_then_revokes_once(
    staff_client: Client, staff: Any, tenant: Tenant
) -> None:
    key, raw = create_api_key(tenant, name="ci")
    url = reverse("admin:tenants_tenant_revoke_key", args=[tenant.pk, key.pk])
    assert staff_client.get(url).status_code == 200
    assert authenticate_api_key(raw) is not None  # the confirmation page changes nothing
    response = staff_client.post(url)
    assert response.status_code == 302
    assert authenticate_api_key(raw) is None
    row = AuditLog.objects.get(action="api_key.revoked")
    assert row.actor == staff
    again = staff_client.post(url)
    assert "already revoked" in [str(m) for m in get_messages(again.wsgi_request)][-1]
    assert AuditLog.objects.filter(action="api_key.revoked").count() == 1


def test_a_key_is_only_reachable_through_its_own_tenant(
    staff_client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs, raw = create_api_key(other_tenant)
    url = reverse("admin:tenants_tenant_revoke_key", args=[tenant.pk, theirs.pk])
    assert staff_client.post(url).status_code == 404
    assert authenticate_api_key(raw) is not None
    missing = reverse("admin:tenants_tenant_create_key", args=[999999])
    assert staff_client.post(missing, {"name": "x", "role": "member"}).status_code == 404


@pytest.mark.parametrize("who", ["anonymous", "member", "tenant_admin"])
def test_non_staff_cannot_manage_keys(
    request: pytest.FixtureRequest, tenant: Tenant, who: str
) -> None:
    key, raw = create_api_key(tenant)
    client = Client()
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    for url, data in [
        (reverse("admin:tenants_tenant_create_key", args=[tenant.pk]), {"name": "x"}),
        (reverse("admin:tenants_tenant_revoke_key", args=[tenant.pk, key.pk]), {}),
    ]:
        response = client.post(url, data)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert ApiKey.objects.count() == 1 and authenticate_api_key(raw) is not None


def test_staff_without_key_permissions_is_refused(tenant: Tenant) -> None:
    user = make_user("desk@example.com")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    key, raw = create_api_key(tenant)
    client = Client()
    client.force_login(user)
    create = reverse("admin:tenants_tenant_create_key", args=[tenant.pk])
    revoke = reverse("admin:tenants_tenant_revoke_key", args=[tenant.pk, key.pk])
    assert client.post(create, {"name": "x", "role": "member"}).status_code == 403
    assert client.post(revoke).status_code == 403
    assert authenticate_api_key(raw) is not None


def test_audit_log_shows_operator_actions_and_cannot_be_edited(
    staff_client: Client, staff: Any
) -> None:
    tenant = make_tenant("audited")
    row = record_audit(
        "run.cancel",
        by=staff,
        tenant=tenant,
        reason="customer asked",
        status_before="running",
        status_after="cancelling",
        data={"result": "changed", "cancel_action": "interrupt"},
    )
    listing = staff_client.get(reverse("admin:tenants_auditlog_changelist"))
    assert listing.status_code == 200
    assert listing.context["action_form"] is None  # no delete action either
    html = listing.content.decode()
    assert "run.cancel" in html and "cancelling" in html
    url = reverse("admin:tenants_auditlog_change", args=[row.pk])
    page = staff_client.get(url)
    assert page.status_code == 200 and page.context["has_change_permission"] is False
    assert b"customer asked" in page.content
    assert staff_client.post(url, {"reason": "nothing happened"}).status_code == 403
    delete = reverse("admin:tenants_auditlog_delete", args=[row.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    row.refresh_from_db()
    assert row.reason == "customer asked"
