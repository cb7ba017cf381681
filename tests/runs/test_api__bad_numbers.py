"""NaN, Infinity and NUL never reach the database: every JSON body refuses them with a 400."""

from __future__ import annotations

from typing import Any

import pytest

from runs.models import Control, Graph, Run, Thread
from tenants.models import Role, Tenant
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import Api, error_of, key_client

pytestmark = pytest.mark.django_db(transaction=True)

# Each a JSON text Python's json module accepts but the database cannot store.
BAD_VALUES = {
    "nan": "NaN",
    "infinity": "Infinity",
    "minus_infinity": "-Infinity",
    "overflow": "1e400",
    "nul_in_string": '"a\\u0000b"',
    "nested_nul": '{"deep": [1, "\\u0000"]}',
}


@pytest.fixture
def alice(tenant: Tenant, make_graph: Any) -> Api:
    make_graph(tenant, chain_spec())
    make_graph(tenant, approval_spec())
    make_graph(tenant, {"name": "asks", **_input_nodes()})
    return key_client(tenant, Role.ADMIN)


def _input_nodes() -> dict[str, Any]:
    return {
        "start": "question",
        "nodes": {
            "question": {"kind": "input", "prompt": "Name?", "output": "name"},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "question", "to": "done"}],
    }


def _refused(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid_json_value", error
    return error


@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_run_input_with_an_unstorable_value_is_a_400_and_no_run(alice: Api, bad: str) -> None:
    error = _refused(alice.post("/runs", raw=f'{{"graph": "chain", "input": {{"x": {bad}}}}}'))
    assert "cannot be stored" in error["message"]
    assert Run.objects.count() == 0


def test_the_error_names_the_path_of_a_nul(alice: Api) -> None:
    error = _refused(
        alice.post("/runs", raw='{"graph": "chain", "input": {"a": ["ok", "x\\u0000"]}}')
    )
    assert error["details"]["path"] == "input.a[1]"
    assert "input.a[1]" in error["message"]


def test_a_nul_in_a_key_is_refused(alice: Api) -> None:
    _refused(alice.post("/runs", raw='{"graph": "chain", "input": {"k\\u0000": 1}}'))


def test_run_metadata_with_nan_is_a_400(alice: Api) -> None:
    _refused(alice.post("/runs", raw='{"graph": "chain", "metadata": {"score": NaN}}'))
    assert Run.objects.count() == 0


def test_an_escaped_backslash_before_u0000_is_plain_text(alice: Api, queue: InlineQueue) -> None:
    response = alice.post("/runs", raw='{"graph": "chain", "input": {"path": "C:\\\\u0000"}}')
    assert response.status_code == 201, response.content
    queue.drain()
    run = Run.objects.get()
    assert run.status == "succeeded" and run.state["path"] == "C:\\u0000"


@pytest.mark.parametrize("bad", ["NaN", '"\\u0000"'])
def test_graph_specs_and_threads_refuse_unstorable_values(alice: Api, bad: str) -> None:
    graphs = Graph.objects.count()
    note = '"note": ' + bad
    spec = '{"name": "g", "start": "a", "nodes": {"a": {"kind": "end", ' + note + '}}, "edges": []}'
    _refused(alice.post("/graphs", raw=spec))
    _refused(alice.post("/graphs/validate", raw=spec))
    assert Graph.objects.count() == graphs
    _refused(alice.post("/threads", raw=f'{{"state": {{"x": {bad}}}}}'))
    _refused(alice.post("/threads", raw=f'{{"metadata": {{"x": {bad}}}}}'))
    assert Thread.objects.count() == 0


def test_control_payloads_refuse_unstorable_values(alice: Api, queue: InlineQueue) -> None:
    gate = alice.post("/runs", {"graph": "approve"}).json()
    ask = alice.post("/runs", {"graph": "asks"}).json()
    queue.drain()
    assert Run.objects.filter(status="waiting").count() == 2
    _refused(
        alice.post(
            f"/runs/{gate['id']}/approvals/gate@1",
            raw='{"decision": "approve", "patch": {"x": Infinity}}',
        )
    )
    _refused(alice.post(f"/runs/{ask['id']}/input", raw='{"value": [1, NaN]}'))
    _refused(alice.post(f"/runs/{ask['id']}/input", raw='{"value": "\\u0000"}'))
    _refused(alice.post(f"/runs/{ask['id']}/guidance", raw='{"message": "hi\\u0000"}'))
    assert Control.objects.count() == 0
    assert Run.objects.filter(status="waiting").count() == 2
    # The same controls with storable values still work.
    ok = alice.post(f"/runs/{ask['id']}/input", {"value": 1.5})
    assert ok.status_code == 200, ok.content


def test_malformed_json_keeps_its_own_code(alice: Api) -> None:
    response = alice.post("/runs", raw='{"graph": "chain", "input": {')
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"


@pytest.mark.parametrize("text", ['{"x": NaN}', '{"x": 1e400}', '{"x": "\\u0000"}'])
def test_the_dashboard_start_form_refuses_unstorable_values(
    tenant: Tenant, member: Any, make_graph: Any, text: str
) -> None:
    from django.test import Client

    make_graph(tenant, chain_spec())
    client = Client()
    client.force_login(member)
    response = client.post("/graphs/chain/", {"input": text, "version": ""})
    assert response.status_code == 200
    assert "Not valid JSON" in response.content.decode()
    assert not Run.objects.exists()


def test_create_run_refuses_unstorable_input_from_any_caller(
    tenant: Tenant, make_graph: Any
) -> None:
    from runs.services import ValidationFailed, create_run

    make_graph(tenant, chain_spec())
    with pytest.raises(ValidationFailed) as info:
        create_run(tenant, graph="chain", input={"rows": [1, float("nan")]})
    assert info.value.code == "invalid_json_value"
    assert info.value.details["path"] == "input.rows[1]"
    with pytest.raises(ValidationFailed):
        create_run(tenant, graph="chain", metadata={"k": "a\x00"})
    assert not Run.objects.exists()
