"""Graph specs cannot price a billed provider or name a model the operator has not priced."""

from __future__ import annotations

from typing import Any

import pytest

from runs.models import Graph
from tenants.models import Role, Tenant
from tests.runs.test_api__helpers import error_of, key_client

pytestmark = pytest.mark.django_db


def paid_spec(**ask: Any) -> dict[str, Any]:
    node = {"kind": "llm", "provider": "openai", "model": "gpt-4o-mini", "prompt": "hi"}
    return {
        "name": "paid",
        "start": "ask",
        "nodes": {"ask": {**node, "output": "a", **ask}, "done": {"kind": "end"}},
        "edges": [{"from": "ask", "to": "done"}],
    }


@pytest.mark.parametrize(
    ("ask", "words"),
    [
        ({"price": {"input": 0, "output": 0}}, "operator's price table"),
        ({"model": "gpt-9-ultra"}, "'gpt-9-ultra'"),
        ({"model": "x" * 5000}, "`model` must be a model name"),
    ],
)
def test_store_and_validate_refuse_tenant_pricing(
    tenant: Tenant, ask: dict[str, Any], words: str
) -> None:
    admin = key_client(tenant, Role.ADMIN)
    stored = admin.post("/graphs", paid_spec(**ask))
    assert stored.status_code == 422
    error = error_of(stored)
    assert error["code"] == "invalid_graph"
    [problem] = error["details"]["problems"]
    assert problem["where"] == "nodes.ask" and words in problem["message"]
    assert not Graph.objects.exists()

    checked = admin.post("/graphs/validate", paid_spec(**ask))
    assert checked.status_code == 200
    assert checked.json() == {"valid": False, "problems": [problem]}


def test_a_priced_openai_spec_is_stored(tenant: Tenant) -> None:
    assert key_client(tenant, Role.ADMIN).post("/graphs", paid_spec()).status_code == 201
