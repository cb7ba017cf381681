"""A claim is one guarded write of the run, read first and fenced by the epoch it read: on
PostgreSQL one statement committing itself (two round trips with the read)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs import dispatch
from runs.models import Checkpoint, Run
from runs.services import create_graph_version, create_run
from runs.services.claim import claim_run
from runs.status import RunStatus
from tenants.models import Tenant
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def dispatched(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setattr(dispatch, "enqueue_run", lambda pk: None)
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain", input={"count": 2})
    run.refresh_from_db()
    assert run.dispatched_at is not None
    return run


def test_a_first_claim_is_one_update_of_the_run(dispatched: Run) -> None:
    with CaptureQueriesContext(connection) as queries:
        run = claim_run(dispatched.pk, worker="w1")
    assert run is not None
    sql = [q["sql"] for q in queries.captured_queries]
    assert sql[0].startswith("SELECT") and '"spec"' not in sql[0]  # parsed once per process
    if connection.vendor == "postgresql":
        # The read, then one statement: the run's UPDATE, checkpoint 0, the queue slot given
        # back and the run.started event, each depending on the UPDATE's match. No BEGIN.
        assert len(sql) == 2, sql
        assert sql[0].startswith("SELECT") and sql[1].startswith('WITH r AS (UPDATE "runs_run"')
        assert 'INSERT INTO "runs_checkpoint"' in sql[1]
        assert 'UPDATE "tenants_tenant" SET "queued_count" = "queued_count" - 1 FROM r' in sql[1]
        assert 'INSERT INTO "runs_event"' in sql[1]
    else:
        updates = [s for s in sql if s.startswith("UPDATE")]
        assert [u.split(" SET ")[0] for u in updates] == [
            'UPDATE "runs_run"',
            'UPDATE "tenants_tenant"',  # the queue slot given back
        ], updates
        assert sql[1] == "BEGIN IMMEDIATE" and sql[-1] == "COMMIT", sql
    stored = Run.objects.get(pk=dispatched.pk)
    assert (stored.status, stored.lease_owner, stored.epoch, stored.claims) == (
        RunStatus.RUNNING,
        "w1",
        dispatched.epoch + 1,
        1,
    )
    assert not stored.holds_queue_slot and stored.started_at is not None
    assert stored.state == run.state == {"count": 2}
    assert stored.position == run.position == {"node": "n0", "step": 0, "visits": {}}
    assert stored.last_seq == run.last_seq == 2
    assert list(stored.events.values_list("seq", "type")) == [(1, "run.queued"), (2, "run.started")]
    assert Checkpoint.objects.get(run=stored, step_index=0).state == {"count": 2}
    assert Tenant.objects.get(pk=stored.tenant_id).queued_count == 0


def test_a_claim_on_a_stale_read_takes_nothing(dispatched: Run, monkeypatch) -> None:
    """Another worker claims between this one's read and its UPDATE: the epoch fence
    refuses, and nothing of this claim is written."""
    from runs.services import claim as claim_module

    real_write = claim_module.send_update_then_insert

    def racing(*args, **kwargs):
        Run.objects.filter(pk=dispatched.pk).update(epoch=dispatched.epoch + 1)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(claim_module, "send_update_then_insert", racing)
    assert claim_run(dispatched.pk, worker="late") is None
    stored = Run.objects.get(pk=dispatched.pk)
    assert stored.status == RunStatus.QUEUED and stored.lease_owner == "" and stored.last_seq == 1
    assert not Checkpoint.objects.filter(run=stored).exists()
    assert Tenant.objects.get(pk=stored.tenant_id).queued_count == 1


def test_a_graph_version_new_to_the_worker_loads_its_spec_once(dispatched: Run) -> None:
    """The claim's read leaves the spec out; a version this process has not parsed yet is
    loaded by one more query, then parsed specs are reused."""
    from runs.services import graphs

    graphs._SPECS.pop(dispatched.graph.hash, None)
    with CaptureQueriesContext(connection) as queries:
        run = claim_run(dispatched.pk, worker="w1")
    assert run is not None and run.state == {"count": 2}
    spec_reads = [q["sql"] for q in queries.captured_queries if '"spec"' in q["sql"]]
    assert len(spec_reads) == 1 and spec_reads[0].startswith("SELECT"), spec_reads
    assert graphs.spec_for(run.graph).start == "n0"
