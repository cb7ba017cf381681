"""Graphs over the API: versions, validation with every problem named, listing and reading."""

from __future__ import annotations

from typing import Any

import pytest

from runs.models import Graph
from tenants.models import Role, Tenant
from tests.runs.conftest import chain_spec
from tests.runs.test_api__helpers import error_of, key_client

pytestmark = pytest.mark.django_db


def test_admin_stores_versions_and_the_same_spec_again_is_the_same_version(
    tenant: Tenant,
) -> None:
    admin = key_client(tenant, Role.ADMIN)
    first = admin.post("/graphs", chain_spec())
    assert first.status_code == 201
    body = first.json()
    assert body["name"] == "chain" and body["version"] == 1
    assert body["spec"] == chain_spec()
    assert len(body["hash"]) == 64
    assert body["created_by"].startswith("api_key:")

    again = admin.post("/graphs", chain_spec())
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]

    second = admin.post("/graphs", chain_spec(n=2))
    assert second.status_code == 201
    assert second.json()["version"] == 2
    assert Graph.objects.filter(tenant=tenant).count() == 2


def test_invalid_spec_is_422_naming_every_node_and_edge(tenant: Tenant) -> None:
    spec = chain_spec()
    spec["nodes"]["n1"]["kind"] = "teleport"
    spec["edges"].append({"from": "n2", "to": "nowhere"})
    response = key_client(tenant, Role.ADMIN).post("/graphs", spec)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_graph"
    wheres = " ".join(p["where"] for p in error["details"]["problems"])
    assert "n1" in wheres and "edges" in wheres
    assert "nowhere" in error["message"] or "nowhere" in str(error["details"])
    assert not Graph.objects.exists()


def test_validate_reports_problems_without_storing(tenant: Tenant) -> None:
    viewer = key_client(tenant, Role.VIEWER)  # writes nothing, so any role may validate
    ok = viewer.post("/graphs/validate", chain_spec())
    assert ok.status_code == 200
    assert ok.json() == {"valid": True, "problems": []}

    bad = viewer.post("/graphs/validate", {"name": "x", "nodes": {"a": {"kind": "nope"}}})
    assert bad.status_code == 200
    body = bad.json()
    assert body["valid"] is False
    assert {"where", "message"} == set(body["problems"][0])
    assert any(p["where"] == "start" for p in body["problems"])
    assert not Graph.objects.exists()


def test_spec_that_is_not_an_object_is_422(tenant: Tenant) -> None:
    admin = key_client(tenant, Role.ADMIN)
    for path in ("/graphs", "/graphs/validate"):
        response = admin.post(path, ["not", "an", "object"])
        assert response.status_code == 422
        assert error_of(response)["code"] == "validation_error"


def test_overlong_graph_name_is_422_not_a_database_error(tenant: Tenant) -> None:
    response = key_client(tenant, Role.ADMIN).post("/graphs", chain_spec(name="g" * 101))
    assert response.status_code == 422
    assert error_of(response)["details"]["problems"][0]["where"] == "name"


def test_spec_over_max_spec_bytes_is_413(tenant: Tenant, settings: Any) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_SPEC_BYTES": 2000}
    spec = chain_spec(description="x" * 3000)
    admin = key_client(tenant, Role.ADMIN)
    for path in ("/graphs", "/graphs/validate"):
        response = admin.post(path, spec)
        assert response.status_code == 413
        error = error_of(response)
        assert error["code"] == "payload_too_large"
        assert error["details"]["limit_bytes"] == 2000


def test_list_shows_the_latest_version_of_each_graph_with_pagination(tenant: Tenant) -> None:
    admin = key_client(tenant, Role.ADMIN)
    for name in ("alpha", "beta", "gamma"):
        assert admin.post("/graphs", chain_spec(name=name)).status_code == 201
    admin.post("/graphs", chain_spec(name="beta", n=1))

    first = admin.get("/graphs", {"limit": 2}).json()
    assert [(g["name"], g["version"]) for g in first["items"]] == [("alpha", 1), ("beta", 2)]
    assert first["next_cursor"]
    rest = admin.get("/graphs", {"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [(g["name"], g["version"]) for g in rest["items"]] == [("gamma", 1)]
    assert rest["next_cursor"] is None


def test_get_graph_is_the_latest_with_all_versions_and_versions_are_addressable(
    tenant: Tenant,
) -> None:
    admin = key_client(tenant, Role.ADMIN)
    admin.post("/graphs", chain_spec())
    admin.post("/graphs", chain_spec(n=1))
    latest = key_client(tenant, Role.VIEWER).get("/graphs/chain")
    assert latest.status_code == 200
    assert latest.json()["version"] == 2 and latest.json()["versions"] == [1, 2]

    v1 = admin.get("/graphs/chain/versions/1")
    assert v1.status_code == 200
    assert v1.json()["spec"] == chain_spec()
    assert admin.get("/graphs/chain/versions/3").status_code == 404
    assert admin.get("/graphs/nope").status_code == 404
    assert admin.get("/graphs/chain/versions/0").status_code == 422


def test_members_and_viewers_cannot_store_graphs(tenant: Tenant) -> None:
    for role in (Role.MEMBER, Role.VIEWER):
        response = key_client(tenant, role).post("/graphs", chain_spec())
        assert response.status_code == 403
        assert error_of(response)["details"]["required_role"] == "admin"
    assert not Graph.objects.exists()
