"""Forks of a final checkpoint end at once; no run ever sits running with nothing to do."""

from __future__ import annotations

from typing import Any

import pytest

from runs.models import Checkpoint, Event, Run, Step
from runs.services import Conflict, create_run
from runs.status import RunStatus
from tenants.models import Role, Tenant
from tests.runs.conftest import InlineQueue, chain_spec
from tests.runs.test_api__helpers import error_of, key_client

pytestmark = pytest.mark.django_db(transaction=True)


def _types(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))


def _final_checkpoint(run: Run) -> Checkpoint:
    return Checkpoint.objects.filter(run=run).order_by("-step_index").first()  # type: ignore[return-value]


def _finished_chain(tenant: Tenant, queue: InlineQueue) -> Run:
    run = create_run(tenant, graph="chain")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    return run


def unrouted_spec() -> dict[str, Any]:
    return {
        "name": "stuck",
        "start": "a",
        "nodes": {"a": {"kind": "transform", "set": {"x": "1"}}, "done": {"kind": "end"}},
        "edges": [{"from": "a", "to": "done", "when": "state.x > 5"}],
    }


def test_fork_of_a_final_checkpoint_succeeds_at_once_with_its_state(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, chain_spec())
    run = _finished_chain(tenant, queue)
    final = _final_checkpoint(run)
    assert final.position["node"] is None
    fork = create_run(tenant, graph="chain", from_checkpoint=str(final.public_id))
    assert queue.drain() == ["succeeded"]
    fork.refresh_from_db()
    assert fork.status == RunStatus.SUCCEEDED and fork.error is None
    assert fork.state == run.state == {"count": 3}
    assert fork.steps == 0 and not Step.objects.filter(run=fork).exists()
    assert fork.finished_at is not None and fork.lease_expires_at is None
    assert _types(fork) == ["run.queued", "run.started", "run.succeeded"]
    tenant.refresh_from_db()
    assert tenant.running_count == 0 and tenant.queued_count == 0
    assert not Run.objects.filter(status=RunStatus.RUNNING).exists()


def test_fork_of_a_final_checkpoint_merges_its_input(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, chain_spec())
    run = _finished_chain(tenant, queue)
    final = _final_checkpoint(run)
    fork = create_run(
        tenant, graph="chain", from_checkpoint=str(final.public_id), input={"count": 42}
    )
    queue.drain()
    fork.refresh_from_db()
    assert fork.status == RunStatus.SUCCEEDED and fork.state == {"count": 42}
    # The fork's own final checkpoint can be forked again.
    again = create_run(
        tenant, graph="chain", from_checkpoint=str(_final_checkpoint(fork).public_id)
    )
    queue.drain()
    again.refresh_from_db()
    assert again.status == RunStatus.SUCCEEDED and again.state == {"count": 42}


def test_fork_where_routing_failed_is_refused_with_a_409(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, unrouted_spec())
    run = create_run(tenant, graph="stuck")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error["code"] == "unrouted"
    dead_end = _final_checkpoint(run)
    assert dead_end.position["node"] is None
    with pytest.raises(Conflict) as info:
        create_run(tenant, graph="stuck", from_checkpoint=str(dead_end.public_id))
    assert info.value.code == "checkpoint_not_resumable"
    assert "unrouted" in info.value.message
    assert Run.objects.count() == 1
    # An earlier checkpoint of the same run still forks (and fails the same way).
    start = Checkpoint.objects.get(run=run, step_index=0)
    create_run(tenant, graph="stuck", from_checkpoint=str(start.public_id))
    assert queue.drain() == ["failed"]


def test_api_forks_of_final_and_dead_end_checkpoints(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, chain_spec())
    make_graph(tenant, unrouted_spec())
    api = key_client(tenant, Role.MEMBER)
    final = _final_checkpoint(_finished_chain(tenant, queue))
    created = api.post("/runs", {"graph": "chain", "from_checkpoint": str(final.public_id)})
    assert created.status_code == 201, created.content
    queue.drain()
    body = api.get(f"/runs/{created.json()['id']}").json()
    assert body["status"] == "succeeded" and body["state"] == {"count": 3}
    stuck = create_run(tenant, graph="stuck")
    queue.drain()
    refused = api.post(
        "/runs", {"graph": "stuck", "from_checkpoint": str(_final_checkpoint(stuck).public_id)}
    )
    assert refused.status_code == 409
    assert error_of(refused)["code"] == "checkpoint_not_resumable"


def test_a_position_at_a_node_the_graph_lacks_fails_the_run(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(tenant, chain_spec())
    run = _finished_chain(tenant, queue)
    cp = Checkpoint.objects.get(run=run, step_index=1)
    Checkpoint.objects.filter(pk=cp.pk).update(position={**cp.position, "node": "gone"})
    fork = create_run(tenant, graph="chain", from_checkpoint=str(cp.public_id))
    assert queue.drain() == ["failed"]
    fork.refresh_from_db()
    assert fork.status == RunStatus.FAILED
    assert fork.error["code"] == "invalid_position" and "gone" in fork.error["message"]
    tenant.refresh_from_db()
    assert tenant.running_count == 0
