"""The dashboard's webhooks page: linked from the nav, list, add, delete, secret shown once."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tenants.models import Role, Tenant
from tests.factories import make_user
from webhooks.models import Subscription
from webhooks.services import create_subscription

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_client(hook_tenant: Tenant) -> Client:
    return _client(make_user("ada@example.com", tenant=hook_tenant, role=Role.ADMIN))


def test_page_is_in_the_nav_and_lists_the_tenants_webhooks(
    hook_tenant: Tenant, other_tenant: Tenant, admin_client: Client
) -> None:
    create_subscription(hook_tenant, url="http://127.0.0.1:9/alice")
    other_tenant.http_allowed_hosts = ["127.0.0.1"]
    other_tenant.http_allow_private = True
    other_tenant.save()
    create_subscription(other_tenant, url="http://127.0.0.1:9/bob")
    home = admin_client.get(reverse("runs:list")).content.decode()
    assert f'href="{reverse("webhooks:list")}"' in home
    text = admin_client.get(reverse("webhooks:list")).content.decode()
    assert "http://127.0.0.1:9/alice" in text and "/bob" not in text
    assert "whsec_" in text and "add-webhook" in text
    secret = Tenant.objects.get(pk=hook_tenant.pk).webhook_secret
    assert secret not in text  # masked once made


def test_add_and_delete_a_webhook(hook_tenant: Tenant, admin_client: Client) -> None:
    response = admin_client.post(
        reverse("webhooks:list"),
        {"url": "http://127.0.0.1:9/x", "events": ["run.failed"], "include_state": ""},
    )
    assert response.status_code == 302
    sub = Subscription.objects.get()
    assert sub.events == ["run.failed"] and sub.include_state is False
    gone = admin_client.post(reverse("webhooks:delete", args=[sub.public_id]))
    assert gone.status_code == 302 and not Subscription.objects.exists()


def test_refused_url_is_shown_on_the_form(hook_tenant: Tenant, admin_client: Client) -> None:
    response = admin_client.post(
        reverse("webhooks:list"),
        {"url": "http://10.1.2.3/x", "events": ["run.failed"]},
    )
    assert response.status_code == 422
    assert "allow-list" in response.content.decode()
    assert not Subscription.objects.exists()


def test_rotated_secret_is_shown_once(hook_tenant: Tenant, admin_client: Client) -> None:
    response = admin_client.post(reverse("webhooks:secret"))
    secret = Tenant.objects.get(pk=hook_tenant.pk).webhook_secret
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert secret in response.content.decode()
    again = admin_client.get(reverse("webhooks:list")).content.decode()
    assert secret not in again and secret[:10] in again


def test_members_read_but_cannot_change(hook_tenant: Tenant) -> None:
    sub = create_subscription(hook_tenant, url="http://127.0.0.1:9/x")
    member = _client(make_user("m@example.com", tenant=hook_tenant, role=Role.MEMBER))
    page = member.get(reverse("webhooks:list"))
    assert page.status_code == 200 and "add-webhook" not in page.content.decode()
    assert member.post(reverse("webhooks:secret")).status_code == 403
    assert member.post(reverse("webhooks:list"), {"url": "http://127.0.0.1/y"}).status_code == 403
    assert member.post(reverse("webhooks:delete", args=[sub.public_id])).status_code == 403
    assert Subscription.objects.count() == 1


def test_another_tenants_webhook_cannot_be_deleted(
    hook_tenant: Tenant, other_tenant: Tenant
) -> None:
    sub = create_subscription(hook_tenant, url="http://127.0.0.1:9/x")
    bob = _client(make_user("bob@example.com", tenant=other_tenant, role=Role.OWNER))
    assert bob.post(reverse("webhooks:delete", args=[sub.public_id])).status_code == 404
    assert Subscription.objects.count() == 1


def test_anonymous_is_sent_to_login(db: Any) -> None:
    response = Client().get(reverse("webhooks:list"))
    assert response.status_code == 302 and "/login/" in response["Location"]
