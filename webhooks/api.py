"""The webhooks router: subscriptions (CRUD), their deliveries, the signing secret.

Any role reads; admins create, change and delete subscriptions and rotate the secret.
Another tenant's subscription is a 404.
"""

from __future__ import annotations

import uuid

from django.http import HttpRequest
from ninja import Query, Router, Status

from runs.api.common import admin, caller
from runs.schemas import PageIn
from runs.selectors import Page, key_page
from tenants.schemas import error_responses
from webhooks import services
from webhooks.models import Delivery, Subscription
from webhooks.schemas import (
    DeliveryListOut,
    SecretOut,
    WebhookIn,
    WebhookListOut,
    WebhookOut,
    WebhookPatchIn,
)

router = Router(tags=["webhooks"])


@router.get(
    "/webhooks",
    response={200: WebhookListOut, **error_responses(400)},
    summary="List webhooks",
    description=(
        "The tenant's webhook subscriptions, oldest first, with cursor pagination (400 "
        "`invalid_cursor` for a cursor no list returned)."
    ),
)
def list_webhooks(request: HttpRequest, page: Query[PageIn]) -> Page[Subscription]:
    ctx = caller(request)
    qs = Subscription.objects.filter(tenant=ctx.tenant)
    return key_page(qs, "pk", page.cursor, page.limit)


@router.post(
    "/webhooks",
    response={201: WebhookOut, **error_responses(400, 403, 409)},
    summary="Subscribe a URL to run events",
    description=(
        "Deliveries are signed POSTs (see the README's Webhooks section), retried with "
        "exponential backoff for 24 hours. A URL the tenant's HTTP allow-list or "
        "private-address rule refuses (or not http/https) is a 422 `webhook_refused`; past "
        "`WEBHOOK_MAX_SUBSCRIPTIONS` a 409 `too_many_webhooks`. Needs the admin role."
    ),
)
def create_webhook(request: HttpRequest, payload: WebhookIn) -> Status[Subscription]:
    ctx = admin(request)
    sub = services.create_subscription(
        ctx.tenant,
        url=payload.url,
        events=list(payload.events) if payload.events is not None else None,
        enabled=payload.enabled,
        include_state=payload.include_state,
        description=payload.description,
    )
    return Status(201, sub)


@router.post(
    "/webhooks/secret",
    response={200: SecretOut, **error_responses(403)},
    summary="Rotate the signing secret",
    description=(
        "Makes a new signing secret and returns it, once. Deliveries sent from now on are "
        "signed with it. Needs the admin role."
    ),
)
def rotate_webhook_secret(request: HttpRequest) -> dict[str, str]:
    ctx = admin(request)
    return {"secret": services.rotate_secret(ctx.tenant)}


@router.get(
    "/webhooks/{webhook_id}",
    response={200: WebhookOut, **error_responses(404)},
    summary="Get a webhook",
)
def get_webhook(request: HttpRequest, webhook_id: uuid.UUID) -> Subscription:
    ctx = caller(request)
    return services.get_subscription(ctx.tenant, webhook_id)


@router.patch(
    "/webhooks/{webhook_id}",
    response={200: WebhookOut, **error_responses(400, 403, 404)},
    summary="Change a webhook",
    description=(
        "Only the fields sent change; a new `url` is checked like on create (422 "
        "`webhook_refused`). Needs the admin role."
    ),
)
def update_webhook(
    request: HttpRequest, webhook_id: uuid.UUID, payload: WebhookPatchIn
) -> Subscription:
    ctx = admin(request)
    sub = services.get_subscription(ctx.tenant, webhook_id)
    return services.update_subscription(sub, **payload.model_dump(exclude_unset=True))


@router.delete(
    "/webhooks/{webhook_id}",
    response={204: None, **error_responses(403, 404)},
    summary="Delete a webhook",
    description="Deliveries still owed to it are given up. Needs the admin role.",
)
def delete_webhook(request: HttpRequest, webhook_id: uuid.UUID) -> Status[None]:
    ctx = admin(request)
    services.delete_subscription(services.get_subscription(ctx.tenant, webhook_id))
    return Status(204, None)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response={200: DeliveryListOut, **error_responses(400, 404)},
    summary="A webhook's deliveries",
    description=(
        "Newest first, with their last outcome; cursor pagination (400 `invalid_cursor` for "
        "a cursor no list returned)."
    ),
)
def list_webhook_deliveries(
    request: HttpRequest, webhook_id: uuid.UUID, page: Query[PageIn]
) -> Page[Delivery]:
    ctx = caller(request)
    sub = services.get_subscription(ctx.tenant, webhook_id)
    qs = Delivery.objects.filter(tenant=ctx.tenant, subscription=sub)
    return key_page(qs, "pk", page.cursor, page.limit, descending=True)
