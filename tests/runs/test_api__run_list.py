"""GET /runs writes its JSON directly (runs/api/run_list.py): the answer must be exactly what
RunOut/RunListOut make of the same runs, for runs in every shape a list can hold."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from config.jsonenc import Encoder
from runs.models import Run, Thread
from runs.schemas import RunOut
from runs.selectors import RUN_OUT_FIELDS
from runs.services import create_run
from runs.status import RunStatus
from tenants.models import Role, Tenant
from tests.runs.conftest import InlineQueue, chain_spec
from tests.runs.test_api__helpers import Api, key_client

pytestmark = pytest.mark.django_db


def as_run_out(run: Run) -> dict[str, Any]:
    """What ninja answers for `run` through RunOut, with the API's encoder."""
    dumped = RunOut.model_validate(run, from_attributes=True).model_dump()
    return json.loads(json.dumps(dumped, cls=Encoder))


@pytest.fixture
def api(tenant: Tenant, make_graph: Any, queue: InlineQueue) -> Api:
    make_graph(tenant, chain_spec())
    return key_client(tenant, Role.VIEWER)


def shapes(tenant: Tenant) -> list[Run]:
    """Runs as a list can meet them: new, running on a thread, waiting (with only the
    required waiting_for keys), failed (an error dict, a bare string), priced, big and
    non-ASCII state, nested metadata, a naive-looking cost."""
    thread = Thread.objects.create(tenant=tenant)
    made = [
        create_run(tenant, graph="chain", input={"q": "x"}, metadata={"a": {"b": [1, 2.5]}}),
        create_run(tenant, graph="chain", thread_id=thread.public_id, priority=5),
        create_run(tenant, graph="chain", input={"text": 'héllo ✓ \u2028 "q" \\ end'}),
        create_run(tenant, graph="chain"),
        create_run(tenant, graph="chain"),
    ]
    now = timezone.now()
    Run.objects.filter(pk=made[1].pk).update(
        status=RunStatus.RUNNING,
        started_at=now,
        steps=3,
        tokens_in=10,
        tokens_out=4,
        cost_usd=Decimal("0.001234"),
        state={"big": "x" * 5000, "n": 1e-7, "nested": {"l": [None, True, {"k": "v"}]}},
    )
    Run.objects.filter(pk=made[2].pk).update(
        status=RunStatus.WAITING,
        waiting_for={"kind": "approval", "id": "gate@1", "node": "gate", "extra": 1},
    )
    Run.objects.filter(pk=made[3].pk).update(
        status=RunStatus.FAILED,
        finished_at=now + dt.timedelta(microseconds=1),
        error={"code": "node_failed", "message": "boom", "node": "n1", "attempt": 2},
    )
    Run.objects.filter(pk=made[4].pk).update(
        status=RunStatus.FAILED, error="a bare string", cost_usd=Decimal("7")
    )
    return made


def test_the_list_is_what_run_out_makes_of_each_run(tenant: Tenant, api: Api) -> None:
    made = shapes(tenant)
    response = api.get("/runs")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["next_cursor"] is None
    runs = Run.objects.select_related("graph", "thread").only(*RUN_OUT_FIELDS)
    expected = [as_run_out(r) for r in runs.order_by("-created_at", "-pk")]
    assert [item["id"] for item in body["items"]] == [str(r.public_id) for r in reversed(made)]
    assert len(body["items"]) == len(expected)
    for item, want in zip(body["items"], expected, strict=True):
        assert item.keys() == want.keys()
        for key in want:
            assert (key, item[key]) == (key, want[key])


def test_pages_and_filters_answer_the_same_shape(tenant: Tenant, api: Api) -> None:
    shapes(tenant)
    first = api.get("/runs", {"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = api.get("/runs", {"limit": 10, "cursor": first["next_cursor"]}).json()
    assert rest["next_cursor"] is None
    assert len(first["items"]) + len(rest["items"]) == 5
    failed = api.get("/runs", {"status": "failed"}).json()["items"]
    assert {i["error"]["code"] for i in failed} == {"node_failed", "error"}
    assert api.get("/runs", {"status": "succeeded"}).json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("on_thread", [False, True], ids=["plain", "thread"])
def test_a_new_runs_answer_is_the_run_as_stored(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, on_thread: bool
) -> None:
    """POST /runs answers with the run it just wrote, not read back: the same as GET."""
    make_graph(tenant, chain_spec())
    member = key_client(tenant, Role.MEMBER)
    body: dict[str, Any] = {
        "graph": "chain",
        "input": {"text": "héllo", "n": 1.5},
        "metadata": {"customer": "acme", "tags": [1, None]},
        "priority": 4,
    }
    if on_thread:
        body["thread_id"] = str(Thread.objects.create(tenant=tenant).public_id)
    created = member.post("/runs", body)
    assert created.status_code == 201, created.content
    answer = created.json()
    assert answer == member.get(f"/runs/{answer['id']}").json()
    assert answer["thread_id"] == body.get("thread_id")
