"""The outbox row is written in the status change's transaction: both commit, or neither."""

from __future__ import annotations

import pytest
from django.db import transaction

from runs import services
from runs.models import Run
from tenants.models import Tenant
from tests.webhooks.conftest import InlineQueue, Receiver
from webhooks.models import Delivery
from webhooks.services import create_subscription

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def test_rolled_back_status_change_leaves_no_delivery(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    run = services.create_run(hook_tenant, graph="approve")
    queue.drain()
    assert Delivery.objects.filter(event="run.waiting").count() == 1
    kicked.clear()
    with pytest.raises(Boom), transaction.atomic():
        services.cancel_run(run, by="test")
        # Written with the change, inside its transaction...
        assert Delivery.objects.filter(event="run.cancelled").count() == 1
        raise Boom
    # ...and gone with it: no delivery, nothing handed to a worker.
    assert Run.objects.get(pk=run.pk).status == "waiting"
    assert not Delivery.objects.filter(event="run.cancelled").exists()
    assert kicked == []

    services.cancel_run(run, by="test")
    assert Delivery.objects.filter(event="run.cancelled").count() == 1
    assert len(kicked) == 1


def test_every_announced_status_writes_its_event(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    waiting = services.create_run(hook_tenant, graph="approve")
    queue.drain()
    services.mark_interrupted(waiting, by="operator", reason="testing")
    failing = services.create_run(hook_tenant, graph="chain", input={"count": "text"})
    queue.drain()
    failing.refresh_from_db()
    assert failing.status == "failed"
    events = sorted(Delivery.objects.values_list("event", flat=True))
    assert events == ["run.failed", "run.interrupted", "run.waiting"]


def test_resuming_a_paused_wait_announces_nothing_new(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url, events=["run.waiting"])
    run = services.create_run(hook_tenant, graph="approve")
    queue.drain()
    services.pause_run(run, by="test")
    services.resume_run(Run.objects.get(pk=run.pk), by="test")
    assert Run.objects.get(pk=run.pk).status == "waiting"
    assert Delivery.objects.count() == 1


def test_first_webhook_turns_the_tenant_flag_on(hook_tenant: Tenant, receiver: Receiver) -> None:
    assert not Tenant.objects.get(pk=hook_tenant.pk).webhooks_in_use
    create_subscription(hook_tenant, url=receiver.url)
    fresh = Tenant.objects.get(pk=hook_tenant.pk)
    assert fresh.webhooks_in_use and fresh.webhook_secret.startswith("whsec_")
