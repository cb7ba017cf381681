"""The cluster-wide cap on runs in flight: the gate every dispatcher passes, and the qcluster
heartbeats that give the default capacity. Per-tenant slots are in tenants/limits/; this
caps their sum, whichever machine dispatches.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
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
    """How many more runs may be in flight cluster-wide (see `send_dispatch_gate`)."""
    return send_dispatch_gate(capacity=capacity, fallback=fallback, wait=wait)()


def send_dispatch_gate(
    *, capacity: int | None, fallback: int, wait: bool = True
) -> Callable[[], int | None]:
    """Enter the gate; the returned function says how many more runs may be in flight
    cluster-wide: the capacity (`capacity`, or when None the workers of the clusters seen
    lately, or `fallback` when none is) minus the runs holding a slot.

    Call first in the transaction that then takes the slot: the upsert of the gate's row
    holds it until that transaction ends, so dispatchers on every machine check and take one
    after another, and each reads the slots taken before it (READ COMMITTED reads per
    statement; a SQLite writer holds the database). Releases need not pass the gate: they
    only make room. The upsert (it makes the row on a new or flushed database) and one
    SELECT, both on the primary key or small tables, are sent before either is read: in a
    pipeline (runs/sql.py `pipelined`) they and whatever the caller sends before reading
    share one round trip. The server still runs them in order, so the SELECT reads after the
    gate is held.

    With `wait=False`, a gate another dispatcher holds right now reads None at once, on
    PostgreSQL (where the row lock is then taken by a SELECT ... FOR UPDATE SKIP LOCKED); a
    SQLite writer holds the whole database anyway.
    """
    q = connection.ops.quote_name
    gate_table, turns = q(DispatchGate._meta.db_table), q("turns")
    running = (
        f"SELECT COALESCE(SUM({q('running_count')}), 0) "  # noqa: S608 - names from model meta
        f"FROM {q(Tenant._meta.db_table)}"
    )
    skip_locked = not wait and connection.vendor == "postgresql"
    gate = connection.cursor()
    room = connection.cursor()
    try:
        if skip_locked:
            row_is = f"FROM {gate_table} WHERE {q('id')} = %s"
            gate.execute(
                f"SELECT (SELECT true {row_is} FOR UPDATE SKIP LOCKED), EXISTS (SELECT 1 {row_is})",  # noqa: S608 - names from model meta
                [GATE_ID, GATE_ID],
            )
        else:  # an upsert: a new (or flushed) database gets its row, and it is held
            gate.execute(
                f"INSERT INTO {gate_table} ({q('id')}, {turns}) VALUES (%s, 1) "  # noqa: S608 - names from model meta
                f"ON CONFLICT ({q('id')}) DO UPDATE SET {turns} = {gate_table}.{turns} + 1 "
                "RETURNING true, true",
                [GATE_ID],
            )
        if capacity is not None:
            room.execute(running)
        else:
            room.execute(
                f"SELECT ({running}), (SELECT COALESCE(SUM({q('workers')}), 0) "  # noqa: S608 - names from model meta
                f"FROM {q(WorkerCluster._meta.db_table)} WHERE {q('seen_at')} >= %s)",
                [_seen_since()],
            )
    except BaseException:
        gate.close()
        room.close()
        raise

    def read() -> int | None:
        with gate, room:
            row = room.fetchone()  # waits for both results
            entered, exists = gate.fetchone()
        if not entered and (exists or not _make_gate(gate_table)):
            return None  # another dispatcher is in the gate: it, or the next one, goes on
        if capacity is not None:
            return capacity - int(row[0])
        in_flight, registered = row
        return (int(registered) or fallback) - int(in_flight)

    return read


def _make_gate(gate_table: str) -> bool:
    """The gate's row, on a new (or flushed) database, where SKIP LOCKED found none: True
    when this transaction made it (and so holds it). Nobody can have held the gate since the
    room was read (they would have made the row first, and this INSERT would find it), so
    that reading stands. False when the row is there, held by another dispatcher."""
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {gate_table} ({q('id')}, {q('turns')}) VALUES (%s, 1) "  # noqa: S608 - names from model meta
            f"ON CONFLICT DO NOTHING RETURNING 1",
            [GATE_ID],
        )
        return cursor.fetchone() is not None


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
