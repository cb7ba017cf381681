"""Retention: finished deliveries (with their attempts) older than a cutoff, in batches, and
the webhooks of runs `prune_runs` deleted (it deletes runs with plain SQL, which cascades
nothing outside the runs app)."""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, RunWebhook

BATCH = 1000


def prune_deliveries(*, finished_before: dt.datetime, batch: int = BATCH) -> int:
    """Delete delivered and failed deliveries created before `finished_before`; pending ones
    are kept whatever their age (they are still owed). Returns how many were deleted."""
    deleted = 0
    while True:
        pks = list(
            Delivery.objects.filter(
                created_at__lt=finished_before,
                status__in=(DeliveryStatus.DELIVERED, DeliveryStatus.FAILED),
            ).values_list("pk", flat=True)[:batch]
        )
        if not pks:
            return deleted
        with transaction.atomic():
            DeliveryAttempt.objects.filter(delivery_id__in=pks).delete()
            deleted += Delivery.objects.filter(pk__in=pks).delete()[0]


def prune_orphan_run_webhooks(*, batch: int = BATCH) -> int:
    from runs.models import Run

    deleted = 0
    while True:
        pks = list(
            RunWebhook.objects.exclude(run_id__in=Run.objects.values("pk")).values_list(
                "pk", flat=True
            )[:batch]
        )
        if not pks:
            return deleted
        deleted += RunWebhook.objects.filter(pk__in=pks).delete()[0]
