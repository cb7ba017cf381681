"""What a run leaves behind, over the API: steps, events, artifacts and their content."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from runs.models import Artifact
from tenants.models import Role, Tenant
from tests.runs.conftest import InlineQueue, chain_spec
from tests.runs.test_api__helpers import Api, error_of, key_client

pytestmark = pytest.mark.django_db(transaction=True)


def artifact_spec() -> dict[str, Any]:
    spec = chain_spec(name="report", n=2)
    spec["nodes"]["n1"]["artifacts"] = [
        {"name": "report.txt", "text": "count={{ state.count }}"},
        {"name": "state.json", "json": "state"},
        {"name": "page.html", "text": "<script>alert(1)</script>", "content_type": "text/html"},
    ]
    return spec


@pytest.fixture
def alice(tenant: Tenant, make_graph: Any) -> Api:
    make_graph(tenant, chain_spec())
    make_graph(tenant, artifact_spec())
    return key_client(tenant, Role.VIEWER)


@pytest.fixture
def finished(
    tenant: Tenant, alice: Api, queue: InlineQueue, settings: Any, tmp_path: Path
) -> dict[str, Any]:
    settings.MEDIA_ROOT = tmp_path
    run = key_client(tenant).post("/runs", {"graph": "report"}).json()
    assert queue.drain() == ["succeeded"]
    return run


def test_steps_have_the_design_shape_in_order(alice: Api, finished: dict[str, Any]) -> None:
    body = alice.get(f"/runs/{finished['id']}/steps").json()
    assert body["next_cursor"] is None
    steps = body["items"]
    assert [s["node"] for s in steps[:2]] == ["n0", "n1"]
    assert [s["index"] for s in steps] == list(range(1, len(steps) + 1))
    assert set(steps[0]) == {
        "index",
        "node",
        "status",
        "attempt",
        "started_at",
        "finished_at",
        "duration_ms",
        "usage",
        "error",
    }
    assert steps[0]["status"] == "completed" and steps[0]["error"] is None


def test_steps_paginate(alice: Api, finished: dict[str, Any]) -> None:
    url = f"/runs/{finished['id']}/steps"
    first = alice.get(url, {"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = alice.get(url, {"limit": 2, "cursor": first["next_cursor"]}).json()
    indexes = [s["index"] for s in first["items"] + rest["items"]]
    assert indexes == list(range(1, len(indexes) + 1))


def test_events_after_and_limit(alice: Api, finished: dict[str, Any]) -> None:
    url = f"/runs/{finished['id']}/events"
    everything = alice.get(url, {"limit": 1000}).json()
    events = everything["items"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert set(events[0]) == {"seq", "type", "data", "ts"}
    assert events[0]["type"] == "run.queued" and events[-1]["type"] == "run.succeeded"
    assert everything["next_cursor"] is None

    page = alice.get(url, {"after": 2, "limit": 3}).json()
    assert [e["seq"] for e in page["items"]] == [3, 4, 5]
    assert page["next_cursor"] == "5"
    assert alice.get(url, {"after": len(events)}).json() == {"items": [], "next_cursor": None}
    assert alice.get(url, {"after": -1}).status_code == 422


def test_artifacts_are_listed_and_their_content_streams_with_its_type(
    alice: Api, finished: dict[str, Any]
) -> None:
    body = alice.get(f"/runs/{finished['id']}/artifacts").json()
    by_name = {a["name"]: a for a in body["items"]}
    assert set(by_name) == {"report.txt", "state.json", "page.html"}
    report = by_name["report.txt"]
    assert report["run_id"] == finished["id"] and report["step"] == 2
    assert report["content_url"] == f"/api/v1/artifacts/{report['id']}/content"

    response = alice.client.get(report["content_url"], headers=alice.headers)
    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    assert content == b"count=2"
    assert response["Content-Type"].startswith("text/plain")
    assert hashlib.sha256(content).hexdigest() == report["sha256"]
    assert report["size"] == len(content)
    assert response["X-Content-Type-Options"] == "nosniff"

    data = alice.client.get(by_name["state.json"]["content_url"], headers=alice.headers)
    assert data["Content-Type"] == "application/json"
    assert json.loads(b"".join(data.streaming_content))["count"] == 2


def test_active_content_is_a_sandboxed_download(alice: Api, finished: dict[str, Any]) -> None:
    artifact = Artifact.objects.get(name="page.html")
    response = alice.get(f"/artifacts/{artifact.public_id}/content")
    assert response["Content-Type"] == "text/html"
    assert response["Content-Disposition"].startswith("attachment")
    assert "sandbox" in response["Content-Security-Policy"]


def test_artifact_whose_file_is_gone_is_404(alice: Api, finished: dict[str, Any]) -> None:
    artifact = Artifact.objects.get(name="report.txt")
    artifact.file.storage.delete(artifact.file.name)
    response = alice.get(f"/artifacts/{artifact.public_id}/content")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_thread_checkpoints_paginate_oldest_first(
    tenant: Tenant, alice: Api, queue: InlineQueue
) -> None:
    member = key_client(tenant)
    thread = member.post("/threads", {"metadata": {"k": "v"}})
    assert thread.status_code == 201
    thread_id = thread.json()["id"]
    assert thread.json()["metadata"] == {"k": "v"}
    member.post("/runs", {"graph": "chain", "thread_id": thread_id})
    queue.drain()
    got = alice.get(f"/threads/{thread_id}").json()
    assert got["state"]["count"] == 3

    url = f"/threads/{thread_id}/checkpoints"
    first = alice.get(url, {"limit": 2}).json()
    rest = alice.get(url, {"limit": 50, "cursor": first["next_cursor"]}).json()
    steps = [c["step_index"] for c in first["items"] + rest["items"]]
    assert steps == sorted(steps) and steps[0] == 0
    assert set(first["items"][0]) == {
        "id",
        "run_id",
        "step_index",
        "next_node",
        "state",
        "created_at",
    }
