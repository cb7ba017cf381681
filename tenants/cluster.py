"""The cluster-wide cap on runs in flight: the gate every dispatcher passes, and the qcluster
heartbeats that give the default capacity. Per-tenant slots are in tenants/limits/; this
caps their sum, whichever machine dispatches.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from django.db import connection
from django.db.models import Field, Sum
from django.utils import timezone

from tenants.models import DispatchGate, Tenant, WorkerCluster

GATE_ID = 1
# A cluster counts toward the default capacity while its heartbeat is this fresh (its worker
# processes beat every 10 s, runs/workers.py); rows silent for a day are deleted.
CLUSTER_SEEN_WITHIN = dt.timedelta(seconds=30)
CLUSTER_FORGOTTEN_AFTER = dt.timedelta(days=1)


def enter_dispatch_gate(*, capacity: int | None, fallback: int, wait: bool = True) -> int | None:
    """How many more runs may be in flight cluster-wide: the capacity (`capacity`, or when
    None the workers of the clusters seen lately, or `fallback` when none is) minus the runs
    holding a slot.

    Call first in the transaction that then takes the slot: the guarded UPDATE of the gate row
    holds it until that transaction ends, so dispatchers on every machine check and take one
    after another, and each reads the slots taken before it (READ COMMITTED reads per
    statement; a SQLite writer holds the database). Releases need not pass the gate: they only
    make room. One UPDATE and one SELECT, both on the primary key or small tables.

    With `wait=False`, a gate another dispatcher holds right now gives None at once, on
    PostgreSQL (where the row lock is then taken by that one SELECT ... FOR UPDATE); a SQLite
    writer holds the whole database anyway.
    """
    q = connection.ops.quote_name
    gate_sql = (
        f"UPDATE {q(DispatchGate._meta.db_table)} SET {q('turns')} = {q('turns')} + 1 "  # noqa: S608 - names from model meta
        f"WHERE {q('id')} = %s"
    )
    running = (
        f"SELECT COALESCE(SUM({q('running_count')}), 0) "  # noqa: S608 - names from model meta
        f"FROM {q(Tenant._meta.db_table)}"
    )
    with connection.cursor() as cursor:
        if not wait and connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT 1 FROM {q(DispatchGate._meta.db_table)} WHERE {q('id')} = %s "  # noqa: S608 - names from model meta
                "FOR UPDATE SKIP LOCKED",
                [GATE_ID],
            )
            locked = cursor.fetchone() is not None
            if not locked and DispatchGate.objects.filter(pk=GATE_ID).exists():
                return None  # another dispatcher is in the gate: it, or the next one, goes on
        else:
            locked = False
        if not locked:
            cursor.execute(gate_sql, [GATE_ID])
        if not locked and cursor.rowcount == 0:  # a new (or flushed) database: make the row
            DispatchGate.objects.bulk_create([DispatchGate(pk=GATE_ID)], ignore_conflicts=True)
            cursor.execute(gate_sql, [GATE_ID])
        if capacity is not None:
            cursor.execute(running)
            return capacity - int(cursor.fetchone()[0])
        cursor.execute(
            f"SELECT ({running}), (SELECT COALESCE(SUM({q('workers')}), 0) "  # noqa: S608 - names from model meta
            f"FROM {q(WorkerCluster._meta.db_table)} WHERE {q('seen_at')} >= %s)",
            [_seen_since()],
        )
        in_flight, registered = cursor.fetchone()
    return (int(registered) or fallback) - int(in_flight)


def _seen_since() -> Any:
    since = timezone.now() - CLUSTER_SEEN_WITHIN
    return cast(Field, WorkerCluster._meta.get_field("seen_at")).get_db_prep_value(
        since, connection
    )


def registered_workers() -> int:
    """The workers of every qcluster seen lately, on any machine (0 when none is)."""
    since = timezone.now() - CLUSTER_SEEN_WITHIN
    total = WorkerCluster.objects.filter(seen_at__gte=since).aggregate(n=Sum("workers"))["n"]
    return int(total or 0)


def register_workers(name: str, workers: int, *, now: dt.datetime | None = None) -> None:
    """A qcluster's heartbeat: one upsert of its row."""
    WorkerCluster.objects.bulk_create(
        [WorkerCluster(name=name, workers=workers, seen_at=now or timezone.now())],
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=["workers", "seen_at"],
    )


def forget_stopped_clusters(*, now: dt.datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - CLUSTER_FORGOTTEN_AFTER
    return WorkerCluster.objects.filter(seen_at__lt=cutoff).delete()[0]
