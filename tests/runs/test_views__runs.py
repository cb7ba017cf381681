"""The runs list and run detail pages, and every control posted from the detail page."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from runs import services
from runs.models import Event, Run
from runs.services import create_graph_version, create_run, mark_interrupted, resume_run
from runs.status import RunStatus
from runs.views import runs as run_views
from tenants.models import Tenant
from tests.runs.conftest import approval_spec, chain_spec

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "graphs"
JSON = {"Accept": "application/json"}


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def node_state(html: str, node: str) -> str:
    match = re.search(rf'data-node="{re.escape(node)}"[^>]*data-state="([a-z]+)"', html)
    assert match, f"node {node} not drawn"
    return match.group(1)


def input_spec() -> dict[str, Any]:
    return {
        "name": "ask",
        "start": "ask",
        "nodes": {
            "ask": {"kind": "input", "prompt": "Your name?", "output": "name"},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "ask", "to": "done"}],
    }


# --- list ---------------------------------------------------------------------------------------


def test_run_list_shows_runs_with_status_badges_and_filters(tenant, member, queue) -> None:
    create_graph_version(tenant, chain_spec())
    create_graph_version(tenant, approval_spec())
    done = create_run(tenant, graph="chain")
    waiting = create_run(tenant, graph="approve")
    queue.drain()
    client = login(member)

    html = client.get("/runs/").content.decode()
    assert f'data-run="{done.public_id.hex}" data-status="succeeded"' in html
    assert f'data-run="{waiting.public_id.hex}" data-status="waiting"' in html
    assert 'class="badge s-succeeded"' in html and 'id="live-indicator"' in html
    assert "Runyard.runList" in html  # the live script is inline, no static files needed
    # The page subscribes to the tenant stream from the last event it rendered.
    last_event = Event.objects.filter(tenant=tenant).order_by("-id").first()
    assert f'wsPath: "/ws/tenant/", after: {last_event.pk}' in html

    by_status = client.get("/runs/", {"status": "waiting"}).content.decode()
    assert waiting.public_id.hex in by_status and done.public_id.hex not in by_status
    by_graph = client.get("/runs/", {"graph": "chain"}).content.decode()
    assert done.public_id.hex in by_graph and waiting.public_id.hex not in by_graph
    assert '<option value="chain" selected>' in by_graph
    # An unknown status is ignored rather than an error.
    assert client.get("/runs/", {"status": "bogus"}).status_code == 200


def test_run_list_pages_with_a_cursor(tenant, member, monkeypatch) -> None:
    monkeypatch.setattr(run_views, "PAGE_SIZE", 2)
    create_graph_version(tenant, chain_spec())
    runs = [create_run(tenant, graph="chain") for _ in range(5)]
    client = login(member)
    seen: list[str] = []
    url, params = "/runs/", {}
    for _ in range(3):
        html = client.get(url, params).content.decode()
        seen += re.findall(r'<tr data-run="([0-9a-f]{32})"', html)
        cursor = re.search(r'href="\?cursor=([^"&]+)', html)
        if not cursor:
            break
        params = {"cursor": cursor.group(1)}
    assert seen == [r.public_id.hex for r in reversed(runs)]
    assert "Newest" in html  # a later page links back to the first
    # A stale or edited cursor shows the first page rather than failing.
    assert client.get("/runs/", {"cursor": "garbage"}).status_code == 200


def test_rows_partial_is_just_the_table_body(tenant, member) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    html = login(member).get("/runs/", {"partial": "rows"}).content.decode()
    assert html.strip().startswith("<tr") and "<html" not in html
    assert run.public_id.hex in html


def test_empty_run_list_says_so(member) -> None:
    assert "No runs yet" in login(member).get("/runs/").content.decode()


# --- detail -------------------------------------------------------------------------------------


def test_run_detail_shows_graph_timeline_state_events_and_artifacts(tenant, member, queue) -> None:
    spec = json.loads((EXAMPLES / "document-pipeline.json").read_text())
    create_graph_version(tenant, spec)
    run = create_run(
        tenant, graph="document-pipeline", input={"title": "Doc", "document": "Durable runs."}
    )
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    client = login(member)
    html = client.get(f"/runs/{run.public_id}/").content.decode()

    assert 'id="run-status" data-status="succeeded"' in html
    for node in spec["nodes"]:
        assert node_state(html, node) == "completed"
    assert html.count('<tr data-step="') == run.steps
    assert 'class="bar s-completed"' in html
    assert "&quot;summary&quot;" in html  # the state, as pretty JSON
    assert "run.succeeded" in html and 'data-seq="1"' in html
    assert "The run has ended" in html  # no controls for a finished run

    links = re.findall(r'href="(/artifacts/[0-9a-f-]+/)"', html)
    assert len(set(links)) == 2
    contents = {}
    for link in set(links):
        response = client.get(link)
        assert response.status_code == 200
        assert response["X-Content-Type-Options"] == "nosniff"
        contents[response["Content-Disposition"]] = b"".join(response.streaming_content)
    assert any(b"Doc" in body for body in contents.values())
    download = client.get(links[0] + "?download=1")
    assert download["Content-Disposition"].startswith("attachment")


def test_live_view_gives_states_panels_and_events_after_a_seq(tenant, member, queue) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    data = login(member).get(f"/runs/{run.public_id}/live/", {"after": 2}).json()
    assert data["status"] == "waiting" and data["terminal"] is False
    assert data["states"] == {"before": "completed", "gate": "waiting"}
    assert set(data["panels"]) == {"header", "controls", "timeline", "state", "artifacts"}
    assert 'id="approve-button"' in data["panels"]["controls"]
    seqs = [e["seq"] for e in data["events"]]
    assert seqs and seqs[0] == 3 and seqs[-1] == data["last_seq"]
    assert data["events"][-1]["event"] == "run.waiting"


def test_live_view_and_page_stop_at_the_last_seq_read_with_the_status(
    tenant, member, queue, monkeypatch
) -> None:
    """An event committed while the view reads (an operator interrupts the run between the
    run's row and its events) waits for the websocket: the snapshot's events never run ahead
    of the status its panels show, or the page would count the event as seen and keep the
    old badge (a flake of the browser suite, seen in CI)."""
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    get_run = services.get_run

    def read_then(change: Callable[[Run], Any]) -> Callable[..., Run]:
        def read(*args: Any) -> Run:
            seen = get_run(*args)
            change(Run.objects.get(pk=seen.pk))
            return seen

        return read

    client = login(member)
    monkeypatch.setattr(
        run_views.services,
        "get_run",
        read_then(lambda r: mark_interrupted(r, by="operator", reason="worker lost")),
    )
    data = client.get(f"/runs/{run.public_id}/live/", {"after": 0}).json()
    assert data["status"] == "waiting" and 'data-status="waiting"' in data["panels"]["header"]
    assert [e["seq"] for e in data["events"]] == list(range(1, data["last_seq"] + 1))
    assert data["events"][-1]["event"] == "run.waiting"
    assert Event.objects.filter(run=run).count() == data["last_seq"] + 1  # run.interrupted

    # The page itself: its rows stop where its `after` (the run's last_seq) does.
    monkeypatch.setattr(
        run_views.services, "get_run", read_then(lambda r: resume_run(r, interrupted=True))
    )
    html = client.get(f"/runs/{run.public_id}/").content.decode()
    assert 'data-status="interrupted"' in html
    shown = [int(seq) for seq in re.findall(r'<tr data-seq="(\d+)"', html)]
    assert shown == list(range(1, data["last_seq"] + 2))
    assert Event.objects.filter(run=run).last().type == "run.resurrected"


def test_approve_flow_through_the_detail_page(tenant, member, queue) -> None:
    create_graph_version(tenant, approval_spec())
    client = login(member)
    started = client.post("/graphs/approve/", {"input": '{"ticket": 7}', "version": ""})
    assert started.status_code == 302
    run = Run.objects.get()
    assert started["Location"] == f"/runs/{run.public_id}/"
    queue.drain()

    html = client.get(started["Location"]).content.decode()
    assert node_state(html, "gate") == "waiting" and node_state(html, "before") == "completed"
    assert 'id="approve-button"' in html and "Go on?" in html
    assert 'name="approval_id" value="gate@1"' in html

    response = client.post(
        f"/runs/{run.public_id}/approval/",
        {"approval_id": "gate@1", "decision": "approve", "patch": '{"approved_by": "alice"}'},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == f"/runs/{run.public_id}/"
    assert "Approved gate@1." in response.content.decode()
    queue.drain()

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.state["approved_by"] == "alice" and run.state["log"] == ["before", "after"]
    html = client.get(f"/runs/{run.public_id}/").content.decode()
    assert node_state(html, "gate") == "completed" and node_state(html, "after") == "completed"
    assert node_state(html, "rejected") == "pending"
    assert 'id="approve-button"' not in html

    # Deciding again is a conflict, shown as a message, never a 500.
    again = client.post(
        f"/runs/{run.public_id}/approval/",
        {"approval_id": "gate@1", "decision": "reject"},
        follow=True,
    )
    assert again.status_code == 200
    assert "msg-error" in again.content.decode()


def test_reject_follows_on_reject(tenant, member, queue) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    response = login(member).post(
        f"/runs/{run.public_id}/approval/",
        {"approval_id": "gate@1", "decision": "reject"},
        headers=JSON,
    )
    assert response.json() == {"ok": True, "message": "Rejected gate@1."}
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.state["log"] == ["before", "rejected"]


def test_bad_patch_is_reported_not_applied(tenant, member, queue) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    client = login(member)
    url = f"/runs/{run.public_id}/approval/"
    for patch in ["{not json", "[1, 2]"]:
        response = client.post(
            url, {"approval_id": "gate@1", "decision": "approve", "patch": patch}, headers=JSON
        )
        assert response.status_code == 400 and response.json()["ok"] is False
        assert "State patch" in response.json()["message"]
    unknown = client.post(url, {"approval_id": "nope@1", "decision": "approve"}, headers=JSON)
    assert unknown.status_code == 404 and unknown.json()["ok"] is False
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING


def test_cancel_pause_and_resume_from_the_page(tenant, member, queue) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    client = login(member)
    base = f"/runs/{run.public_id}"

    paused = client.post(f"{base}/pause/", headers=JSON)
    assert paused.json() == {"ok": True, "message": "The run is paused."}
    html = client.get(f"{base}/").content.decode()
    assert 'id="resume-button"' in html and 'id="pause-button"' not in html

    resumed = client.post(f"{base}/resume/", follow=True)
    assert "The run is resumed." in resumed.content.decode()
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING

    not_paused = client.post(f"{base}/resume/", headers=JSON)
    assert not_paused.status_code == 409 and "not paused" in not_paused.json()["message"]

    cancelled = client.post(f"{base}/cancel/", {"action": "interrupt", "reason": "test"})
    assert cancelled.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    # Cancel is idempotent; pausing a finished run is a conflict shown as a message.
    assert client.post(f"{base}/cancel/", {"action": "rollback"}, headers=JSON).json()["ok"]
    late = client.post(f"{base}/pause/", follow=True)
    assert late.status_code == 200 and "already ended" in late.content.decode()
    bad = client.post(f"{base}/cancel/", {"action": "explode"}, headers=JSON)
    assert bad.status_code == 400


def test_cancel_of_a_succeeded_run_is_a_message_not_a_500(tenant, member, queue) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    queue.drain()
    response = login(member).post(
        f"/runs/{run.public_id}/cancel/", {"action": "interrupt"}, follow=True
    )
    assert response.status_code == 200
    assert "already ended succeeded" in response.content.decode()


def test_input_form_answers_an_input_node(tenant, member, queue) -> None:
    create_graph_version(tenant, input_spec())
    run = create_run(tenant, graph="ask")
    queue.drain()
    client = login(member)
    html = client.get(f"/runs/{run.public_id}/").content.decode()
    assert 'id="input-control"' in html and node_state(html, "ask") == "waiting"
    response = client.post(
        f"/runs/{run.public_id}/input/", {"value": "Ada", "input_id": "ask@1"}, headers=JSON
    )
    assert response.json() == {"ok": True, "message": "Input sent."}
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.state["name"] == "Ada"


def test_guidance_is_added_to_a_waiting_run(tenant, member, queue) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    client = login(member)
    empty = client.post(f"/runs/{run.public_id}/guidance/", {"message": ""}, headers=JSON)
    assert empty.status_code == 400
    response = client.post(
        f"/runs/{run.public_id}/guidance/", {"message": "be brief"}, headers=JSON
    )
    assert response.json()["ok"] is True
    assert Run.objects.get(pk=run.pk).guidance_pending is True


def test_unknown_control_is_404(tenant: Tenant, member: Any) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    assert login(member).post(f"/runs/{run.public_id}/explode/").status_code == 404
    assert login(member).get(f"/runs/{run.public_id}/cancel/").status_code == 405
