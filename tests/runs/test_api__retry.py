"""POST /api/v1/runs/{id}/retry and /resume of an interrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runs.models import Run
from runs.services import create_graph_version, create_run, mark_interrupted
from runs.status import RunStatus
from tenants.models import Role, Tenant
from tests.e2e.control_functions import gated_spec
from tests.runs.conftest import InlineQueue, approval_spec
from tests.runs.test_api__helpers import error_of, key_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def failed(tenant: Tenant, queue: InlineQueue, tmp_path: Path) -> Run:
    gate = tmp_path / "gate"
    gate.write_text("closed")
    create_graph_version(tenant, gated_spec(str(gate)))
    run = create_run(tenant, graph="gated", input={"ticket": "T-1"})
    queue.drain()
    gate.unlink()
    return run


def test_retry_queues_a_failed_run_and_it_succeeds(
    tenant: Tenant, failed: Run, queue: InlineQueue
) -> None:
    api = key_client(tenant)
    response = api.post(f"/runs/{failed.public_id}/retry")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "queued" and body["error"] is None
    queue.drain()
    assert api.get(f"/runs/{failed.public_id}").json()["status"] == "succeeded"
    again = api.post(f"/runs/{failed.public_id}/retry")
    assert again.status_code == 409 and error_of(again)["code"] == "not_retryable"


def test_retry_over_the_queue_limit_is_429(tenant: Tenant, failed: Run) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=0)
    response = key_client(tenant).post(f"/runs/{failed.public_id}/retry")
    assert response.status_code == 429
    assert Run.objects.get(pk=failed.pk).status == RunStatus.FAILED


def test_retry_needs_the_member_role_and_the_tenant(
    tenant: Tenant, other_tenant: Tenant, failed: Run
) -> None:
    viewer = key_client(tenant, role=Role.VIEWER).post(f"/runs/{failed.public_id}/retry")
    assert viewer.status_code == 403
    other = key_client(other_tenant).post(f"/runs/{failed.public_id}/retry")
    assert other.status_code == 404
    assert Run.objects.get(pk=failed.pk).status == RunStatus.FAILED


def test_resume_of_an_interrupted_run_continues_it(tenant: Tenant, queue: InlineQueue) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    mark_interrupted(run, by="op")
    api = key_client(tenant)
    response = api.post(f"/runs/{run.public_id}/resume")
    assert response.status_code == 200 and response.json()["status"] == "queued"
    queue.drain()
    assert api.get(f"/runs/{run.public_id}").json()["status"] == "waiting"
    # Retry does the same for an interrupted run; on a waiting one it is refused.
    refused = api.post(f"/runs/{run.public_id}/retry")
    assert refused.status_code == 409 and error_of(refused)["code"] == "not_retryable"


def test_openapi_documents_retry(tenant: Tenant, member: Any) -> None:
    from django.test import Client

    schema = Client().get("/api/v1/openapi.json").json()
    assert "post" in schema["paths"]["/api/v1/runs/{run_id}/retry"]
