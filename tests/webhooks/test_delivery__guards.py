"""Destinations obey the tenant's allow-list and the private-address guard, at subscription
time (422) and again at send time (a refused send is an attempt); two senders never both send."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from django.db import connection

from runs import services
from runs.engine import netguard
from runs.schemas import URL_PATTERN
from runs.services.errors import ValidationFailed
from tenants.models import Tenant
from tests.webhooks.conftest import InlineQueue, Receiver
from webhooks import delivery
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus
from webhooks.services import check_destination, create_subscription

pytestmark = pytest.mark.django_db(transaction=True)


def _refusal(tenant: Tenant, url: str) -> dict[str, Any]:
    with pytest.raises(ValidationFailed) as caught:
        create_subscription(tenant, url=url)
    assert caught.value.status == 422
    return {"code": caught.value.code, "message": caught.value.message, **caught.value.details}


def test_subscription_outside_the_allow_list_is_refused(hook_tenant: Tenant) -> None:
    refusal = _refusal(hook_tenant, "http://10.0.0.8/hook")
    assert refusal["code"] == "webhook_refused" and refusal["field"] == "url"
    assert "allow-list" in refusal["message"]


def test_subscription_to_a_private_address_is_refused_unless_allowed(hook_tenant: Tenant) -> None:
    hook_tenant.http_allow_private = False
    hook_tenant.save()
    refusal = _refusal(hook_tenant, "http://127.0.0.1:9/hook")
    assert refusal["code"] == "webhook_refused" and "non-public" in refusal["message"]


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x", "javascript:alert(1)", "http://user:pw@127.0.0.1/x", "", "http://"],
)
def test_bad_urls_are_refused(hook_tenant: Tenant, url: str) -> None:
    with pytest.raises(ValidationFailed):
        check_destination(hook_tenant, url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        " \t http://127.0.0.1/x \n",
        "\u00a0http://127.0.0.1/x\u2028",
        "\x1fhttp://127.0.0.1/x",
        "ftp://127.0.0.1/x",
        "x",
        "",
        "   ",
        "\u3000",
        "http://127.0.0.1/a b",
        "http://127.0.0.1/a\u00a0b",
        "http://127.0.0.1/\x01",
        "\x01http://127.0.0.1/x",
        "http://127.0.0.1/\x00",
    ],
)
def test_url_pattern_of_the_document_is_the_shape_check_destination_takes(
    hook_tenant: Tenant, url: str
) -> None:
    """The document's `URL_PATTERN` accepts exactly the URLs that pass check_destination's
    shape checks; what it accepts may still be refused, but only as `webhook_refused`."""
    try:
        check_destination(hook_tenant, url)
        shape_ok = True
    except ValidationFailed as exc:
        shape_ok = exc.code == "webhook_refused"
    assert (re.fullmatch(URL_PATTERN, url) is not None) == shape_ok


def test_overlong_url_is_refused(hook_tenant: Tenant) -> None:
    with pytest.raises(ValidationFailed, match="limit is 2000"):
        check_destination(hook_tenant, "http://127.0.0.1/" + "a" * 2000)


def test_allow_list_narrowed_after_subscribing_refuses_the_send(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    Tenant.objects.filter(pk=hook_tenant.pk).update(http_allowed_hosts=["hooks.example.com"])
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    assert delivery.deliver_due_webhooks() == ["refused"]
    assert receiver.requests == []
    out = Delivery.objects.get()
    attempt = DeliveryAttempt.objects.get(delivery=out)
    assert attempt.outcome == "refused" and "allow-list" in attempt.error
    # Still owed: an operator may widen the list again within the retry window.
    assert out.status == DeliveryStatus.PENDING and out.next_attempt_at is not None


def test_dns_answer_turning_private_at_send_time_refuses_the_send(
    hook_tenant: Tenant,
    receiver: Receiver,
    queue: InlineQueue,
    kicked: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Tenant.objects.filter(pk=hook_tenant.pk).update(
        http_allowed_hosts=["hooks.example.com"], http_allow_private=False
    )
    hook_tenant.refresh_from_db()
    answers = {"hooks.example.com": [ipaddress.ip_address("93.184.216.34")]}
    monkeypatch.setattr(netguard, "resolve_host", lambda host, port: answers[host])
    create_subscription(hook_tenant, url="http://hooks.example.com/hook")  # public: accepted
    answers["hooks.example.com"] = [ipaddress.ip_address("127.0.0.1")]  # rebinding
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    assert delivery.deliver_due_webhooks() == ["refused"]
    attempt = DeliveryAttempt.objects.get()
    assert attempt.outcome == "refused" and "non-public address 127.0.0.1" in attempt.error
    assert receiver.requests == []


def test_two_senders_racing_send_each_delivery_once(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    create_subscription(hook_tenant, url=receiver.url + "?second")
    for _ in range(3):
        services.create_run(hook_tenant, graph="chain")
    queue.drain()
    assert Delivery.objects.count() == 6
    barrier = threading.Barrier(3)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def sender(task: Any) -> None:
        try:
            barrier.wait()
            outcomes.extend(task())
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
        finally:
            connection.close()

    tasks = [
        delivery.deliver_due_webhooks,
        delivery.deliver_due_webhooks,
        lambda: delivery.deliver_webhooks(kicked),  # the on-commit queue task, racing too
    ]
    threads = [threading.Thread(target=sender, args=(t,)) for t in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert outcomes == ["delivered"] * 6
    sent = Counter(r.headers["Runyard-Delivery"] for r in receiver.requests)
    assert len(sent) == 6 and set(sent.values()) == {1}
    assert DeliveryAttempt.objects.count() == 6
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}


def test_a_sender_that_lost_its_claim_records_nothing(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    create_subscription(hook_tenant, url=receiver.url)
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    from django.utils import timezone

    claimed = delivery._claim(kicked[0], timezone.now())
    assert claimed is not None
    assert delivery._claim(kicked[0], timezone.now()) is None  # claimed: not due
    # Its lease ran out and another sender claimed it meanwhile.
    Delivery.objects.filter(pk=kicked[0]).update(next_attempt_at=timezone.now())
    assert delivery.deliver_webhooks(kicked) == ["delivered"]
    claimed.result = {"status_code": 200, "duration_ms": 1}
    assert delivery._record(claimed) == "fenced"
    assert DeliveryAttempt.objects.count() == 1


def test_one_tenants_backlog_does_not_hold_up_another_tenants_delivery(
    hook_tenant: Tenant, other_tenant: Tenant, receiver: Receiver
) -> None:
    from django.utils import timezone

    Tenant.objects.filter(pk=other_tenant.pk).update(
        http_allowed_hosts=["127.0.0.1"], http_allow_private=True
    )
    now = timezone.now()

    def owed(tenant: Tenant, n: int, age: int) -> None:
        Delivery.objects.bulk_create(
            Delivery(
                tenant=tenant,
                run_public_id=uuid.uuid4(),
                event="run.succeeded",
                url=receiver.url,
                body="{}",
                next_attempt_at=now - dt.timedelta(seconds=age),
                retry_until=now + dt.timedelta(hours=24),
            )
            for _ in range(n)
        )

    owed(hook_tenant, 30, age=600)  # alice's backlog is older...
    owed(other_tenant, 1, age=1)  # ...than bob's one delivery
    outcomes = delivery.deliver_due_webhooks(limit=9)
    assert outcomes == ["delivered"] * 9
    sent = Delivery.objects.filter(status="delivered")
    assert sent.filter(tenant=other_tenant).count() == 1
    assert sent.filter(tenant=hook_tenant).count() == delivery.PER_TENANT


def test_send_on_commit_can_be_left_to_the_scheduler(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, settings: Any, monkeypatch: Any
) -> None:
    enqueued: list[Any] = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: enqueued.append(a))
    create_subscription(hook_tenant, url=receiver.url)
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    first = Delivery.objects.get()
    assert enqueued == [("webhooks.tasks.deliver_webhooks", [first.pk])]

    settings.RUNYARD = {**settings.RUNYARD, "WEBHOOK_SEND_ON_COMMIT": False}
    enqueued.clear()
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    assert Delivery.objects.count() == 2 and enqueued == []
    assert delivery.deliver_due_webhooks() == ["delivered", "delivered"]


def test_send_on_commit_runs_the_first_attempt_as_a_queue_task(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, monkeypatch: Any
) -> None:
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)  # django-q2 runs the task inline
    create_subscription(hook_tenant, url=receiver.url)
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    assert Delivery.objects.get().status == "delivered"
    assert len(receiver.requests) == 1


def test_an_attempt_in_flight_does_not_undo_a_redelivery_or_a_deletion(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    from django.utils import timezone

    from webhooks.services import delete_subscription, redeliver

    sub = create_subscription(hook_tenant, url=receiver.url)
    services.create_run(hook_tenant, graph="chain")
    queue.drain()
    out = Delivery.objects.get()
    in_flight = delivery._claim(out.pk, timezone.now())
    assert in_flight is not None
    redeliver(out)  # an operator asks for it again while the attempt is on the wire
    in_flight.result = {"status_code": 500, "duration_ms": 1}
    assert delivery._record(in_flight) == "fenced"
    out.refresh_from_db()
    assert out.status == "pending" and out.next_attempt_at <= timezone.now()

    in_flight = delivery._claim(out.pk, timezone.now())
    assert in_flight is not None
    delete_subscription(sub)
    in_flight.result = {"status_code": 200, "duration_ms": 1}
    assert delivery._record(in_flight) == "fenced"
    assert Delivery.objects.get().status == "failed"
    assert not DeliveryAttempt.objects.exists()
