"""runs/guarded_writes.py: a step's rows written at once (one statement on PostgreSQL, one
short transaction on SQLite) are the rows the ORM would write, all or nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.engine import NodeContext, register_function
from runs.engine.functions import registry
from runs.guarded_writes import update_then_insert
from runs.models import Checkpoint, Event, Run, Step
from runs.services import claim_run, create_run
from runs.services import steps as steps_module
from runs.services.execute import Segment
from runs.services.steps import ledger_upserts
from runs.status import RunStatus
from tenants import limits
from tenants.models import Tenant, UsageDay, UsageModelDay
from tests.runs.conftest import InlineQueue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def add_one() -> Iterator[None]:
    @register_function("gw_add_one", replace=True)
    def add(state: dict, ctx: NodeContext) -> dict:
        return {"x": state["x"] + 1, "log": f"attempt {ctx.attempt}"}

    yield
    registry.unregister("gw_add_one")


def functions_spec(n: int = 4) -> dict[str, Any]:
    """A chain of effectful steps: each commits on its own (no pure batching)."""
    names = [f"f{i}" for i in range(n)]
    order = [*names, "done"]
    return {
        "name": "effects",
        "state": {"x": {"default": 0}, "log": {"reducer": "append", "default": []}},
        "start": "f0",
        "nodes": {
            **{k: {"kind": "function", "function": "gw_add_one"} for k in names},
            "done": {"kind": "end"},
        },
        "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
    }


def ledger(tenant: Tenant) -> dict[int, int]:
    return dict(
        UsageDay.objects.filter(tenant=tenant).values_list("shard", "steps").order_by("shard")
    )


def step_write(run: Run, *, where: dict[str, Any], model: str = "m1") -> Any:
    now = timezone.now()
    upserts = ledger_upserts(
        run.tenant_id,
        steps=1,
        tokens_in=3,
        cost_usd=Decimal("0.000125"),
        by_model={model: {"calls": 1, "tokens_in": 3, "cost_usd": 0.000125}},
        shard=2,
    )
    return update_then_insert(
        Run,
        run.pk,
        where=where,
        sets={"state": {"x": 1, "none": None}, "steps": run.steps + 1, "heartbeat_at": now},
        counter="last_seq",
        numbered=(
            Event,
            [
                {"run": run.pk, "tenant": run.tenant_id, "type": t, "data": d, "created_at": now}
                for t, d in (("step.started", {"index": 1}), ("step.completed", {"v": [None]}))
            ],
            "seq",
        ),
        inserts=[
            (
                Step,
                [
                    {
                        "run": run.pk,
                        "index": 1,
                        "node": "n0",
                        "status": "completed",
                        "attempt": 1,
                        "started_at": now - dt.timedelta(seconds=1),
                        "finished_at": now,
                        "duration_ms": 1000,
                        "usage": {"tokens_in": 3},
                        "update": {"x": 1},
                        "error": None,
                        "epoch": run.epoch,
                    }
                ],
            ),
            (
                Checkpoint,
                [
                    {
                        "public_id": uuid.uuid4(),
                        "run": run.pk,
                        "thread": None,
                        "step_index": 1,
                        "state": {"x": 1, "é": "ünï"},
                        "base_step": None,
                        "updates": None,
                        "position": {"node": "n1"},
                        "created_at": now,
                    }
                ],
            ),
        ],
        upserts=upserts,
    )


def test_every_row_is_written_and_the_events_numbered_from_the_run_counter(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, functions_spec())
    run = create_run(tenant, graph="effects")
    before = Run.objects.get(pk=run.pk)
    numbered = step_write(before, where={"epoch": before.epoch, "status": RunStatus.QUEUED})

    after = Run.objects.get(pk=run.pk)
    assert after.last_seq == before.last_seq + 2 and after.steps == before.steps + 1
    assert after.state == {"x": 1, "none": None}
    events = list(Event.objects.filter(run=run, seq__gt=before.last_seq).order_by("seq"))
    assert numbered == [(e.pk, e.seq) for e in events]
    assert [(e.seq, e.type, e.data) for e in events] == [
        (before.last_seq + 1, "step.started", {"index": 1}),
        (before.last_seq + 2, "step.completed", {"v": [None]}),
    ]
    step = Step.objects.get(run=run, index=1)
    assert (step.usage, step.update, step.error, step.duration_ms) == (
        {"tokens_in": 3},
        {"x": 1},
        None,  # None in a JSONField is SQL NULL, as the ORM writes it
        1000,
    )
    assert step.finished_at - step.started_at == dt.timedelta(seconds=1)
    cp = Checkpoint.objects.get(run=run, step_index=1)
    assert (cp.state, cp.updates, cp.position) == ({"x": 1, "é": "ünï"}, None, {"node": "n1"})
    day = UsageDay.objects.get(tenant=tenant, shard=2)
    assert (day.steps, day.tokens_in, day.cost_usd) == (1, 3, Decimal("0.000125"))
    assert UsageModelDay.objects.get(tenant=tenant, model="m1").calls == 1


def test_a_guard_that_no_longer_matches_writes_nothing(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, functions_spec())
    run = Run.objects.get(pk=create_run(tenant, graph="effects").pk)
    assert step_write(run, where={"epoch": run.epoch + 1}) is None
    after = Run.objects.get(pk=run.pk)
    assert (after.last_seq, after.steps, after.state) == (run.last_seq, run.steps, run.state)
    assert not Step.objects.filter(run=run).exists()
    assert not Checkpoint.objects.filter(run=run, step_index=1).exists()
    assert Event.objects.filter(run=run).count() == run.last_seq
    assert not UsageModelDay.objects.filter(tenant=tenant).exists()
    assert ledger(tenant) == {limits.usage_shard(run.pk): 0}  # only create's own row


def test_the_ledger_rows_are_added_to(tenant: Tenant, make_graph: Any, queue: InlineQueue) -> None:
    make_graph(tenant, functions_spec())
    run = Run.objects.get(pk=create_run(tenant, graph="effects").pk)
    step_write(run, where={"epoch": run.epoch})
    run.refresh_from_db()
    # The same step index again would break uniq_step_index: a second step instead.
    Step.objects.filter(run=run).update(index=7)
    Checkpoint.objects.filter(run=run, step_index=1).update(step_index=7)
    step_write(run, where={"epoch": run.epoch}, model="m2")
    day = UsageDay.objects.get(tenant=tenant, shard=2)
    assert (day.steps, day.tokens_in, day.cost_usd) == (2, 6, Decimal("0.000250"))
    assert dict(UsageModelDay.objects.values_list("model", "calls")) == {"m1": 1, "m2": 1}


def test_outside_a_transaction_the_write_is_committed_when_it_returns(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, functions_spec())
    run = Run.objects.get(pk=create_run(tenant, graph="effects").pk)
    assert not connection.in_atomic_block
    step_write(run, where={"epoch": run.epoch})
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM runs_step WHERE run_id = %s", [run.pk])
            assert cursor.fetchone()[0] == 1
    finally:
        other.close()
    assert not connection.connection.in_transaction if connection.vendor == "sqlite" else True


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_on_postgresql_it_is_one_prepared_statement(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, functions_spec())
    run = Run.objects.get(pk=create_run(tenant, graph="effects").pk)
    with CaptureQueriesContext(connection) as logged:
        step_write(run, where={"epoch": run.epoch})
    assert len(logged.captured_queries) == 1  # BEGIN/COMMIT included, were there any
    assert logged.captured_queries[0]["sql"].startswith("WITH r AS (UPDATE")
    # Unlogged (production), it goes to the server prepared, once per connection.
    run.refresh_from_db()
    Step.objects.filter(run=run).update(index=7)
    Checkpoint.objects.filter(run=run, step_index=1).update(step_index=7)
    step_write(run, where={"epoch": run.epoch})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'WITH r AS%%'"
        )
        assert cursor.fetchone()[0] == 1


def test_a_run_of_effectful_steps_commits_each_step_at_once(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step but the last (which ends the run through the ORM) is written at once, and
    the run's rows are what the transaction's way writes: gap-free events, one step row and
    checkpoint per step, the ledger's step count."""
    make_graph(tenant, functions_spec(n=4))
    run = claim_run(create_run(tenant, graph="effects").pk)
    assert run is not None
    at_once: list[int] = []
    real = steps_module.update_then_insert

    def counting(*args: Any, **kwargs: Any) -> Any:
        at_once.append(len(kwargs["inserts"][0][1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(steps_module, "update_then_insert", counting)
    with CaptureQueriesContext(connection) as logged:
        assert Segment(run).execute() == "succeeded"
    assert at_once == [1, 1, 1, 1]  # a step each; the fifth ends the run
    statements = [q["sql"] for q in logged.captured_queries]
    if connection.vendor == "postgresql":
        assert sum(s.startswith("WITH r AS (UPDATE") for s in statements) == 4
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.steps == 5 and run.state["x"] == 4
    assert list(Step.objects.filter(run=run).values_list("index", flat=True)) == [1, 2, 3, 4, 5]
    assert Checkpoint.objects.filter(run=run).count() == 6
    seqs = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, run.last_seq + 1))
    assert sum(ledger(tenant).values()) == 5


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_with_prepared_statements_off_the_statement_runs_unprepared(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    """RUNYARD_DB_PREPARED=off (a PgBouncer that cannot keep them) leaves psycopg without a
    prepare_threshold: the same statement then goes unnamed."""
    make_graph(tenant, functions_spec())
    run = Run.objects.get(pk=create_run(tenant, graph="effects").pk)
    connection.ensure_connection()
    raw = connection.connection
    threshold, raw.prepare_threshold = raw.prepare_threshold, None
    try:
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
        assert step_write(run, where={"epoch": run.epoch}) is not None
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            assert cursor.fetchone()[0] == 0
    finally:
        raw.prepare_threshold = threshold
    assert Step.objects.filter(run=run).count() == 1


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_run_s_creation_inserts_with_prepared_statements(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    """The INSERTs of a run's creation (the run, its audit row, its first event) are prepared
    on the connection, not parsed and planned by the server for every run."""
    make_graph(tenant, functions_spec())
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    create_run(tenant, graph="effects")
    create_run(tenant, graph="effects")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    for table in ("runs_run", "tenants_auditlog", "runs_event"):
        assert sum(s.startswith(f'INSERT INTO "{table}"') for s in prepared) == 1, table
    assert Run.objects.filter(tenant=tenant).count() == 2
