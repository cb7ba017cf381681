"""Sending deliveries: claim with a guarded update, check the destination, POST, record.

`deliver_due_webhooks()` is one iteration (the scheduler calls it on its tick, tests call it
directly); `deliver_webhooks(pks)` is the queue task that makes the first attempt right after
the status change commits. Both claim each delivery with the same guarded UPDATE (due now,
still pending -> due again only after a lease, `claims + 1`), so two senders never both send
it; a sender records its result only while it still holds that claim. A sender that dies
mid-send leaves the delivery due again once the lease is over: delivery is at-least-once,
and the `Runyard-Delivery` header lets a receiver drop a repeat.

HTTP calls carry no database work (they run on a small thread pool); the destination is
checked against the tenant's allow-list and private-address rule before each one, and the
request connects to the address that was checked (no second DNS answer can redirect it).
Redirects are not followed; answers are read up to WEBHOOK_MAX_RESPONSE_BYTES.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from observability.metrics import observe_webhook_delivery
from runs.dispatch import broker
from runs.engine.context import HttpPolicy
from runs.engine.errors import NodeError
from runs.engine.netguard import check_url
from tenants.models import Tenant
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Outcome
from webhooks.services import policy_for, secret_for

log = logging.getLogger(__name__)

BATCH = 32  # deliveries claimed per iteration
PER_TENANT = 8  # of which one tenant gets at most this many: its dead receiver is its own
USER_AGENT = "Runyard-Webhooks/1"


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """`Runyard-Signature`: v1=<hex HMAC-SHA256 of "<timestamp>.<body>"> keyed by the secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def retry_delay(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: first retry after WEBHOOK_FIRST_RETRY_SECONDS
    (10 s), then three times longer each time up to 6 h, with up to 10 % jitter."""
    first = float(settings.RUNYARD["WEBHOOK_FIRST_RETRY_SECONDS"])
    delay = min(first * 3 ** max(attempt - 1, 0), 6 * 3600.0)
    return delay * (1 + random.random() / 10)


def _timeout() -> float:
    return float(settings.RUNYARD["WEBHOOK_TIMEOUT_SECONDS"])


def _lease() -> dt.timedelta:
    # Longer than a send can take (connect + read are both bounded by the timeout).
    return dt.timedelta(seconds=2 * _timeout() + 30)


# --- the queue task and the scheduler's iteration ------------------------------------------------


def send_soon(pks: Sequence[int]) -> None:
    """On commit of a status change: the first attempt goes to a worker at once. Failing to
    enqueue loses nothing: the deliveries are due, and the scheduler's tick sends them.
    With WEBHOOK_SEND_ON_COMMIT off, only the scheduler sends (no worker time spent)."""
    if not settings.RUNYARD.get("WEBHOOK_SEND_ON_COMMIT", True):
        return
    try:
        from django_q.tasks import async_task

        async_task(
            "webhooks.tasks.deliver_webhooks",
            list(pks),
            group="webhooks",
            hook=None,
            save=False,  # the deliveries' rows are the record (see runs.dispatch.enqueue_run)
            broker=broker(),
        )
    except Exception:  # noqa: BLE001 - the scheduler's tick picks them up
        log.warning("could not enqueue webhook deliveries %s", pks, exc_info=True)


def deliver_webhooks(pks: Sequence[int]) -> list[str]:
    """Queue task: attempt these deliveries now, if they are still due and unclaimed."""
    now = timezone.now()
    return _attempt([c for pk in pks if (c := _claim(pk, now)) is not None])


def deliver_due_webhooks(*, limit: int = BATCH, now: dt.datetime | None = None) -> list[str]:
    """One iteration: claim up to `limit` due deliveries (at most PER_TENANT of one tenant),
    send them, record each attempt. Returns their outcomes."""
    now = now or timezone.now()
    # The oldest due deliveries, at most PER_TENANT of each tenant: a tenant with thousands
    # owed to a dead receiver delays nobody else's.
    rank = Window(RowNumber(), partition_by=[F("tenant_id")], order_by=F("next_attempt_at").asc())
    picked = list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .annotate(rank=rank)
        .filter(rank__lte=PER_TENANT)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    return _attempt([c for pk in picked if (c := _claim(pk, now)) is not None])


# --- claim, send, record -------------------------------------------------------------------------


@dataclass
class Claimed:
    delivery: Delivery
    policy: HttpPolicy
    secret: str
    active: bool
    result: dict[str, Any] = field(default_factory=dict)


def _claim(pk: int, now: dt.datetime) -> Claimed | None:
    won = Delivery.objects.filter(
        pk=pk, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=timezone.now() + _lease(), claims=F("claims") + 1)
    if won != 1:
        return None  # another sender has it, or it is no longer due
    delivery = Delivery.objects.get(pk=pk)
    # The tenant's policy as it is now: an operator may have narrowed the allow-list.
    tenant = Tenant.objects.get(pk=delivery.tenant_id)
    return Claimed(delivery, policy_for(tenant), secret_for(tenant.pk), tenant.is_active)


def _attempt(claimed: list[Claimed]) -> list[str]:
    if not claimed:
        return []
    if len(claimed) == 1:
        claimed[0].result = _send(claimed[0])
    else:
        # One thread per claimed delivery: an iteration lasts one timeout at most.
        with ThreadPoolExecutor(len(claimed), "webhook-send") as pool:
            for c, result in zip(claimed, pool.map(_send, claimed), strict=True):
                c.result = result
    return [_record(c) for c in claimed]


def _send(c: Claimed) -> dict[str, Any]:
    """One HTTP attempt; no database access (this runs on the sender pool)."""
    d = c.delivery
    started = time.monotonic()

    def done(**result: Any) -> dict[str, Any]:
        return {"duration_ms": int((time.monotonic() - started) * 1000), **result}

    if not c.active:
        return done(refused=True, error="the tenant is deactivated")
    try:
        host, port, address = check_url(d.url, c.policy)
    except NodeError as exc:
        return done(refused=exc.code == "http_refused", error=exc.message)
    body = d.body.encode()
    timestamp = str(int(time.time()))
    original = httpx.URL(d.url)
    pinned = original.copy_with(host=str(address), port=port)
    extensions = {"sni_hostname": host} if original.scheme == "https" else {}
    default_port = 443 if original.scheme == "https" else 80
    shown_host = f"[{host}]" if ":" in host else host
    headers = {
        "Host": shown_host if port == default_port else f"{shown_host}:{port}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Runyard-Event": d.event,
        "Runyard-Delivery": str(d.public_id),
        "Runyard-Timestamp": timestamp,
        "Runyard-Signature": sign(c.secret, timestamp, body),
    }
    limit = int(settings.RUNYARD["WEBHOOK_MAX_RESPONSE_BYTES"])
    timeout = _timeout()
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream(
                "POST", pinned, content=body, headers=headers, extensions=extensions
            ) as response,
        ):
            received = b""
            deadline = started + timeout
            for chunk in response.iter_bytes():
                received += chunk[: limit - len(received)]
                if len(received) >= limit or time.monotonic() > deadline:
                    break  # enough to judge it by; the rest is not ours to read
            return done(status_code=response.status_code, excerpt=received[:500])
    except httpx.TimeoutException:
        return done(error=f"no answer within {timeout:g}s")
    except httpx.HTTPError as exc:
        return done(error=f"{type(exc).__name__}: {exc}"[:500])


def _record(c: Claimed) -> str:
    d, r = c.delivery, c.result
    now = timezone.now()
    code = r.get("status_code")
    number = d.attempts + 1
    if code is not None and 200 <= code < 300:
        outcome = Outcome.DELIVERED
    elif r.get("refused"):
        outcome = Outcome.REFUSED
    elif now >= d.retry_until:
        outcome = Outcome.FAILED
    else:
        outcome = Outcome.RETRYING
    error = r.get("error") or ("" if outcome == Outcome.DELIVERED else f"answered {code}")
    updates: dict[str, Any] = {
        "attempts": number,
        "last_outcome": outcome,
        "last_status_code": code,
        "last_error": error[:500],
    }
    if outcome == Outcome.DELIVERED:
        updates.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif now >= d.retry_until:  # a refusal past the window gives up too
        updates.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        updates["next_attempt_at"] = now + dt.timedelta(seconds=retry_delay(number))
    # Fenced by the claim: a sender whose lease ran out (and whose delivery another sender
    # claimed since, or an operator redelivered, or whose subscription was deleted) records
    # nothing, so each attempt is logged once and never undoes a later decision.
    excerpt = r.get("excerpt") or b""
    with transaction.atomic():
        fence = Delivery.objects.filter(pk=d.pk, claims=d.claims, status=DeliveryStatus.PENDING)
        if not fence.update(**updates):
            return "fenced"
        DeliveryAttempt.objects.create(
            delivery=d,
            number=number,
            outcome=outcome,
            status_code=code,
            error=error[:500],
            duration_ms=r.get("duration_ms", 0),
            response_excerpt=excerpt.decode("utf-8", errors="replace")[:500],
        )
    log.info("webhook %s %s to %s: %s (%s)", d.public_id, d.event, d.url, outcome, code or error)
    observe_webhook_delivery(d.tenant.slug, str(outcome))
    return str(outcome)
