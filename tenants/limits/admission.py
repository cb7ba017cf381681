"""Admission: queue slots, concurrency slots and the per-minute rate, race-free.

`queued_count` and `running_count` change only through the functions here, and only by
conditional UPDATEs on the tenant's row, so two workers can never both take the last slot.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, cast

from django.db import connection
from django.db.models import F, Field, Q
from django.utils import timezone

from tenants.limits.budgets import check_budgets
from tenants.limits.errors import LimitExceeded
from tenants.models import Tenant

RATE_WINDOW = dt.timedelta(seconds=60)


def admit_run(tenant: Tenant, *, now: dt.datetime | None = None) -> None:
    """Take a queue slot and a rate token for a new run, or raise LimitExceeded.

    Call inside the transaction that creates the run, so a refused or failed creation leaves the
    counters as they were.
    """
    now = now or timezone.now()
    check_budgets(tenant, now=now, refusing="new runs")
    _take_rate_token(tenant, now)
    if not _take(tenant.pk, "queued_count", "max_queued_runs"):
        raise LimitExceeded(
            "max_queued_runs",
            f"Tenant {tenant.slug} already has {tenant.max_queued_runs} queued runs "
            "(max_queued_runs); retry when some have started.",
            retry_after=5,
            details={"cap": tenant.max_queued_runs},
        )


def _take_rate_token(tenant: Tenant, now: dt.datetime) -> None:
    if tenant.runs_per_minute is None:
        return
    window_start = now - RATE_WINDOW
    # A new window starts for whoever first finds the old one expired; the guard makes the
    # reset happen once even when several requests race.
    reset = Tenant.objects.filter(
        Q(rate_window_start__isnull=True) | Q(rate_window_start__lte=window_start), pk=tenant.pk
    ).update(rate_window_start=now, rate_window_count=1)
    if reset:
        return
    taken = Tenant.objects.filter(pk=tenant.pk, rate_window_count__lt=F("runs_per_minute")).update(
        rate_window_count=F("rate_window_count") + 1
    )
    if not taken:
        started = Tenant.objects.values_list("rate_window_start", flat=True).get(pk=tenant.pk)
        wait = (started + RATE_WINDOW - now).total_seconds() if started else 60
        raise LimitExceeded(
            "runs_per_minute",
            f"Tenant {tenant.slug} may start {tenant.runs_per_minute} runs per minute.",
            retry_after=max(1, math.ceil(wait)),
            details={"cap": tenant.runs_per_minute},
        )


def _take(tenant_id: int, counter: str, cap: str, *, stamp: str = "", when: Any = None) -> bool:
    """Add one to `counter` while it is below `cap` (and set `stamp` to `when`): one guarded
    UPDATE in plain SQL, since run creation and dispatch run it for every run."""
    q = connection.ops.quote_name
    sets, params = f"{q(counter)} = {q(counter)} + 1", [tenant_id]
    if stamp:
        prepared = cast(Field, Tenant._meta.get_field(stamp)).get_db_prep_save(when, connection)
        sets, params = f"{sets}, {q(stamp)} = %s", [prepared, tenant_id]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {q(Tenant._meta.db_table)} SET {sets} "  # noqa: S608 - names from model meta
            f"WHERE {q('id')} = %s AND {q(counter)} < {q(cap)}",
            params,
        )
        return cursor.rowcount == 1


def _decrement(tenant_id: int, counter: str) -> None:
    q, column = connection.ops.quote_name, connection.ops.quote_name(counter)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {q(Tenant._meta.db_table)} SET {column} = {column} - 1 "  # noqa: S608 - names from model meta
            f"WHERE {q('id')} = %s AND {column} > 0",
            [tenant_id],
        )


def release_queue_slot(tenant_id: int) -> None:
    _decrement(tenant_id, "queued_count")


def acquire_run_slot(tenant_id: int, *, dispatched_at: dt.datetime | None = None) -> bool:
    """Take one of the tenant's `max_concurrent_runs` slots; False when none is free. Also
    stamps `last_dispatched_at`, the dispatcher's round robin."""
    return _take(
        tenant_id,
        "running_count",
        "max_concurrent_runs",
        stamp="last_dispatched_at",
        when=dispatched_at or timezone.now(),
    )


def running_total() -> int:
    """Runs holding a concurrency slot across all tenants."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COALESCE(SUM({connection.ops.quote_name('running_count')}), 0) "  # noqa: S608
            f"FROM {connection.ops.quote_name(Tenant._meta.db_table)}"
        )
        return int(cursor.fetchone()[0])


def release_run_slot(tenant_id: int) -> None:
    _decrement(tenant_id, "running_count")
