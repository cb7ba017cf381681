"""What the OpenAPI document states beyond ninja's defaults (config/openapi.py): the graph spec
schema as the body of the spec operations, cursors as opaque strings, no null parameters,
error responses described, and the links a client follows from a run or a thread."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from runs.schemas import CURSOR_MAX_LENGTH, CURSOR_PATTERN, EXAMPLE_SPEC


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    from config.api import api

    return api.get_openapi_schema()


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        op["operationId"]: op
        for item in doc["paths"].values()
        for op in item.values()
        if isinstance(op, dict)
    }


def test_spec_operations_take_the_generated_graph_spec(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    body = ops["create_graph"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/GraphSpec"}
    validate = ops["validate_graph"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/GraphSpec"} in validate["anyOf"]
    # Every reference inside resolves within the document, and the example is valid.
    registry = Registry().with_resource(
        "urn:doc",
        Resource.from_contents({**doc, "$schema": "https://json-schema.org/draft/2020-12/schema"}),
    )
    validator = Draft202012Validator(
        {"$ref": "urn:doc#/components/schemas/GraphSpec"}, registry=registry
    )
    assert list(validator.iter_errors(EXAMPLE_SPEC)) == []
    assert list(validator.iter_errors({**EXAMPLE_SPEC, "max_depth": {}}))  # the case
    assert "GraphSpecIn" not in doc["components"]["schemas"]


def test_cursors_are_documented_opaque_strings(doc: dict[str, Any]) -> None:
    seen = 0
    for op in operations(doc).values():
        for parameter in op.get("parameters", []):
            if parameter["name"] == "cursor":
                seen += 1
                assert parameter["schema"]["pattern"] == CURSOR_PATTERN
                assert parameter["schema"]["maxLength"] == CURSOR_MAX_LENGTH
                assert "400" in {str(s) for s in op["responses"]}, op["operationId"]
    assert seen == 8  # graphs, checkpoints, runs, steps, artifacts, crons, webhooks, deliveries


def test_optional_parameters_are_left_out_not_null(doc: dict[str, Any]) -> None:
    for op in operations(doc).values():
        for parameter in op.get("parameters", []):
            assert {"type": "null"} not in parameter["schema"].get("anyOf", []), (
                op["operationId"],
                parameter["name"],
            )


def test_error_responses_are_described(doc: dict[str, Any]) -> None:
    for op in operations(doc).values():
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert response["description"] not in ("Bad Request", "Not Found"), op
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}


def test_links_lead_from_a_run_and_a_thread_to_what_they_hold(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    links = ops["create_run"]["responses"][201]["links"]
    targets = {link["operationId"] for link in links.values()}
    assert {
        "list_steps",
        "list_events",
        "list_artifacts",
        "decide_approval",
        "submit_input",
        "resume_run",
        "cancel_run",
    } <= targets
    assert links["DecideApproval"]["parameters"] == {
        "run_id": "$response.body#/id",
        "approval_id": "$response.body#/waiting_for/id",
    }
    thread = ops["create_thread"]["responses"][201]["links"]
    assert thread["ListCheckpoints"] == {
        "operationId": "list_checkpoints",
        "parameters": {"thread_id": "$response.body#/id"},
    }
    for link_set in [r.get("links", {}) for op in ops.values() for r in op["responses"].values()]:
        for link in link_set.values():
            assert link["operationId"] in ops  # every link names a real operation


def test_the_published_schema_is_served_publicly(db: Any) -> None:
    response = Client().get("/api/v1/schemas/graph-spec.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/schema+json"
    schema = response.json()
    assert schema["$id"] == "http://testserver/api/v1/schemas/graph-spec.json"
    Draft202012Validator.check_schema(schema)
    assert schema["properties"]["name"]["maxLength"] == 100  # the API's cap on graph names
