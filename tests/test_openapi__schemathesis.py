"""Property-based tests of the whole API from its own OpenAPI document (schemathesis).

The document is loaded from /api/v1/openapi.json through the WSGI app in-process. Every
operation gets generated requests, valid and invalid, with a fixed seed (derandomized) and a
bounded number of examples; each response must not be a 5xx and must match the document:
a declared status code, content type and body schema. Half of the generated ids are replaced
by real ones, so operations also reach their success paths, not only 404s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from runs import dispatch
from runs.api import live
from runs.models import Artifact, Checkpoint
from runs.services import create_graph_version
from tenants.models import Role, Tenant
from tenants.services import create_api_key
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import key_client
from webhooks.services import create_subscription

OPENAPI_URL = "/api/v1/openapi.json"
WEBHOOK_URL = "http://127.0.0.1:9/hook"  # allowed for the seeded tenant; never called here
MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_wsgi(OPENAPI_URL, application)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True
)

# Status codes seen per operation, to check that the run reached success paths as well.
STATUSES: dict[str, set[int]] = {}

# Ids of real objects, filled per test by the `seeded` fixture and read by the hook below.
REAL: dict[str, str] = {}


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    real = {name: REAL[name] for name in (path_parameters or {}) if name in REAL}
    if not real:
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, **real}])


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    # Random graph names only find 404s; half the generated runs start a real graph instead.
    operation = context.operation
    if operation is not None and operation.path.startswith("/api/v1/crons"):
        return _cron_body(operation.method.upper(), body)
    if operation is None or not isinstance(body, dict):
        return st.just(body)
    if operation.path.startswith("/api/v1/webhooks") and "url" in body:
        # Random URLs are refused by the tenant's allow-list; half reach the seeded receiver.
        return st.sampled_from([body, {**body, "url": WEBHOOK_URL}])
    if operation.path != "/api/v1/runs":
        return st.just(body)
    skip = ("thread_id", "from_checkpoint", "webhook")
    real = {k: v for k, v in body.items() if k not in skip}
    return st.sampled_from([body, {**real, "graph": "chain", "version": 1}])


def _cron_body(method: str, body: Any) -> st.SearchStrategy[Any]:
    """Random cron expressions are nearly all 422s: half the schedules use a real one."""
    if not isinstance(body, dict):
        return st.just(body)
    if method == "POST":
        real = {k: v for k, v in body.items() if k not in ("thread_id", "version", "input")}
        return st.sampled_from(
            [body, {**real, "graph": "chain", "schedule": "*/5 * * * *", "timezone": "UTC"}]
        )
    return st.sampled_from([body, {"enabled": bool(body.get("enabled"))}])


@pytest.fixture
def seeded(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path
) -> dict[str, str]:
    """A tenant with graphs, a thread, a finished run with an artifact, a waiting run."""
    settings.MEDIA_ROOT = tmp_path
    queue = InlineQueue()
    monkeypatch.setattr(dispatch, "enqueue_run", queue.put)
    spec = chain_spec()
    spec["nodes"]["n0"]["artifacts"] = [{"name": "a.txt", "text": "hi"}]
    create_graph_version(tenant, spec)
    create_graph_version(tenant, approval_spec())
    member = key_client(tenant, Role.MEMBER)
    thread = member.post("/threads", {}).json()["id"]
    member.post("/runs", {"graph": "chain", "thread_id": thread})
    queue.drain()
    waiting = member.post("/runs", {"graph": "approve"}).json()["id"]
    queue.drain()
    cron = member.post("/crons", {"graph": "chain", "schedule": "@daily"}).json()["id"]
    tenant.http_allowed_hosts = ["127.0.0.1"]
    tenant.http_allow_private = True
    tenant.save(update_fields=["http_allowed_hosts", "http_allow_private"])
    webhook = create_subscription(tenant, url=WEBHOOK_URL)
    REAL.clear()
    REAL.update(
        cron_id=cron,
        webhook_id=str(webhook.public_id),
        run_id=waiting,
        thread_id=thread,
        artifact_id=str(Artifact.objects.get().public_id),
        name="approve",
        version="1",
        approval_id="gate@1",
    )
    assert Checkpoint.objects.exists()
    _, raw = create_api_key(tenant, role=Role.OWNER)
    return {"Authorization": f"Bearer {raw}"}


@pytest.mark.django_db(transaction=True)
# Under WSGI, Django drains the async SSE generator synchronously and says so; ASGI streams.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(
    case: schemathesis.Case, seeded: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long polls would otherwise hold a generated request for up to a minute.
    monkeypatch.setattr(live, "WAIT_CAP_SECONDS", 0.2)
    monkeypatch.setattr(live, "STREAM_MAX_SECONDS", 0.2)
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.05)
    response = case.call_and_validate(headers=seeded, checks=CHECKS)
    assert response.status_code != 401, "generated requests must be authenticated"
    if case.method.upper() == case.operation.method.upper():
        label = f"{case.operation.method.upper()} {case.operation.path}"
        STATUSES.setdefault(label, set()).add(response.status_code)


def test_every_operation_succeeded_at_least_once() -> None:
    """Runs after the property test (file order): generated requests reached real objects,
    answered with success or, where the seeded data allows no success, a domain conflict."""
    if not STATUSES:
        pytest.skip("the property test did not run in this session")
    operations = {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method in item
    }
    assert set(STATUSES) == operations
    failing = {
        op: codes for op, codes in STATUSES.items() if not any(c < 300 or c == 409 for c in codes)
    }
    assert not failing, failing


def test_openapi_document_is_valid_openapi() -> None:
    schema.validate()  # raises on any violation of the OpenAPI 3.1 meta-schema
    assert schema.raw_schema["openapi"].startswith("3.1")
