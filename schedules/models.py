"""Schedules (crons) and the record of their fires. Services own every write (services.py,
firing.py); the scheduler's guarded UPDATE of `next_run_at` is what makes a tick fire once."""

from __future__ import annotations

import uuid

from django.db import models

from runs.models import Run, Thread
from runs.querysets import TenantScopedQuerySet
from tenants.models import Tenant


class FireOutcome(models.TextChoices):
    STARTED = "started"  # a run was created
    REFUSED = "refused"  # the tenant gate or the run service said no (limits, graph gone...)
    FAILED = "failed"  # something unexpected; recorded so the next tick is not held up


class Cron(models.Model):
    """Start `graph` with `input` at every tick of `schedule` in `timezone`.

    `next_run_at` is the next tick owed, in UTC; null while disabled. The scheduler fires a
    schedule by moving it from the tick it saw to the next future one with a guarded UPDATE,
    so however many schedulers run, one wins each tick, and missed ticks collapse into one.
    """

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="crons")
    graph_name = models.CharField(max_length=100)
    # None: the latest version at each fire.
    graph_version = models.PositiveIntegerField(null=True, blank=True)
    input = models.JSONField(default=dict, blank=True)
    schedule = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    # A schedule on a thread goes with it.
    thread = models.ForeignKey(
        Thread, null=True, blank=True, on_delete=models.CASCADE, related_name="crons"
    )
    multitask_strategy = models.CharField(max_length=16, default="reject")
    # No tick after this fires; the schedule disables itself when its next tick would be later.
    end_time = models.DateTimeField(null=True, blank=True)
    # Each run it starts gets this run webhook (webhooks/), checked again at every fire.
    webhook = models.CharField(max_length=2000, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Each fire's run priority (1-5, higher first at dispatch).
    priority = models.PositiveSmallIntegerField(default=3)
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_outcome = models.CharField(max_length=16, choices=FireOutcome.choices, blank=True)
    # {code, message} of the last fire that did not start a run; cleared by the next success.
    last_error = models.JSONField(null=True, blank=True)
    fire_count = models.PositiveIntegerField(default=0)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        indexes = [
            # The scheduler's one query: enabled schedules whose tick is due, oldest first.
            models.Index(
                fields=["next_run_at"],
                name="cron_due",
                condition=models.Q(enabled=True),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(priority__gte=1, priority__lte=5), name="cron_priority_1_5"
            ),
        ]
        verbose_name = "schedule"

    def __str__(self) -> str:
        return f"{self.graph_name} @ {self.schedule} ({self.timezone})"


class CronFire(models.Model):
    """One fire of a schedule: the tick it was for, when it happened, and what came of it.
    The last CRON_FIRES_KEPT per schedule are kept."""

    cron = models.ForeignKey(Cron, on_delete=models.CASCADE, related_name="fires")
    tick = models.DateTimeField(help_text="The tick this fire was for (UTC).")
    fired_at = models.DateTimeField()
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=16, choices=FireOutcome.choices)
    error = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["cron", "-id"], name="cronfire_recent")]
        verbose_name = "fire"

    def __str__(self) -> str:
        return f"{self.cron_id} {self.tick:%Y-%m-%d %H:%M} {self.outcome}"
