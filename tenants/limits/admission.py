"""Admission: queue slots, concurrency slots and the per-minute rate, race-free.

`queued_count` and `running_count` change only through the functions here, and only by
conditional UPDATEs on the tenant's row, so two workers can never both take the last slot.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any, NoReturn, cast

from django.db import connection
from django.db.models import Field
from django.utils import timezone

from tenants.limits.budgets import check_budgets
from tenants.limits.errors import LimitExceeded
from tenants.models import Tenant

RATE_WINDOW = dt.timedelta(seconds=60)


def admit_run(tenant: Tenant, *, now: dt.datetime | None = None) -> None:
    """Take a queue slot and a rate token for a new run, or raise LimitExceeded.

    Call inside the transaction that creates the run, so a refused or failed creation leaves the
    counters as they were. Both are one guarded UPDATE of the tenant's row (`send_admission`);
    only a refusal reads the row again, to say which limit refused.
    """
    send_admission(tenant, now=now)()


def send_admission(tenant: Tenant, *, now: dt.datetime | None = None) -> Callable[[], None]:
    """`admit_run`, sent: the returned function reads the answer and raises LimitExceeded on a
    refusal (call it once or more: it reads once). On PostgreSQL the UPDATE is not waited for
    in between, so inside a pipeline (runs/sql.py `pipelined`) what the caller sends next, the
    run's INSERT, goes in the same round trip; the caller reads the answer before it commits,
    and a refusal rolls the transaction back, INSERT and all. On SQLite the answer is read at
    once (a statement whose RETURNING rows are unread would keep the transaction from
    committing)."""
    now = now or timezone.now()
    check_budgets(tenant, now=now, refusing="new runs")
    cursor = _send_admit(tenant.pk, now)
    answer: list[bool] = []

    def read() -> None:
        if not answer:
            with cursor:
                answer.append(cursor.fetchone() is not None)
        if not answer[0]:
            _refuse(tenant, now)

    if connection.vendor != "postgresql":
        read()
    return read


def _refuse(tenant: Tenant, now: dt.datetime) -> NoReturn:
    """Say which limit refused a run: the rate when its window is full, else the queue."""
    row = Tenant.objects.values(
        "runs_per_minute", "rate_window_start", "rate_window_count", "max_queued_runs"
    ).get(pk=tenant.pk)
    started, per_minute = row["rate_window_start"], row["runs_per_minute"]
    if (
        per_minute is not None
        and started is not None
        and started > now - RATE_WINDOW  # the window is open
        and row["rate_window_count"] >= per_minute
    ):
        wait = (started + RATE_WINDOW - now).total_seconds()
        raise LimitExceeded(
            "runs_per_minute",
            f"Tenant {tenant.slug} may start {per_minute} runs per minute.",
            retry_after=max(1, math.ceil(wait)),
            details={"cap": per_minute},
        )
    raise LimitExceeded(
        "max_queued_runs",
        f"Tenant {tenant.slug} already has {row['max_queued_runs']} queued runs "
        "(max_queued_runs); retry when some have started.",
        retry_after=5,
        details={"cap": row["max_queued_runs"]},
    )


def _send_admit(tenant_id: int, now: dt.datetime) -> Any:
    """One queue slot and one rate token, in one guarded UPDATE: the rate window restarts
    (count 1) for whoever first finds it expired, else counts on while under
    `runs_per_minute` (no limit when that is NULL); `queued_count` goes up while under
    `max_queued_runs`. Returns its cursor, unread: a row when admitted; no row when either
    limit refuses, and then nothing changed."""
    q = connection.ops.quote_name
    field = cast(Field, Tenant._meta.get_field("rate_window_start"))
    at, cutoff = (field.get_db_prep_save(t, connection) for t in (now, now - RATE_WINDOW))
    start, count, per_minute = q("rate_window_start"), q("rate_window_count"), q("runs_per_minute")
    expired = f"({start} IS NULL OR {start} <= %s)"
    cursor = connection.cursor()
    try:
        cursor.execute(
            f"UPDATE {q(Tenant._meta.db_table)} SET "  # noqa: S608 - names from model meta
            f"{start} = CASE WHEN {per_minute} IS NULL THEN {start} "
            f"WHEN {expired} THEN %s ELSE {start} END, "
            f"{count} = CASE WHEN {per_minute} IS NULL THEN {count} "
            f"WHEN {expired} THEN 1 ELSE {count} + 1 END, "
            f"{q('queued_count')} = {q('queued_count')} + 1 "
            f"WHERE {q('id')} = %s AND {q('queued_count')} < {q('max_queued_runs')} "
            f"AND ({per_minute} IS NULL OR {expired} OR {count} < {per_minute}) "
            "RETURNING 1",
            [cutoff, at, cutoff, tenant_id, cutoff],
        )
    except BaseException:
        cursor.close()
        raise
    return cursor


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
