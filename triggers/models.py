"""Event triggers: which graphs an event name starts, and the events received."""

from __future__ import annotations

import uuid

from django.db import models

from tenants.models import Tenant


class Subscription(models.Model):
    """Graph `graph_name` starts on events named `event` (its newest version's `triggers`;
    rewritten each time a version is stored: triggers/subscriptions.py)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    graph_name = models.CharField(max_length=100)
    event = models.CharField(max_length=100)
    # Input keys to expressions over `payload` (None: the payload is the input).
    input = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "event", "graph_name"], name="uniq_trigger_subscription"
            )
        ]
        indexes = [models.Index(fields=["tenant", "graph_name"], name="trigger_sub_graph")]
        ordering = ["graph_name", "event"]

    def __str__(self) -> str:
        return f"{self.event} -> {self.graph_name}"


class ReceivedEvent(models.Model):
    """One `POST /events`, with the runs it started and the refusals. A repeated `event_id`
    hits the unique constraint and starts nothing."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    # The sender's id for deduplication ("" when it sent none: never deduplicated).
    event_id = models.CharField(max_length=200, blank=True)
    name = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    by = models.CharField(max_length=200, blank=True)
    # [{"run_id", "graph", "version"}] and [{"graph", "code", "message"}].
    started = models.JSONField(default=list, blank=True)
    refused = models.JSONField(default=list, blank=True)
    # Indexed for pruning (`prune_runs` deletes received events with the runs of their age).
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "event_id"],
                condition=~models.Q(event_id=""),
                name="uniq_received_event_id",
            )
        ]
        indexes = [models.Index(fields=["tenant", "-id"], name="received_event_recent")]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.event_id or self.public_id})"
