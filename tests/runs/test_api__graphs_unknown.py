"""An unknown graph's 404 names what does exist: the tenant's graphs, or the graph's versions."""

from __future__ import annotations

from typing import Any

import pytest

from runs.services.graphs import KNOWN_GRAPHS_SHOWN
from tenants.models import Role, Tenant
from tests.runs.conftest import chain_spec
from tests.runs.test_api__helpers import error_of, key_client

pytestmark = pytest.mark.django_db


def test_starting_an_unknown_graph_names_the_graphs_that_exist(
    tenant: Tenant, other_tenant: Tenant, make_graph: Any
) -> None:
    make_graph(tenant, chain_spec(name="triage"))
    make_graph(tenant, chain_spec(name="billing"))
    make_graph(other_tenant, chain_spec(name="secret-plan"))
    response = key_client(tenant).post("/runs", {"graph": "triag"})
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_found"
    assert error["message"] == "Graph triag does not exist. Graphs here: billing, triage."
    assert error["details"] == {"graphs": ["billing", "triage"], "more": False}
    assert "secret-plan" not in response.content.decode()  # another tenant's names stay hidden


def test_reading_an_unknown_graph_names_them_too(tenant: Tenant, make_graph: Any) -> None:
    make_graph(tenant, chain_spec(name="triage"))
    error = error_of(key_client(tenant).get("/graphs/nope"))
    assert "Graphs here: triage." in error["message"]


def test_only_the_first_graphs_are_named(tenant: Tenant, make_graph: Any) -> None:
    for i in range(KNOWN_GRAPHS_SHOWN + 2):
        make_graph(tenant, chain_spec(name=f"g{i:02d}"))
    error = error_of(key_client(tenant).post("/runs", {"graph": "zzz"}))
    assert error["details"]["graphs"] == [f"g{i:02d}" for i in range(KNOWN_GRAPHS_SHOWN)]
    assert error["details"]["more"] is True
    assert error["message"].endswith("g09, and more.")


def test_a_tenant_without_graphs_is_told_how_to_make_one(tenant: Tenant) -> None:
    error = error_of(key_client(tenant).post("/runs", {"graph": "chain"}))
    assert "no graphs yet" in error["message"] and "POST /api/v1/graphs" in error["message"]
    assert error["details"] == {"graphs": [], "more": False}


def test_an_unknown_version_names_the_versions(tenant: Tenant, make_graph: Any) -> None:
    make_graph(tenant, chain_spec(name="triage"))
    make_graph(tenant, chain_spec(name="triage", n=4))
    client = key_client(tenant, Role.ADMIN)
    for response in (
        client.post("/runs", {"graph": "triage", "version": 9}),
        client.get("/graphs/triage/versions/9"),
    ):
        assert response.status_code == 404
        error = error_of(response)
        assert error["message"] == "Graph triage has no version 9; its versions are 1, 2."
        assert error["details"] == {"graph": "triage", "versions": [1, 2]}
