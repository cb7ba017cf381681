"""API shapes of webhooks: subscriptions in and out, deliveries, the signing secret."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from ninja import Schema
from pydantic import Field

from runs.schemas import URL_PATTERN, BodyIn, next_cursor_field
from webhooks.models import EVENTS, URL_MAX_LENGTH

Event = Literal[
    "run.succeeded",
    "run.failed",
    "run.cancelled",
    "run.waiting",
    "run.interrupted",
    "run.timed_out",
]


class WebhookIn(BodyIn):
    url: str = Field(
        ...,
        min_length=1,
        max_length=URL_MAX_LENGTH,
        pattern=URL_PATTERN,
        description="An http or https URL; it must pass the tenant's HTTP allow-list and "
        "private-address rule, like http nodes (422 `webhook_refused`).",
        examples=["https://hooks.example.com/runyard"],
    )
    events: list[Event] | None = Field(
        None,
        min_length=1,
        max_length=len(EVENTS),
        description="Run events to send; default all of them.",
    )
    enabled: bool = True
    include_state: bool = Field(True, description="Whether bodies carry the run's state.")
    description: str = Field("", max_length=200)


class WebhookPatchIn(BodyIn):
    url: str | None = Field(None, min_length=1, max_length=URL_MAX_LENGTH, pattern=URL_PATTERN)
    events: list[Event] | None = Field(None, min_length=1, max_length=len(EVENTS))
    enabled: bool | None = None
    include_state: bool | None = None
    description: str | None = Field(None, max_length=200)


class WebhookOut(Schema):
    id: uuid.UUID = Field(..., alias="public_id")
    url: str
    events: list[Event]
    enabled: bool
    include_state: bool
    description: str
    created_at: dt.datetime
    updated_at: dt.datetime


class WebhookListOut(Schema):
    items: list[WebhookOut]
    next_cursor: str | None = next_cursor_field()


class DeliveryOut(Schema):
    id: uuid.UUID = Field(..., alias="public_id")
    event: Event
    run_id: uuid.UUID = Field(..., alias="run_public_id")
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_outcome: Literal["", "delivered", "retrying", "failed", "refused"] = Field(
        ..., description="What the last attempt came to; empty before the first."
    )
    last_status_code: int | None
    last_error: str
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class DeliveryListOut(Schema):
    items: list[DeliveryOut]
    next_cursor: str | None = next_cursor_field()


class SecretOut(Schema):
    secret: str = Field(
        ...,
        description="Signs every delivery from now on: `Runyard-Signature: v1=<hex "
        'HMAC-SHA256 of "<Runyard-Timestamp>.<body>">`. Shown only here; keep it.',
    )
