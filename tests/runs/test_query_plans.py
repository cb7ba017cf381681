"""Hot paths stay index-backed with 100,000 runs stored: dispatch, claim, create, the step
commit, the reconciler's scans, the run list (filters, deep cursor), a run's events and steps,
and the live pollers' tails.

Each test runs the real service or selector, captures the SQL it sent, and asks the database
how it would run each statement (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN (FORMAT
JSON)) on a table of 100,000 runs with fresh statistics. A plan that reads every row of
runs_run, runs_event or runs_step fails: its cost would grow with the table. Plans, not
timings: a plan is the same on a loaded machine. Where a seek could still walk far (the
dispatcher's lookup, a deep cursor page, a thread's runs) the test also checks which index
condition it starts from. `PLANS_DEBUG=1` prints every statement with its plan.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs import dispatch, reconcile
from runs.api import run_list
from runs.live import EventTail
from runs.live_frames import FrameTail
from runs.models import LiveFrame, Run
from runs.selectors import (
    Page,
    RunFilters,
    encode_cursor,
    event_page,
    run_page,
    run_values_page,
    step_page,
)
from runs.services import create_graph_version, create_run
from runs.services.claim import claim_next
from runs.tasks import execute_run
from tests.factories import make_tenant
from tests.runs.bigtable import Seeded, analyze, seed
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db

RUNS = 100_000
HOT_TABLES = ("runs_run", "runs_event", "runs_step")
EXPLAINABLE = re.compile(r"^\s*(SELECT|UPDATE|DELETE|INSERT|WITH)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def big(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Seeded]:
    """100,000 runs, written once for the module in a transaction rolled back at its end
    (each test's own writes roll back to a savepoint inside it)."""
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            tenants = [
                make_tenant(
                    f"big-{i}",
                    max_concurrent_runs=10_000,
                    max_queued_runs=1_000_000,
                    runs_per_minute=None,
                )
                for i in range(4)
            ]
            graphs = [create_graph_version(t, chain_spec("chain", 2)) for t in tenants]
            seeded = seed(tenants, graphs, runs=RUNS)
            # Run the deferred foreign-key checks once now: left pending, PostgreSQL would
            # re-run them at every test's teardown (Django checks constraints there).
            connection.check_constraints()
            analyze()
            yield seeded
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


# --- plan reading ------------------------------------------------------------------------------


def _aliases(sql: str) -> set[str]:
    """The names a statement reads the hot tables under (Django aliases subqueries U0...)."""
    names = set(HOT_TABLES)
    for table in HOT_TABLES:
        for alias in re.findall(rf'"{table}"\s+(?:AS\s+)?"?(\w+)"?', sql):
            if alias.upper() not in ("WHERE", "ON", "INNER", "LEFT", "ORDER", "GROUP", "LIMIT"):
                names.add(alias)
    return names


def _sqlite_full_scans(sql: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        details = [row[3] for row in cursor.fetchall()]
    names = _aliases(sql)
    return [d for d in details if (m := re.match(r"SCAN (\w+)", d)) and m.group(1) in names]


def _postgres_full_scans(sql: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        raw = cursor.fetchone()[0]
    plan = json.loads(raw) if isinstance(raw, str) else raw
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in HOT_TABLES:
            found.append(f"Seq Scan on {node['Relation Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def index_conditions(sql: str) -> str:
    """How the statement seeks its indexes, one line per index it uses: SQLite's SEARCH
    details, PostgreSQL's index names with their Index Cond."""
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            return "\n".join(row[3] for row in cursor.fetchall() if "INDEX" in row[3])
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        raw = cursor.fetchone()[0]
    plan = json.loads(raw) if isinstance(raw, str) else raw
    lines: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            lines.append(f"{node['Index Name']} {node.get('Index Cond', '')}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return "\n".join(lines)


def seeks(call: Callable[[], Any], marker: str) -> str:
    """The index seeks of the one statement `call` sends whose SQL contains `marker`."""
    with CaptureQueriesContext(connection) as ctx:
        call()
    (sql,) = {q["sql"] for q in ctx.captured_queries if marker in q["sql"]}
    return index_conditions(sql)


def full_scans(sql: str) -> list[str]:
    if connection.vendor == "postgresql":
        return _postgres_full_scans(sql)
    return _sqlite_full_scans(sql)


def _debug(sql: str) -> None:
    with connection.cursor() as cursor:
        prefix = "EXPLAIN " if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN "
        cursor.execute(prefix + sql)
        print("\n" + sql[:600])
        for row in cursor.fetchall():
            print("   ", row[-1])


def assert_index_backed(call: Callable[[], Any]) -> Any:
    """Run `call`, then EXPLAIN every statement it sent that reads a hot table."""
    with CaptureQueriesContext(connection) as ctx:
        result = call()
    statements = [
        q["sql"]
        for q in ctx.captured_queries
        if EXPLAINABLE.match(q["sql"]) and any(t in q["sql"] for t in HOT_TABLES)
    ]
    assert statements, "the call read no hot table: nothing was checked"
    if os.environ.get("PLANS_DEBUG"):
        for sql in statements:
            _debug(sql)
    bad = {sql: scans for sql in statements if (scans := full_scans(sql))}
    assert not bad, "full scans on a big table:\n" + "\n\n".join(
        f"{scans}\n{sql}" for sql, scans in bad.items()
    )
    return result


# --- the hot paths -----------------------------------------------------------------------------


def test_the_dispatchers_candidate_query_seeks_each_tenants_oldest_queued_run(
    big: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_run", sent.append)
    dispatched = assert_index_backed(lambda: dispatch.dispatch_once(max_runs=3))
    assert dispatched == 3
    # Each tenant's lookup starts at its oldest queued run, not at every queued run.
    plan = seeks(lambda: list(dispatch.candidates()), "max_concurrent_runs")
    assert "run_dispatch_queue" in plan, plan


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_the_prepared_candidate_query_keeps_its_seek(big: Seeded) -> None:
    """Workers send the candidate query prepared (runs/sql.py `fetch_all`): the plan kept for
    it must seek run_dispatch_queue too, which a plan generic in `status = $1` could not."""
    assert not connection.queries_logged  # unobserved: the prepared way, as in production
    for _ in range(7):  # PostgreSQL weighs a generic plan after five custom ones
        dispatch.owed()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%max_concurrent_runs%"],
        )
        (name,) = cursor.fetchone()
        cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}")
        raw = cursor.fetchone()[0]
    plan = json.loads(raw) if isinstance(raw, str) else raw
    indexes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        assert not (node.get("Node Type") == "Seq Scan" and node.get("Relation Name") == "runs_run")
        indexes.append(node.get("Index Name", ""))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    assert "run_dispatch_queue" in indexes, indexes


def test_claim_next_dispatches_and_claims_without_a_scan(big: Seeded) -> None:
    run = assert_index_backed(lambda: claim_next(worker="plans"))
    assert run is not None and run.status == "running"


def test_creating_a_run_reads_no_big_table_whole(big: Seeded) -> None:
    tenant = big.tenants[1]
    run = assert_index_backed(lambda: create_run(tenant, graph="chain", input={}))
    assert run.status == "queued"


def test_creating_a_run_on_a_busy_thread_checks_the_thread_by_index(big: Seeded) -> None:
    tenant = big.tenants[0]
    on_thread = Run.objects.filter(tenant=tenant, thread__isnull=False).first()
    assert on_thread is not None and on_thread.thread is not None
    thread_id = on_thread.thread.public_id
    run = assert_index_backed(
        lambda: create_run(tenant, graph="chain", thread_id=thread_id, multitask_strategy="enqueue")
    )
    assert run.status == "queued"


def test_executing_a_run_claims_and_commits_each_step_by_index(
    big: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_run", sent.append)
    # A worker closes stale connections first; here that would end the module's transaction.
    monkeypatch.setattr("runs.services.execute.close_old_connections", lambda: None)
    tenant = big.tenants[2]
    run = create_run(tenant, graph="chain")
    assert dispatch._take_slot(tenant.pk, run.pk)
    assert_index_backed(lambda: execute_run(run.pk))
    run.refresh_from_db()
    assert run.status == "succeeded" and run.steps >= 2


def test_the_reconcilers_scans_use_indexes(big: Seeded) -> None:
    findings = assert_index_backed(reconcile.candidates)
    assert isinstance(findings, list)


def api_page(tenant: Any, filters: RunFilters, *, cursor: str | None, limit: int) -> Page:
    """The API's list (runs/api/run_list.py): plain values, JSON columns as text."""
    return run_values_page(
        tenant,
        filters,
        cursor=cursor,
        limit=limit,
        fields=run_list.FIELDS,
        expressions=run_list.RAW,
    )


def page_keys(page: Page) -> list[tuple[Any, int]]:
    return [
        (r["created_at"], r["pk"]) if isinstance(r, dict) else (r.created_at, r.pk)
        for r in page.items
    ]


LISTS = {"dashboard": run_page, "api": api_page}


@pytest.mark.parametrize("lister", LISTS)
@pytest.mark.parametrize(
    "filters",
    [
        RunFilters(),
        RunFilters(statuses=["failed"]),
        RunFilters(statuses=["queued", "running"]),
        RunFilters(graph="chain"),
        RunFilters(metadata=[("batch", "3")]),
    ],
    ids=["all", "one-status", "two-statuses", "graph", "metadata"],
)
def test_the_run_list_first_and_deep_pages_are_index_backed(
    big: Seeded, filters: RunFilters, lister: str
) -> None:
    tenant, page_of = big.tenants[0], LISTS[lister]
    first = assert_index_backed(lambda: page_of(tenant, filters, cursor=None, limit=50))
    assert first.items
    # A cursor far down the list: the tenant's runs from 90% of the way back.
    deep = Run.objects.filter(tenant=tenant).order_by("created_at", "pk")[RUNS // 20]
    cursor = encode_cursor(deep.created_at.isoformat(), deep.pk)
    page = assert_index_backed(lambda: page_of(tenant, filters, cursor=cursor, limit=50))
    assert all(key < (deep.created_at, deep.pk) for key in page_keys(page))
    # The deep page starts its index range at the cursor rather than walking up to it.
    plan = seeks(lambda: page_of(tenant, filters, cursor=cursor, limit=50), "LIMIT 51")
    conditions = [line.split("(", 1)[1] for line in plan.splitlines() if "(" in line]
    assert any("created_at" in c for c in conditions), plan


@pytest.mark.parametrize("lister", LISTS)
def test_a_thread_filtered_run_list_is_index_backed(big: Seeded, lister: str) -> None:
    tenant, page_of = big.tenants[0], LISTS[lister]
    run = (
        Run.objects.filter(tenant=tenant, thread__isnull=False)
        .select_related("thread")
        .order_by("-pk")
        .first()
    )
    assert run is not None and run.thread is not None
    filters = RunFilters(thread_id=run.thread.public_id)
    page = assert_index_backed(lambda: page_of(tenant, filters, cursor=None, limit=50))
    assert run.pk in [pk for _, pk in page_keys(page)]
    # Seeks the thread's runs, rather than walking the tenant's until 50 match.
    plan = seeks(lambda: page_of(tenant, filters, cursor=None, limit=50), "LIMIT 51")
    assert "thread_id" in plan, plan


def test_a_runs_events_and_steps_pages_seek_by_run(big: Seeded) -> None:
    run = Run.objects.get(pk=big.run_with_history)
    events = assert_index_backed(lambda: event_page(run, after=2, limit=50))
    assert [e.seq for e in events.items] == [3, 4, 5]
    steps = assert_index_backed(lambda: step_page(run, cursor=None, limit=2))
    assert [s.index for s in steps.items] == [1, 2] and steps.next_cursor
    rest = assert_index_backed(lambda: step_page(run, cursor=steps.next_cursor, limit=2))
    assert [s.index for s in rest.items] == [3]


def test_the_event_pollers_tail_reads_by_primary_key(big: Seeded) -> None:
    tail = EventTail()
    tail.start()
    assert tail.last_id is not None
    tail.last_id -= 3
    rows = assert_index_backed(tail.fetch)
    assert len(rows) == 3


def test_the_live_frame_pollers_tail_reads_by_primary_key(big: Seeded) -> None:
    # A busy embedded setup: thousands of frames not yet pruned.
    now = timezone.now()
    LiveFrame.objects.bulk_create(
        [LiveFrame(group=f"run.{i % 50}", payload="{}", created_at=now) for i in range(5000)]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {LiveFrame._meta.db_table}")
    tail = FrameTail()
    tail.start()
    assert tail.last_id is not None
    tail.last_id -= 3
    with CaptureQueriesContext(connection) as ctx:
        rows = tail.fetch()
    assert len(rows) == 3
    (query,) = ctx.captured_queries
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (FORMAT JSON) {query['sql']}")
            assert "Seq Scan" not in json.dumps(cursor.fetchone()[0])
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}")
            details = [row[3] for row in cursor.fetchall()]
            assert not [d for d in details if d.startswith("SCAN runs_liveframe")], details
