"""`POST /graphs/validate` stays cheap and clear on hostile specs, for any role."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.conf import settings

from runs.apps import configure_expressions
from runs.engine import bounds
from tenants.models import Role, Tenant
from tests.runs.conftest import chain_spec
from tests.runs.test_api__helpers import key_client

pytestmark = pytest.mark.django_db


def test_a_viewer_validating_a_megabyte_of_expressions_costs_under_a_second(
    tenant: Tenant,
) -> None:
    spec = chain_spec(n=300)
    for i, node in enumerate(spec["nodes"].values()):
        if node["kind"] == "transform":
            node["set"] = {f"k{j}": f"state.v{i}_{j} * {j} + 1 ~ 'api'" for j in range(30)}
    body = json.dumps(spec)
    assert len(body) <= settings.RUNYARD["MAX_SPEC_BYTES"]
    viewer = key_client(tenant, Role.VIEWER)
    started = time.process_time()
    response = viewer.post("/graphs/validate", raw=body)
    assert time.process_time() - started < 1.0
    assert response.status_code == 200
    result = response.json()
    assert result["valid"] is False
    assert "too much expression code" in result["problems"][0]["message"]


@pytest.mark.parametrize("depth", [100, 50_000])
def test_deeply_nested_json_is_a_clear_answer_not_a_500(tenant: Tenant, depth: int) -> None:
    deep = "[" * depth + "]" * depth
    body = json.dumps(chain_spec())[:-1] + f', "metadata": {{"deep": {deep}}}}}'
    response = key_client(tenant, Role.VIEWER).post("/graphs/validate", raw=body)
    assert response.status_code in (200, 400, 422)
    if response.status_code == 200:
        assert response.json()["valid"] is False


def test_the_expression_cap_comes_from_settings(settings: Any) -> None:
    before = bounds.max_value_bytes()
    settings.RUNYARD = {**settings.RUNYARD, "MAX_VALUE_BYTES": 12345}
    try:
        configure_expressions()
        assert bounds.max_value_bytes() == 12345
    finally:
        bounds.configure(max_value_bytes=before)
