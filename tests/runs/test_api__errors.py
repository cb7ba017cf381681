"""The error envelope on every failure path, and the OpenAPI document and docs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client

from runs import selectors
from tenants.models import Role, Tenant
from tests.runs.conftest import InlineQueue, chain_spec
from tests.runs.test_api__helpers import RUN_KEYS, Api, error_of, key_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(tenant: Tenant, make_graph: Any) -> Api:
    make_graph(tenant, chain_spec())
    return key_client(tenant, Role.ADMIN)


@pytest.mark.parametrize(
    "path", ["/runs", "/graphs", "/graphs/validate", "/threads", "/runs/{id}/cancel"]
)
@pytest.mark.parametrize("raw", ["{bad", '{"graph": ', "\x00", "[1,"])
def test_malformed_json_is_400(alice: Api, path: str, raw: str) -> None:
    response = alice.post(path.format(id=uuid.uuid4()), raw=raw)
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"


def test_deeply_nested_json_is_a_client_error(alice: Api) -> None:
    raw = '{"graph": "chain", "input": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    response = alice.post("/runs", raw=raw)
    assert 400 <= response.status_code < 500
    error_of(response)


@pytest.mark.parametrize(
    "path", ["/nope", "/runs/x/y/z", "/", "/v2/runs", "/graphs/a/versions/1/extra"]
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_routes_are_a_json_404(alice: Api, path: str, method: str) -> None:
    response = alice.request(method, path)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert error_of(response)["code"] == "not_found"


def test_unknown_routes_are_404_without_credentials_too(db: Any) -> None:
    response = Client().get("/api/v1/nope")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/runs", {"GET", "POST"}),
        ("PUT", "/graphs", {"GET", "POST"}),
        ("GET", "/runs/{id}/cancel", {"POST"}),
        ("PATCH", "/runs/{id}", {"GET"}),
        ("POST", "/runs/{id}/wait", {"GET"}),
        ("POST", "/usage", {"GET"}),
    ],
)
def test_wrong_method_is_a_json_405_with_allow(
    alice: Api, method: str, path: str, allowed: set[str]
) -> None:
    response = alice.request(method, path.format(id=uuid.uuid4()))
    assert response.status_code == 405
    assert {m.strip() for m in response["Allow"].split(",")} == allowed
    error = error_of(response)
    assert error["code"] == "method_not_allowed"
    assert set(error["details"]["allowed"]) == allowed


def test_validation_errors_name_the_field(alice: Api) -> None:
    response = alice.post("/runs", {"graph": 5, "version": "two"})
    assert response.status_code == 422
    error = error_of(response)
    wheres = {p["where"] for p in error["details"]["problems"]}
    assert {"graph", "version"} <= wheres
    assert "`graph`" in error["message"] and "payload" not in error["message"]


def test_overlong_idempotency_key_is_422(alice: Api) -> None:
    response = alice.post("/runs", {"graph": "chain"}, headers={"Idempotency-Key": "k" * 201})
    assert response.status_code == 422
    assert "`Idempotency-Key` header" in error_of(response)["message"]


def test_an_unexpected_crash_is_a_json_500_without_internals(
    alice: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "run_out", crash)
    response = alice.get(f"/runs/{uuid.uuid4()}")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error"
    assert "secret" not in response.content.decode()


def test_a_busy_database_is_503_with_retry_after(
    alice: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("database is locked")

    monkeypatch.setattr(selectors, "run_out", locked)
    response = alice.get(f"/runs/{uuid.uuid4()}")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert error_of(response)["code"] == "unavailable"


@pytest.mark.django_db(transaction=True)
def test_conflicts_keep_their_code_message_and_details(alice: Api, queue: InlineQueue) -> None:
    run = alice.post("/runs", {"graph": "chain"}).json()
    queue.drain()
    conflict = alice.post(f"/runs/{run['id']}/pause")
    assert conflict.status_code == 409
    assert error_of(conflict) == {
        "code": "run_finished",
        "message": f"Run {run['id']} already ended succeeded; it cannot be paused.",
        "details": {"status": "succeeded"},
    }


# --- the OpenAPI document and the docs ------------------------------------------------------


def test_openapi_document_is_public_and_lists_every_endpoint(db: Any) -> None:
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    paths = {
        f"{method.upper()} {path.removeprefix('/api/v1')}"
        for path, item in doc["paths"].items()
        for method in item
    }
    assert paths == {
        "GET /schemas/graph-spec.json",
        "POST /graphs",
        "GET /graphs",
        "POST /graphs/validate",
        "GET /graphs/{name}",
        "GET /graphs/{name}/versions/{version}",
        "POST /threads",
        "GET /threads/{thread_id}",
        "GET /threads/{thread_id}/checkpoints",
        "POST /runs",
        "GET /runs",
        "GET /runs/{run_id}",
        "GET /runs/{run_id}/wait",
        "POST /runs/{run_id}/cancel",
        "POST /runs/{run_id}/pause",
        "POST /runs/{run_id}/resume",
        "POST /runs/{run_id}/retry",
        "POST /runs/{run_id}/input",
        "POST /runs/{run_id}/guidance",
        "POST /runs/{run_id}/approvals/{approval_id}",
        "GET /runs/{run_id}/steps",
        "GET /runs/{run_id}/events",
        "GET /runs/{run_id}/events/stream",
        "GET /runs/{run_id}/artifacts",
        "GET /artifacts/{artifact_id}/content",
        "GET /usage",
        "DELETE /crons/{cron_id}",
        "DELETE /webhooks/{webhook_id}",
        "GET /crons",
        "GET /crons/{cron_id}",
        "GET /webhooks",
        "GET /webhooks/{webhook_id}",
        "GET /webhooks/{webhook_id}/deliveries",
        "PATCH /crons/{cron_id}",
        "PATCH /webhooks/{webhook_id}",
        "POST /crons",
        "POST /webhooks",
        "POST /webhooks/secret",
        "POST /events",
    }
    for item in doc["paths"].values():
        for operation in item.values():
            assert operation.get("summary"), operation["operationId"]
            if operation["operationId"] == "get_graph_spec_schema":
                continue  # public: editors fetch a spec's `$schema` without credentials
            assert "401" in operation["responses"]
            error = operation["responses"]["401"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorOut"}
    schemes = doc["components"]["securitySchemes"]
    assert set(schemes) == {"ApiKeyAuth", "SessionTenantAuth"}
    run_schema = doc["components"]["schemas"]["RunOut"]
    assert set(run_schema["properties"]) == RUN_KEYS
    assert run_schema["examples"]
    assert doc["components"]["schemas"]["GraphSpec"]["examples"]
    create = doc["paths"]["/api/v1/runs"]["post"]
    assert {"200", "201", "409", "413", "422", "429"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])


def test_docs_page_is_served(db: Any) -> None:
    response = Client().get("/api/v1/docs")
    assert response.status_code == 200
    assert b"openapi.json" in response.content
