"""Retention of deliveries: finished ones go, owed ones stay; webhooks of pruned runs go."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from runs import services
from runs.services.prune import prune_runs
from tenants.models import Tenant
from tests.webhooks.conftest import InlineQueue, Receiver
from webhooks import delivery
from webhooks.models import Delivery, DeliveryAttempt, RunWebhook
from webhooks.services import create_subscription

pytestmark = pytest.mark.django_db(transaction=True)


def test_prune_keeps_pending_deliveries_and_drops_finished_ones(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    services.create_run(hook_tenant, graph="chain", webhook=receiver.url)
    queue.drain()
    assert Delivery.objects.count() == 2
    receiver.answers = [200, 500]
    assert sorted(delivery.deliver_due_webhooks()) == ["delivered", "retrying"]
    Delivery.objects.update(created_at=timezone.now() - dt.timedelta(days=40))

    # The run is pruned too, and its RunWebhook row with it (prune_runs clears the rows of
    # other apps that point at the runs it deletes)...
    assert prune_runs(finished_before=timezone.now() + dt.timedelta(seconds=1)) == 1
    assert not RunWebhook.objects.exists()
    out = StringIO()
    call_command("prune_webhook_deliveries", "--older-than", "30", stdout=out)
    assert "deleted 1 delivery(ies)" in out.getvalue()
    # ...and the command drops the finished delivery; the one still owed stays, with its attempt.
    assert list(Delivery.objects.values_list("status", flat=True)) == ["pending"]
    assert DeliveryAttempt.objects.count() == 1
    assert not RunWebhook.objects.exists()
