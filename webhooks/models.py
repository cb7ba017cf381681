"""Completion webhooks: tenant subscriptions, per-run webhooks, and the delivery outbox.

A Delivery row is written in the transaction that changes a run's status (webhooks/outbox.py),
so a status change that rolls back leaves no delivery, and one that commits always has one.
Workers send it later (webhooks/delivery.py) and log every attempt.

No foreign key points at runs.Run with a database constraint: `prune_runs` deletes runs with
plain DELETEs, which a constraint from these tables would refuse. Deliveries keep the run's
public id instead; `prune_runs` deletes a pruned run's RunWebhook row with it.
"""

from __future__ import annotations

import uuid

from django.db import models

from tenants.models import Tenant

# The run events a tenant can subscribe to; the run's status is the part after "run.".
EVENTS = (
    "run.succeeded",
    "run.failed",
    "run.cancelled",
    "run.waiting",
    "run.interrupted",
    "run.timed_out",
)
URL_MAX_LENGTH = 2000


class Subscription(models.Model):
    """A URL of a tenant that hears about every root run's events it lists."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="webhook_subscriptions"
    )
    url = models.CharField(max_length=URL_MAX_LENGTH)
    events = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    include_state = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["tenant", "enabled"], name="webhook_sub_tenant")]

    def __str__(self) -> str:
        return self.url


class RunWebhook(models.Model):
    """The `webhook` a run was started with: it hears every event of that run."""

    run = models.OneToOneField(
        "runs.Run",
        on_delete=models.CASCADE,
        primary_key=True,
        db_constraint=False,
        related_name="+",
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    url = models.CharField(max_length=URL_MAX_LENGTH)
    include_state = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # due at next_attempt_at (or being sent: claimed until then)
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up: retried past retry_until, or its subscription was deleted


class Outcome(models.TextChoices):
    """What one attempt came to. Short strings: metrics count deliveries by them."""

    DELIVERED = "delivered"  # a 2xx answer
    RETRYING = "retrying"  # an error or another answer; another attempt is scheduled
    FAILED = "failed"  # an error or another answer, and no attempt is left
    REFUSED = "refused"  # the tenant's allow-list or the private-address guard said no


class Delivery(models.Model):
    """One event for one URL: the outbox row, and its retry state."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    run_public_id = models.UUIDField(db_index=True)
    event = models.CharField(max_length=32)
    url = models.CharField(max_length=URL_MAX_LENGTH)
    # The exact bytes sent (and signed), kept so a redelivery sends the same body.
    body = models.TextField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    # Bumped by every claim; a sender records its result only if it still holds the claim.
    claims = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    retry_until = models.DateTimeField()
    last_outcome = models.CharField(max_length=16, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-id"]
        indexes = [
            # The senders' only query: pending deliveries by due time.
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_due",
            ),
            models.Index(fields=["tenant", "-id"], name="webhook_delivery_tenant"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.url}"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"#{self.number} {self.outcome}"
