"""The admin lists deliveries and their attempts (tenant-filterable) and redelivers them."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from runs import services
from tenants.models import AuditLog, Tenant
from tests.webhooks.conftest import InlineQueue, Receiver
from webhooks import delivery
from webhooks.models import Delivery, DeliveryAttempt
from webhooks.services import create_subscription

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def test_redeliver_action_sends_a_delivered_webhook_again(
    hook_tenant: Tenant,
    receiver: Receiver,
    queue: InlineQueue,
    kicked: list[int],
    operator: Client,
    staff: Any,
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    assert delivery.deliver_due_webhooks() == ["delivered"]
    out = Delivery.objects.get()
    kicked.clear()

    response = operator.post(
        reverse("admin:webhooks_delivery_changelist"),
        {"action": "redeliver", "_selected_action": [out.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "will be sent again now" in response.content.decode()
    out.refresh_from_db()
    assert out.status == "pending" and kicked == [out.pk]
    assert delivery.deliver_webhooks(kicked) == ["delivered"]
    assert len(receiver.requests) == 2
    assert receiver.requests[0].body == receiver.requests[1].body
    assert list(DeliveryAttempt.objects.filter(delivery=out).values_list("number", flat=True)) == [
        1,
        2,
    ]
    audit = AuditLog.objects.get(action="webhook.redeliver")
    assert audit.actor == staff and audit.target_id == str(out.public_id)


def test_deliveries_and_attempts_pages_filter_by_tenant(
    hook_tenant: Tenant,
    other_tenant: Tenant,
    receiver: Receiver,
    queue: InlineQueue,
    kicked: list[int],
    operator: Client,
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    receiver.answers = [500]
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    delivery.deliver_due_webhooks()
    out = Delivery.objects.get()

    listing = operator.get(
        reverse("admin:webhooks_delivery_changelist"), {"tenant__id__exact": hook_tenant.pk}
    )
    assert listing.status_code == 200 and receiver.url in listing.content.decode()
    other = operator.get(
        reverse("admin:webhooks_delivery_changelist"), {"tenant__id__exact": other_tenant.pk}
    )
    assert receiver.url not in other.content.decode()

    detail = operator.get(reverse("admin:webhooks_delivery_change", args=[out.pk])).content
    text = detail.decode()
    assert "retrying" in text and "500" in text and "run.succeeded" in text

    attempts = operator.get(
        reverse("admin:webhooks_deliveryattempt_changelist"),
        {"delivery__tenant__id__exact": hook_tenant.pk},
    )
    assert attempts.status_code == 200 and "retrying" in attempts.content.decode()
    subs = operator.get(reverse("admin:webhooks_subscription_changelist"))
    assert subs.status_code == 200 and receiver.url in subs.content.decode()
