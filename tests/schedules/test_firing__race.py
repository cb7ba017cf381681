"""Exactly once per tick with several schedulers racing: threads, each with its own database
connection, call fire_due_schedules at the same moment. PostgreSQL only: SQLite serialises
every writer, so nothing races there."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from django.db import connection

from runs.models import Run
from schedules.firing import Fired, fire_due_schedules
from schedules.models import Cron, CronFire
from schedules.services import create_cron
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue
from tests.runs.test_concurrency import in_threads
from tests.schedules.conftest import at

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="SQLite serialises every writer anyway"
    ),
]

SCHEDULERS = 4
SCHEDULES = 12


def test_each_tick_fires_once_with_schedulers_racing(
    tenant: Tenant, chain: Any, queue: InlineQueue, settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": 10_000}
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=1000, runs_per_minute=None)
    crons = [
        create_cron(tenant, graph="chain", schedule="* * * * *", now=at("2026-06-01 10:00:30"))
        for _ in range(SCHEDULES)
    ]
    lock = threading.Lock()
    won: list[Fired] = []

    for minute in (1, 2, 3):

        def scheduler(i: int, minute: int = minute) -> None:
            fired = fire_due_schedules(now=at(f"2026-06-01 10:0{minute}:00"))
            with lock:
                won.extend(fired)

        in_threads(SCHEDULERS, scheduler)

    assert len(won) == SCHEDULES * 3
    per_tick = Counter((f.cron_id, f.tick) for f in won)
    assert set(per_tick.values()) == {1}
    assert Run.objects.count() == SCHEDULES * 3
    assert CronFire.objects.count() == SCHEDULES * 3
    for cron in Cron.objects.filter(pk__in=[c.pk for c in crons]):
        assert cron.fire_count == 3
        assert cron.next_run_at == at("2026-06-01 10:04:00")
        ticks = sorted(cron.fires.values_list("tick", flat=True))
        assert ticks == [at(f"2026-06-01 10:0{m}:00") for m in (1, 2, 3)]
    by_cron = Counter(Run.objects.values_list("metadata__cron_id", flat=True))
    assert by_cron == Counter({str(c.public_id): 3 for c in crons})
