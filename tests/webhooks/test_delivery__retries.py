"""A receiver on 127.0.0.1 that fails first, then accepts: the retry, the signature, the body."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs import services
from runs.models import Run
from runs.services import create_graph_version
from runs.services.lifecycle import finish
from tenants.models import Tenant
from tests.observability.conftest import parse, value
from tests.runs.conftest import chain_spec
from tests.webhooks.conftest import InlineQueue, Receiver
from webhooks import delivery
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Outcome
from webhooks.services import create_subscription, rotate_secret

pytestmark = pytest.mark.django_db(transaction=True)


def scraped_deliveries(tenant: Tenant) -> dict[str, float]:
    response = Client().get("/metrics")  # a loopback client
    assert response.status_code == 200
    samples = parse(response.content.decode())
    return {
        outcome: value(
            samples, "runyard_webhook_deliveries_total", tenant=tenant.slug, outcome=outcome
        )
        for outcome in ("delivered", "retrying", "failed", "refused")
    }


def _later(seconds: float) -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=seconds)


def test_failed_first_attempt_is_retried_within_30s_then_delivered_signed(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    sub = create_subscription(hook_tenant, url=receiver.url, events=["run.succeeded"])
    secret = rotate_secret(hook_tenant)
    counted_before = scraped_deliveries(hook_tenant)
    receiver.answers = [500]
    run = services.create_run(hook_tenant, graph="chain", input={"count": 1})
    queue.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    out = Delivery.objects.get()
    assert out.subscription_id == sub.pk and out.event == "run.succeeded"
    assert out.status == DeliveryStatus.PENDING and out.attempts == 0
    assert kicked == [out.pk]  # the first attempt is handed to a worker on commit

    assert delivery.deliver_webhooks(kicked) == ["retrying"]
    out.refresh_from_db()
    assert out.status == DeliveryStatus.PENDING and out.attempts == 1
    assert out.last_status_code == 500 and out.last_outcome == "retrying"
    retry_in = (out.next_attempt_at - timezone.now()).total_seconds()
    assert 0 < retry_in <= 30
    # Not due yet: the scheduler's tick leaves it alone.
    assert delivery.deliver_due_webhooks() == []

    assert delivery.deliver_due_webhooks(now=_later(31)) == ["delivered"]
    out.refresh_from_db()
    assert out.status == DeliveryStatus.DELIVERED and out.attempts == 2
    assert out.delivered_at is not None and out.next_attempt_at is None
    attempts = list(
        DeliveryAttempt.objects.filter(delivery=out).values_list("number", "outcome", "status_code")
    )
    assert attempts == [(1, "retrying", 500), (2, "delivered", 200)]
    counted = scraped_deliveries(hook_tenant)  # /metrics counts each attempt by its outcome
    assert {k: counted[k] - counted_before[k] for k in counted} == {
        "delivered": 1,
        "retrying": 1,
        "failed": 0,
        "refused": 0,
    }

    assert len(receiver.requests) == 2
    for request in receiver.requests:
        assert receiver.verify(request, secret)
        assert request.headers["Runyard-Event"] == "run.succeeded"
        assert request.headers["Runyard-Delivery"] == str(out.public_id)
        assert request.headers["Content-Type"] == "application/json"
    # Both attempts carry the same body (and delivery id), each signed with its own timestamp.
    assert receiver.requests[0].body == receiver.requests[1].body
    assert not receiver.verify(receiver.requests[1], "whsec_not-the-secret")
    body = receiver.requests[1].json()
    assert body["event"] == "run.succeeded" and body["timestamp"].endswith("Z")
    sent = body["run"]
    assert uuid.UUID(sent["id"]) == run.public_id
    assert sent["status"] == "succeeded" and sent["error"] is None
    assert sent["graph"] == {"name": "chain", "version": 1}
    assert sent["state"]["count"] == 4
    assert sent["usage"]["steps"] == run.steps and sent["usage"]["cost_usd"] == 0.0


def test_tampered_body_fails_verification(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    secret = rotate_secret(hook_tenant)
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    assert delivery.deliver_due_webhooks() == ["delivered"]
    request = receiver.requests[0]
    assert receiver.verify(request, secret)
    request.body = request.body.replace(b"succeeded", b"failed")
    assert not receiver.verify(request, secret)


def test_a_run_webhook_hears_waiting_then_the_end_without_state(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    run = services.create_run(
        hook_tenant, graph="approve", webhook=receiver.url, webhook_include_state=False
    )
    queue.drain()
    run.refresh_from_db()
    assert run.status == "waiting"
    assert delivery.deliver_due_webhooks() == ["delivered"]
    waiting = receiver.requests[0].json()
    assert waiting["event"] == "run.waiting" and "state" not in waiting["run"]
    assert waiting["run"]["waiting_for"]["node"] == "gate"

    services.cancel_run(run, by="test")
    assert delivery.deliver_due_webhooks() == ["delivered"]
    ended = receiver.requests[1].json()
    assert ended["event"] == "run.cancelled" and ended["run"]["status"] == "cancelled"
    assert ended["run"]["error"]["code"] == "cancelled"
    assert Delivery.objects.filter(subscription=None).count() == 2


def test_only_subscribed_events_and_enabled_subscriptions_are_delivered(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url, events=["run.failed"])
    create_subscription(hook_tenant, url=receiver.url + "?off", enabled=False)
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    assert not Delivery.objects.exists()


def test_retries_go_on_for_24_hours_with_growing_delays_then_the_delivery_fails(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    receiver.answers = [503] * 100
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    out = Delivery.objects.get()
    assert out.retry_until - out.created_at >= dt.timedelta(hours=24, seconds=-1)
    delays: list[float] = []
    outcomes: list[str] = []
    while len(outcomes) < 40:
        outcomes += delivery.deliver_due_webhooks(now=out.next_attempt_at)
        out.refresh_from_db()
        if out.status != DeliveryStatus.PENDING:
            break
        # Time passes until the next attempt: move the window back by the delay instead.
        delay = out.next_attempt_at - timezone.now()
        delays.append(delay.total_seconds())
        Delivery.objects.filter(pk=out.pk).update(retry_until=out.retry_until - delay)
        out.refresh_from_db()
    assert out.status == DeliveryStatus.FAILED and out.last_outcome == Outcome.FAILED
    assert outcomes[-1] == "failed" and set(outcomes[:-1]) == {"retrying"}
    assert delays[0] <= 30
    assert all(b > a for a, b in zip(delays[:5], delays[1:6], strict=True))  # exponential
    assert max(delays) <= 6 * 3600 * 1.1
    assert sum(delays) >= 24 * 3600  # retried for at least 24 hours
    assert DeliveryAttempt.objects.filter(delivery=out).count() == len(outcomes)
    assert len(receiver.requests) == len(outcomes)


def test_redirects_are_not_followed(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    receiver.answers = [302]
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    assert delivery.deliver_due_webhooks() == ["retrying"]
    assert len(receiver.requests) == 1
    assert Delivery.objects.get().last_status_code == 302


def test_a_run_ending_in_a_tenant_without_webhooks_asks_nothing_more(
    tenant: Tenant, queue: InlineQueue, kicked: list[int]
) -> None:
    """The outbox costs no query when the tenant never asked for a webhook: not one read of
    a webhooks table, not one read of the tenant (its loaded copy answers)."""
    create_graph_version(tenant, chain_spec())
    run = services.create_run(tenant, graph="chain")
    run = Run.objects.select_related("tenant").get(pk=run.pk)
    with transaction.atomic(), CaptureQueriesContext(connection) as seen:
        finish(run, "cancelled", err={"code": "cancelled", "message": "stop"})
    sql = [q["sql"] for q in seen.captured_queries]
    assert sql and not any("webhooks_" in q for q in sql)
    assert not any(q.startswith("SELECT") and '"tenants_tenant"' in q for q in sql)
    assert not Delivery.objects.exists()


def test_the_scheduler_tick_sends_due_deliveries(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    from django.core.management import call_command

    create_subscription(hook_tenant, url=receiver.url)
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    call_command("runyard_scheduler", "--once")
    assert Delivery.objects.get().status == DeliveryStatus.DELIVERED
    assert len(receiver.requests) == 1
