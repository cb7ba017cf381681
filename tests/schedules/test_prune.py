"""prune_runs deletes runs that schedules started: the schedule and its fire rows stay, their
run references are cleared (the database's foreign keys would refuse the DELETE otherwise)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from runs.models import Run
from runs.services import prune
from schedules.firing import fire_due_schedules
from schedules.models import Cron, CronFire
from schedules.services import create_cron
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue
from tests.schedules.conftest import at

pytestmark = pytest.mark.django_db(transaction=True)


def test_pruning_a_scheduled_run_keeps_the_schedule_and_its_fires(
    tenant: Tenant, chain: Any, queue: InlineQueue, settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": 100}
    cron = create_cron(tenant, graph="chain", schedule="*/5 * * * *", now=at("2026-06-01 10:02"))
    fire_due_schedules(now=at("2026-06-01 10:05:00"))
    assert queue.drain() == ["succeeded"]
    Run.objects.update(finished_at=timezone.now() - dt.timedelta(days=40))

    assert prune.prune_runs(finished_before=timezone.now() - dt.timedelta(days=30)) == 1

    assert not Run.objects.exists()
    cron = Cron.objects.get(pk=cron.pk)
    assert cron.last_run is None and cron.fire_count == 1 and cron.last_outcome == "started"
    fire = CronFire.objects.get()
    assert fire.run is None and fire.outcome == "started"
