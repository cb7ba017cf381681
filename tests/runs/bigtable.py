"""A big runs table, written fast: raw multi-row inserts of runs, events and steps in the
shapes the services leave behind (mostly ended runs; a few queued, dispatched, running,
waiting, on threads), so query plans and the big-table bench see a realistic spread.

Used by tests/runs/test_query_plans.py and bench/bigtable.py. Values are prepared by the model
fields themselves, so rows read back exactly as the ORM would have written them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from django.core.management.color import no_style
from django.db import connection, models
from django.utils import timezone

from runs.models import Event, Graph, Run, Step, Thread
from runs.status import RunStatus
from tenants.models import Tenant

BATCH = 400


@dataclass
class Seeded:
    tenants: list[Tenant]
    graphs: list[Graph]
    # A run of the first tenant with events and steps (for the per-run pages).
    run_with_history: int
    runs: int
    events: int
    steps: int


def _columns(model: type[models.Model], names: Sequence[str]) -> list[models.Field]:
    return [cast(models.Field, model._meta.get_field(n)) for n in names]


def _insert(
    model: type[models.Model],
    names: Sequence[str],
    rows: Iterator[list[Any]],
    *,
    prepared: bool = False,
) -> int:
    """Multi-row INSERTs of `rows` (prepared by the fields unless `prepared`), BATCH rows a
    statement; returns how many."""
    fields = _columns(model, names)
    q = connection.ops.quote_name
    columns = ", ".join(q(cast(str, f.column)) for f in fields)
    head = f"INSERT INTO {q(model._meta.db_table)} ({columns}) VALUES "  # noqa: S608 - model meta
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    count = 0
    batch: list[Any] = []
    rows_in_batch = 0

    def flush(cursor: Any) -> None:
        cursor.execute(head + ", ".join([one] * rows_in_batch), batch)

    if connection.vendor == "postgresql":
        return _copy(model, fields, rows, prepared=prepared)
    with connection.cursor() as cursor:
        for row in rows:
            if prepared:
                batch.extend(row)
            else:
                batch.extend(
                    f.get_db_prep_save(v, connection) for f, v in zip(fields, row, strict=True)
                )
            rows_in_batch += 1
            if rows_in_batch >= BATCH:
                flush(cursor)
                count += rows_in_batch
                batch, rows_in_batch = [], 0
        if rows_in_batch:
            flush(cursor)
            count += rows_in_batch
    return count


def _copy(
    model: type[models.Model],
    fields: list[models.Field],
    rows: Iterator[list[Any]],
    *,
    prepared: bool,
) -> int:
    """PostgreSQL: COPY, the fastest bulk load (no SQL text built per value)."""
    q = connection.ops.quote_name
    columns = ", ".join(q(cast(str, f.column)) for f in fields)
    sql = f"COPY {q(model._meta.db_table)} ({columns}) FROM STDIN"
    count = 0
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            if not prepared:
                row = [f.get_db_prep_save(v, connection) for f, v in zip(fields, row, strict=True)]
            copy.write_row(row)
            count += 1
    return count


def _prep(name: str, value: Any) -> Any:
    return cast(models.Field, Run._meta.get_field(name)).get_db_prep_save(value, connection)


def _template(tenant: Tenant, graph: Graph) -> dict[str, Any]:
    """Every column of an unsaved run, as the model's defaults give it."""
    run = Run(tenant=tenant, graph=graph, graph_hash=graph.hash)
    return {
        f.attname: getattr(run, f.attname) for f in Run._meta.concrete_fields if not f.primary_key
    }


def seed(
    tenants: list[Tenant], graphs: list[Graph], *, runs: int, history_every: int = 10
) -> Seeded:
    """`runs` runs spread over `tenants` (the first gets half), one graph each; every
    `history_every`-th run gets 3 steps and 5 events. Ids continue after the table's max."""
    now = timezone.now()
    start = (Run.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    threads = Thread.objects.bulk_create([Thread(tenant=t) for t in tenants for _ in range(20)])
    by_tenant = {t.pk: [th.pk for th in threads if th.tenant_id == t.pk] for t in tenants}
    raw_templates = [_template(t, g) for t, g in zip(tenants, graphs, strict=True)]
    names = list(raw_templates[0])
    templates = [{n: _prep(n, v) for n, v in t.items()} for t in raw_templates]
    names_with_id = ["id", *names]
    history: list[tuple[int, int]] = []  # (run pk, tenant pk)

    def tenant_of(i: int) -> int:
        return 0 if i % 2 == 0 else 1 + (i // 2) % (len(tenants) - 1) if len(tenants) > 1 else 0

    def rows() -> Iterator[list[Any]]:
        for i in range(runs):
            pk = start + i
            which = tenant_of(i)
            # Oldest first, a second apart: the newest run is the last inserted.
            created = now - dt.timedelta(seconds=runs - i)
            raw: dict[str, Any] = {
                "public_id": uuid.uuid4(),
                "created_at": created,
                "status": RunStatus.FAILED if i % 7 == 0 else RunStatus.SUCCEEDED,
                "metadata": {"batch": i % 5},
            }
            if i % 50 == 0:
                raw["thread_id"] = by_tenant[tenants[which].pk][i % 20]
            if i % 997 == 0:  # queued, never dispatched: the dispatcher's candidates
                raw["status"] = RunStatus.QUEUED
            elif i % 991 == 0:  # handed to the broker a moment ago, not yet claimed
                raw.update(status=RunStatus.QUEUED, dispatched_at=now)
            elif i % 983 == 0:  # running, its lease fresh
                raw.update(
                    status=RunStatus.RUNNING,
                    lease_expires_at=now + dt.timedelta(minutes=5),
                    dispatched_at=now,
                )
            elif i % 977 == 0:  # waiting on an approval due later
                raw.update(
                    status=RunStatus.WAITING,
                    waiting_for={
                        "kind": "approval",
                        "id": "gate@1",
                        "node": "gate",
                        "default": "reject",
                    },
                    wait_deadline=now + dt.timedelta(hours=1),
                )
            if raw["status"] not in (RunStatus.QUEUED, RunStatus.WAITING):
                raw["started_at"] = created
            ended = raw["status"] in (RunStatus.SUCCEEDED, RunStatus.FAILED)
            if i % history_every == 0 and ended:
                history.append((pk, tenants[which].pk))
                raw.update(last_seq=5, steps=3)
            row = dict(templates[which])
            row.update((n, _prep(n, v)) for n, v in raw.items())
            yield [pk, *(row[n] for n in names)]

    count = _insert(Run, names_with_id, rows(), prepared=True)
    event_names = ["run_id", "tenant_id", "seq", "type", "data", "created_at"]
    events = _insert(
        Event,
        event_names,
        (
            [pk, tenant_pk, seq, "step.completed", {"n": seq}, now]
            for pk, tenant_pk in history
            for seq in range(1, 6)
        ),
    )
    step_names = ["run_id", "index", "node", "status", "attempt", "started_at", "finished_at"]
    step_names += ["duration_ms", "usage", "update", "error", "epoch"]
    steps = _insert(
        Step,
        step_names,
        (
            [pk, index, "n0", "succeeded", 1, now, now, 1, {}, {}, None, 1]
            for pk, _ in history
            for index in range(1, 4)
        ),
    )
    with connection.cursor() as cursor:  # explicit ids: move PostgreSQL's sequences past them
        for sql in connection.ops.sequence_reset_sql(no_style(), [Run, Event, Step, Thread]):
            cursor.execute(sql)
    first = next(pk for pk, tenant_pk in history if tenant_pk == tenants[0].pk)
    return Seeded(tenants, graphs, first, count, events, steps)


def analyze() -> None:
    """Fresh planner statistics, as a live database keeps (autovacuum; `make` runs ANALYZE)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for model in (Run, Event, Step, Thread, Tenant):
                cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
        else:
            cursor.execute("ANALYZE")
