"""runs/sql.py: the hot paths' SQL helpers give what the ORM would."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.forms.models import model_to_dict

from config.queries import fetch_models
from runs.events import Fenced, append_events
from runs.models import Event, Run, Thread
from runs.services import create_run
from runs.sql import guarded_update, insert_rows, pipelined
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue, chain_spec

pytestmark = pytest.mark.django_db


def with_relations(pk: int) -> QuerySet[Run]:
    return Run.objects.select_related("tenant", "graph", "thread").filter(pk=pk)[:1]


def test_fetch_models_builds_what_the_orm_builds(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, chain_spec())
    thread = Thread.objects.create(tenant=tenant, state={"k": [1, "é"]})
    plain = create_run(tenant, graph="chain", input={"a": {"b": 1.5}})
    threaded = create_run(tenant, graph="chain", thread_id=thread.public_id)
    Run.objects.filter(pk=plain.pk).update(cost_usd=Decimal("0.000123"), error={"code": "x"})
    for run in (plain, threaded):
        (got,) = fetch_models(with_relations, run.pk)
        want = with_relations(run.pk).get()
        assert model_to_dict(got) == model_to_dict(want)
        assert got.created_at == want.created_at and got.cost_usd == want.cost_usd
        assert model_to_dict(got.tenant) == model_to_dict(want.tenant)
        assert (got.graph.name, got.graph.spec) == (want.graph.name, want.graph.spec)
        assert (got.thread and model_to_dict(got.thread)) == (
            want.thread and model_to_dict(want.thread)
        )
        assert not got._state.adding
    assert fetch_models(with_relations, 10**9) == []


def test_guarded_update_returns_the_columns_asked_for(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    row = guarded_update(
        Run,
        run.pk,
        where={"thread": None},
        sets={"priority": 5},
        returning=("thread_id", "priority"),
    )
    assert row == (None, 5)  # a NULL column is a value, not a missed guard
    missed = guarded_update(
        Run, run.pk, where={"priority": 1}, sets={"priority": 2}, returning=("id",)
    )
    assert missed is None
    assert guarded_update(Run, run.pk, where={}, sets={"priority": 4}, returning="priority") == 4


@pytest.mark.django_db(transaction=True)
def test_an_error_queued_in_a_pipeline_is_djangos_exception(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    """On PostgreSQL a pipelined INSERT's error arrives at the pipeline's end; it must be the
    IntegrityError (or OperationalError, which retry_transient retries) Django raises."""
    make_graph(tenant, chain_spec())
    run = create_run(tenant, graph="chain")  # its run.queued event is seq 1
    row = {"run": run.pk, "tenant": tenant.pk, "seq": 1, "type": "x", "data": {}}
    with pytest.raises(IntegrityError), transaction.atomic(), pipelined():
        insert_rows(Event, [row], returning=False)
    assert Event.objects.filter(run=run).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_held_append_numbers_from_the_run_and_is_checked_at_the_pipelines_end(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    """`append_events(held=True)` numbers its events from `run.last_seq` without waiting for
    its UPDATE; the UPDATE's result is checked when the pipeline ends. A guard that did not
    match fails there, before the commit: nothing of the transaction is kept."""
    make_graph(tenant, chain_spec())
    run = Run.objects.select_related("tenant").get(pk=create_run(tenant, graph="chain").pk)
    with transaction.atomic(), pipelined():
        append_events(run, [("a", {})], fence={"epoch": run.epoch})  # takes the row
        append_events(run, [("b", {}), ("c", {})], fence={"epoch": run.epoch}, held=True)
        assert run.last_seq == 4  # counted, not read
    assert list(Event.objects.filter(run=run).values_list("seq", "type")) == [
        (1, "run.queued"),
        (2, "a"),
        (3, "b"),
        (4, "c"),
    ]
    assert Run.objects.get(pk=run.pk).last_seq == 4

    with pytest.raises(Fenced), transaction.atomic(), pipelined():
        append_events(run, [("d", {})], fence={"epoch": run.epoch})
        # A guard that cannot match: on PostgreSQL nothing is raised until the pipeline ends.
        append_events(run, [("e", {})], fence={"epoch": run.epoch + 7}, held=True)
    assert Event.objects.filter(run=run).count() == 4
    assert Run.objects.get(pk=run.pk).last_seq == 4
