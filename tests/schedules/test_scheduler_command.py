"""The runyard_scheduler command's tick fires due schedules (and dispatches their runs)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from runs.management.commands import runyard_scheduler as scheduler_command
from runs.models import Run
from schedules.models import Cron
from schedules.services import create_cron
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_scheduler_tick_fires_a_due_schedule_and_dispatches_its_run(
    tenant: Tenant, chain: Any, queue: InlineQueue, settings: Any, monkeypatch: Any
) -> None:
    # The command drops stale connections each tick; the test's connection holds its data.
    monkeypatch.setattr(scheduler_command, "close_old_connections", lambda: None)
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": 100}
    long_ago = timezone.now() - dt.timedelta(minutes=30)
    cron = create_cron(tenant, graph="chain", schedule="* * * * *", now=long_ago)
    call_command("runyard_scheduler", "--once")
    run = Run.objects.get()
    assert run.metadata["cron_id"] == str(cron.public_id)
    assert queue.pending == [run.pk]  # dispatched in the same tick
    assert queue.drain() == ["succeeded"]
    cron.refresh_from_db()
    assert cron.next_run_at > timezone.now() and cron.fire_count == 1
    call_command("runyard_scheduler", "--once")
    assert Run.objects.count() == 1 and Cron.objects.get().fire_count == 1
