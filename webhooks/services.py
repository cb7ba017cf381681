"""Webhook use cases: subscriptions, the tenant's signing secret, destinations, redelivery.

Destinations obey the same policy as `http` nodes (runs/engine/netguard.py): the tenant's host
allow-list, and no private address unless the tenant allows them. They are checked here when a
subscription or a run's webhook is created (422), and again before every send (DNS changes).
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from runs.engine.context import HttpPolicy
from runs.engine.errors import NodeError
from runs.engine.netguard import check_url
from runs.services.errors import Conflict, NotFound, ValidationFailed
from tenants.models import AuditLog, Tenant
from webhooks.models import (
    EVENTS,
    URL_MAX_LENGTH,
    Delivery,
    DeliveryStatus,
    RunWebhook,
    Subscription,
)

SECRET_PREFIX = "whsec_"  # noqa: S105 - a label, not a secret


def policy_for(tenant: Tenant) -> HttpPolicy:
    return HttpPolicy(
        allowed_hosts=list(tenant.http_allowed_hosts or []),
        allow_private=tenant.http_allow_private,
    )


def check_destination(tenant: Tenant, url: Any, *, field: str = "url") -> str:
    """`url` stripped, if the tenant may send webhooks there; ValidationFailed (422) if not."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationFailed(f"{field} must be an http or https URL.", details={"field": field})
    url = url.strip()
    if len(url) > URL_MAX_LENGTH:
        raise ValidationFailed(
            f"{field} is {len(url)} characters long; the limit is {URL_MAX_LENGTH}.",
            details={"field": field},
        )
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValidationFailed(
            f"{field} must not contain spaces or control characters.", details={"field": field}
        )
    try:
        check_url(url, policy_for(tenant))
    except NodeError as exc:
        raise ValidationFailed(
            f"{field} is refused: {exc.message}. Webhooks obey the tenant's HTTP allow-list "
            "and private-address rule, like http nodes.",
            code="webhook_refused",
            details={"field": field, "reason": exc.code},
        ) from None
    return url


def _check_events(events: Any) -> list[str]:
    if events is None:
        return list(EVENTS)
    if not isinstance(events, list) or not events:
        raise ValidationFailed(
            "events must be a non-empty list of run events.", details={"field": "events"}
        )
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise ValidationFailed(
            f"events holds unknown events ({', '.join(map(str, unknown[:5]))}); "
            f"known: {', '.join(EVENTS)}.",
            details={"field": "events", "known": list(EVENTS)},
        )
    return [e for e in EVENTS if e in events]  # deduplicated, in a stable order


def _mark_in_use(tenant: Tenant) -> None:
    """From now on, runs of this tenant look for webhook targets when they end."""
    if not tenant.webhooks_in_use:
        Tenant.objects.filter(pk=tenant.pk, webhooks_in_use=False).update(webhooks_in_use=True)
        tenant.webhooks_in_use = True


# --- the signing secret --------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def rotate_secret(tenant: Tenant) -> str:
    """A new signing secret for the tenant, returned once: deliveries sent from now on use it."""
    secret = new_secret()
    Tenant.objects.filter(pk=tenant.pk).update(webhook_secret=secret)
    tenant.webhook_secret = secret
    return secret


def secret_for(tenant_pk: int) -> str:
    """The tenant's signing secret, made on first use (one writer wins the guarded update)."""
    current = Tenant.objects.filter(pk=tenant_pk).values_list("webhook_secret", flat=True).get()
    if current:
        return current
    Tenant.objects.filter(pk=tenant_pk, webhook_secret="").update(webhook_secret=new_secret())
    return Tenant.objects.filter(pk=tenant_pk).values_list("webhook_secret", flat=True).get()


def masked_secret(tenant: Tenant) -> str:
    secret = tenant.webhook_secret
    return f"{secret[: len(SECRET_PREFIX) + 4]}…" if secret else ""


# --- subscriptions -------------------------------------------------------------------------------


def get_subscription(tenant: Tenant, subscription_id: Any) -> Subscription:
    try:
        public_id = uuid.UUID(str(subscription_id))
    except ValueError:
        public_id = None
    found = (
        Subscription.objects.filter(tenant=tenant, public_id=public_id).first()
        if public_id
        else None
    )
    if found is None:
        raise NotFound(f"Webhook {subscription_id} does not exist.")
    return found


@transaction.atomic
def create_subscription(
    tenant: Tenant,
    *,
    url: str,
    events: list[str] | None = None,
    enabled: bool = True,
    include_state: bool = True,
    description: str = "",
) -> Subscription:
    url = check_destination(tenant, url)
    events = _check_events(events)
    # Locks the tenant row: two concurrent creates cannot both pass the count.
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    cap = int(settings.RUNYARD["WEBHOOK_MAX_SUBSCRIPTIONS"])
    if Subscription.objects.filter(tenant=locked).count() >= cap:
        raise Conflict(
            f"A tenant can have {cap} webhooks at most; delete one first.",
            code="too_many_webhooks",
            details={"limit": cap},
        )
    sub = Subscription.objects.create(
        tenant=tenant,
        url=url,
        events=events,
        enabled=enabled,
        include_state=include_state,
        description=description[:200],
    )
    _mark_in_use(tenant)
    secret_for(tenant.pk)
    return sub


@transaction.atomic
def update_subscription(sub: Subscription, **changes: Any) -> Subscription:
    """PATCH: only the fields given change; the URL is checked again when it does."""
    if changes.get("url") is not None:
        sub.url = check_destination(sub.tenant, changes["url"])
    if changes.get("events") is not None:
        sub.events = _check_events(changes["events"])
    for name in ("enabled", "include_state"):
        if changes.get(name) is not None:
            setattr(sub, name, bool(changes[name]))
    if changes.get("description") is not None:
        sub.description = str(changes["description"])[:200]
    sub.save()
    return sub


@transaction.atomic
def delete_subscription(sub: Subscription) -> None:
    """Deliveries still owed to it are given up: nobody asked for them any more."""
    Delivery.objects.filter(subscription=sub, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED, last_error="subscription deleted", next_attempt_at=None
    )
    sub.delete()


# --- per-run webhooks ----------------------------------------------------------------------------


def attach_to_run(run: Any, url: str, *, include_state: bool = True) -> RunWebhook:
    """Called by create_run in the run's own transaction, with a URL check_destination passed."""
    _mark_in_use(run.tenant)
    secret_for(run.tenant_id)
    return RunWebhook.objects.create(
        run_id=run.pk, tenant_id=run.tenant_id, url=url, include_state=include_state
    )


# --- redelivery ----------------------------------------------------------------------------------


def retry_window() -> dt.timedelta:
    return dt.timedelta(hours=float(settings.RUNYARD["WEBHOOK_RETRY_HOURS"]))


@transaction.atomic
def redeliver(delivery: Delivery, *, by: Any = None) -> Delivery:
    """Send a delivery again now, whatever became of it, with a fresh retry window.

    The same body (and delivery id) goes out, signed with the tenant's current secret.
    `by` (an operator) is recorded in the audit log."""
    now = timezone.now()
    AuditLog.objects.create(
        actor=by if getattr(by, "pk", None) else None,
        actor_label=str(by or "system"),
        tenant_id=delivery.tenant_id,
        action="webhook.redeliver",
        target_type="delivery",
        target_id=str(delivery.public_id),
        status_before=delivery.status,
        status_after=DeliveryStatus.PENDING,
    )
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING,
        next_attempt_at=now,
        retry_until=now + retry_window(),
        delivered_at=None,
        claims=F("claims") + 1,  # an attempt in flight now records nothing
    )
    delivery.refresh_from_db()
    from webhooks.delivery import send_soon

    transaction.on_commit(partial(send_soon, [delivery.pk]))
    return delivery
