"""Starting and reading runs over the API: shapes, idempotency, admission, threads, forks."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from runs.models import Checkpoint, Run
from tenants.models import Role, Tenant
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import RUN_KEYS, Api, error_of, key_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(tenant: Tenant, make_graph: Any) -> Api:
    make_graph(tenant, chain_spec())
    make_graph(tenant, approval_spec())
    return key_client(tenant, Role.MEMBER)


def test_start_run_returns_201_with_the_design_shape(alice: Api, queue: InlineQueue) -> None:
    response = alice.post(
        "/runs", {"graph": "chain", "input": {"count": 10}, "metadata": {"customer": "acme"}}
    )
    assert response.status_code == 201
    run = response.json()
    assert set(run) == RUN_KEYS
    assert run["status"] == "queued" and run["graph"] == "chain" and run["version"] == 1
    assert uuid.UUID(run["id"]) == Run.objects.get().public_id
    assert run["input"] == {"count": 10} and run["metadata"] == {"customer": "acme"}
    assert run["error"] is None and run["waiting_for"] is None and run["thread_id"] is None
    assert run["usage"] == {"steps": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}

    queue.drain()
    done = alice.get(f"/runs/{run['id']}").json()
    assert done["status"] == "succeeded"
    assert done["state"]["count"] == 13
    assert done["usage"]["steps"] >= 3
    assert done["started_at"] and done["finished_at"]


def test_waiting_run_says_what_it_waits_for(alice: Api, queue: InlineQueue) -> None:
    run = alice.post("/runs", {"graph": "approve"}).json()
    queue.drain()
    body = alice.get(f"/runs/{run['id']}").json()
    assert body["status"] == "waiting"
    assert body["waiting_for"]["kind"] == "approval"
    assert body["waiting_for"]["id"] == "gate@1"


def test_failed_run_has_an_error_with_code_and_message(
    tenant: Tenant, alice: Api, make_graph: Any, queue: InlineQueue
) -> None:
    spec = chain_spec(name="broken", n=1)
    spec["nodes"]["n0"] = {"kind": "transform", "set": {"count": "state.count / 0"}}
    make_graph(tenant, spec)
    run = alice.post("/runs", {"graph": "broken"}).json()
    queue.drain()
    body = alice.get(f"/runs/{run['id']}").json()
    assert body["status"] == "failed"
    assert body["error"]["code"] and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)


def test_idempotency_key_returns_the_same_run_and_refuses_another_body(
    alice: Api, queue: InlineQueue
) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = alice.post("/runs", {"graph": "chain", "input": {"count": 1}}, headers=key)
    again = alice.post("/runs", {"graph": "chain", "input": {"count": 1}}, headers=key)
    third = alice.post("/runs", {"graph": "chain", "input": {"count": 1}}, headers=key)
    assert first.status_code == 201
    assert again.status_code == third.status_code == 200
    assert again.json()["id"] == third.json()["id"] == first.json()["id"]

    other = alice.post("/runs", {"graph": "chain", "input": {"count": 2}}, headers=key)
    assert other.status_code == 409
    error = error_of(other)
    assert error["code"] == "idempotency_key_reused"
    assert error["details"]["run_id"] == first.json()["id"]
    assert Run.objects.count() == 1

    # Without the header every request starts a run.
    alice.post("/runs", {"graph": "chain", "input": {"count": 1}})
    assert Run.objects.count() == 2


def test_concurrent_requests_with_one_idempotency_key_start_one_run(
    tenant: Tenant, alice: Api, queue: InlineQueue
) -> None:
    barrier = threading.Barrier(4)
    responses: list[Any] = []

    def post() -> None:
        try:
            client = Api(Client(), alice.headers)
            barrier.wait()
            responses.append(
                client.post("/runs", {"graph": "chain"}, headers={"Idempotency-Key": "once"})
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {r.status_code for r in responses} <= {200, 201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert Run.objects.count() == 1


def test_idempotency_keys_are_per_tenant(
    alice: Api, other_tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    make_graph(other_tenant, chain_spec())
    bob = key_client(other_tenant)
    key = {"Idempotency-Key": "same-key"}
    a = alice.post("/runs", {"graph": "chain"}, headers=key)
    b = bob.post("/runs", {"graph": "chain", "input": {"count": 5}}, headers=key)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_input_is_checked_against_the_graph_schema_naming_the_field(
    tenant: Tenant, alice: Api, make_graph: Any, queue: InlineQueue
) -> None:
    schema = {"type": "object", "required": ["text"]}
    make_graph(tenant, chain_spec(name="strict", input_schema=schema))
    response = alice.post("/runs", {"graph": "strict", "input": {}})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert "text" in error["message"]
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"graph": "chain", "input": [1, 2]}, "input"),
        ({"graph": "chain", "multitask_strategy": "shove"}, "multitask_strategy"),
        ({"graph": "chain", "thread_id": "not-a-uuid"}, "thread_id"),
        ({"graph": "chain", "version": 0}, "version"),
        ({"input": {}}, "graph"),
        ({"graph": "chain", "inputs": {}}, "inputs"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(
    alice: Api, queue: InlineQueue, body: dict[str, Any], field: str
) -> None:
    response = alice.post("/runs", body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert field in [p["where"] for p in error["details"]["problems"]]
    assert field in error["message"]


def test_unknown_graph_version_thread_or_checkpoint_is_404(alice: Api, queue: InlineQueue) -> None:
    missing = str(uuid.uuid4())
    for body in (
        {"graph": "nope"},
        {"graph": "chain", "version": 7},
        {"graph": "chain", "thread_id": missing},
        {"graph": "chain", "from_checkpoint": missing},
    ):
        response = alice.post("/runs", body)
        assert response.status_code == 404, body
        assert error_of(response)["code"] == "not_found"


def test_input_over_max_input_bytes_is_413(alice: Api, queue: InlineQueue) -> None:
    big = {"text": "x" * (256 * 1024)}
    response = alice.post("/runs", {"graph": "chain", "input": big})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "payload_too_large"
    assert error["details"]["field"] == "input"
    assert error["details"]["limit_bytes"] == 256 * 1024
    assert not Run.objects.exists()


def test_body_over_djangos_upload_limit_is_413_too(alice: Api, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = alice.post("/runs", {"graph": "chain", "input": {"text": "x" * 2000}})
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_admission_limit_is_429_with_retry_after(
    tenant: Tenant, alice: Api, queue: InlineQueue
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=1)
    assert alice.post("/runs", {"graph": "chain"}).status_code == 201
    refused = alice.post("/runs", {"graph": "chain"})
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    error = error_of(refused)
    assert error["code"] == "limit_exceeded.max_queued_runs"
    assert error["details"]["limit"] == "max_queued_runs"
    assert error["details"]["retry_after"] == int(refused["Retry-After"])


def test_rate_limit_is_429_with_retry_after(tenant: Tenant, alice: Api, queue: InlineQueue) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(runs_per_minute=1)
    assert alice.post("/runs", {"graph": "chain"}).status_code == 201
    refused = alice.post("/runs", {"graph": "chain"})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert error_of(refused)["code"] == "limit_exceeded.runs_per_minute"


def test_busy_thread_rejects_or_enqueues_by_strategy(alice: Api, queue: InlineQueue) -> None:
    thread = alice.post("/threads", {"metadata": {"user": "u1"}}).json()
    first = alice.post("/runs", {"graph": "approve", "thread_id": thread["id"]})
    assert first.status_code == 201 and first.json()["thread_id"] == thread["id"]
    queue.drain()

    busy = alice.post("/runs", {"graph": "chain", "thread_id": thread["id"]})
    assert busy.status_code == 409
    assert error_of(busy)["code"] == "thread_busy"

    queued = alice.post(
        "/runs", {"graph": "chain", "thread_id": thread["id"], "multitask_strategy": "enqueue"}
    )
    assert queued.status_code == 201

    interrupting = alice.post(
        "/runs",
        {"graph": "chain", "thread_id": thread["id"], "multitask_strategy": "interrupt"},
    )
    assert interrupting.status_code == 201
    assert alice.get(f"/runs/{first.json()['id']}").json()["status"] == "cancelled"


def test_fork_from_a_checkpoint_of_a_thread(alice: Api, queue: InlineQueue) -> None:
    thread = alice.post("/threads", {}).json()
    run = alice.post("/runs", {"graph": "chain", "thread_id": thread["id"]}).json()
    queue.drain()
    checkpoints = alice.get(f"/threads/{thread['id']}/checkpoints").json()["items"]
    assert checkpoints, "each step leaves a checkpoint"
    second = next(c for c in checkpoints if c["step_index"] == 1)
    assert second["run_id"] == run["id"]
    fork = alice.post(
        "/runs",
        {"graph": "chain", "thread_id": thread["id"], "from_checkpoint": second["id"]},
    )
    assert fork.status_code == 201
    assert fork.json()["metadata"]["forked_from"] == second["id"]
    queue.drain()
    assert alice.get(f"/runs/{fork.json()['id']}").json()["state"]["count"] == 3


def test_fork_across_graph_versions_is_a_clear_409(
    tenant: Tenant, alice: Api, make_graph: Any, queue: InlineQueue
) -> None:
    alice.post("/runs", {"graph": "chain"})
    queue.drain()
    make_graph(tenant, chain_spec(n=2))  # version 2
    checkpoint = Checkpoint.objects.first()
    assert checkpoint is not None
    response = alice.post(
        "/runs", {"graph": "chain", "version": 2, "from_checkpoint": str(checkpoint.public_id)}
    )
    assert response.status_code == 409
    assert error_of(response)["code"] == "checkpoint_version_mismatch"


def test_pre_run_hook_refusal_is_403(
    alice: Api, queue: InlineQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs import hooks

    monkeypatch.setattr(hooks, "pre_run_hooks", [lambda tenant, request: "frozen"])
    response = alice.post("/runs", {"graph": "chain"})
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "blocked_by_hook" and error["message"] == "frozen"


def test_get_run_by_a_malformed_or_unknown_id(alice: Api) -> None:
    assert alice.get(f"/runs/{uuid.uuid4()}").status_code == 404
    response = alice.get("/runs/12")
    assert response.status_code == 422
    assert error_of(response)["details"]["problems"][0]["where"] == "run_id"
