"""Controls over the API: cancel, pause/resume, input, guidance and approvals."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from runs.models import Control, Run
from tenants.models import Role, Tenant
from tests.runs.busy import Clock, locked_runs_table, virtual_clock
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import Api, error_of, key_client, session_client

pytestmark = pytest.mark.django_db(transaction=True)


def input_spec() -> dict[str, Any]:
    return {
        "name": "ask",
        "start": "question",
        "nodes": {
            "question": {"kind": "input", "prompt": "Name?", "output": "name"},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "question", "to": "done"}],
    }


def routed_spec() -> dict[str, Any]:
    spec = approval_spec(name="routed")
    spec["nodes"]["alt"] = {"kind": "transform", "set": {"log": "'alt'"}}
    spec["edges"] += [{"from": "gate", "to": "alt"}, {"from": "alt", "to": "done"}]
    return spec


@pytest.fixture
def alice(tenant: Tenant, make_graph: Any) -> Api:
    for spec in (chain_spec(), approval_spec(), input_spec(), routed_spec()):
        make_graph(tenant, spec)
    return key_client(tenant, Role.MEMBER)


def _start(api: Api, queue: InlineQueue, graph: str, **body: Any) -> dict[str, Any]:
    response = api.post("/runs", {"graph": graph, **body})
    assert response.status_code == 201, response.content
    queue.drain()
    return api.get(f"/runs/{response.json()['id']}").json()


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_of_a_queued_run_is_immediate_and_idempotent(alice: Api, queue: InlineQueue) -> None:
    run = alice.post("/runs", {"graph": "chain"}).json()
    first = alice.post(f"/runs/{run['id']}/cancel", {"action": "interrupt"})
    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert first.json()["error"]["code"] == "cancelled"
    again = alice.post(f"/runs/{run['id']}/cancel")  # no body: interrupt
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert queue.drain() == ["not_claimed"]


def test_cancel_of_a_finished_run_is_409(alice: Api, queue: InlineQueue) -> None:
    run = _start(alice, queue, "chain")
    assert run["status"] == "succeeded"
    response = alice.post(f"/runs/{run['id']}/cancel", {"action": "interrupt"})
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "run_finished"
    assert error["details"]["status"] == "succeeded"


def test_cancel_with_rollback_restores_the_threads_state(alice: Api, queue: InlineQueue) -> None:
    thread = alice.post("/threads", {"state": {"log": ["kept"]}}).json()
    run = _start(alice, queue, "approve", thread_id=thread["id"])
    assert run["status"] == "waiting"
    response = alice.post(f"/runs/{run['id']}/cancel", {"action": "rollback"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert alice.get(f"/threads/{thread['id']}").json()["state"] == {"log": ["kept"]}


def test_cancel_action_must_be_interrupt_or_rollback(alice: Api, queue: InlineQueue) -> None:
    run = alice.post("/runs", {"graph": "chain"}).json()
    response = alice.post(f"/runs/{run['id']}/cancel", {"action": "explode"})
    assert response.status_code == 422
    assert "`action`" in error_of(response)["message"]


# --- pause / resume ------------------------------------------------------------------------------


def test_pause_and_resume_a_waiting_run(alice: Api, queue: InlineQueue) -> None:
    run = _start(alice, queue, "approve")
    paused = alice.post(f"/runs/{run['id']}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert alice.post(f"/runs/{run['id']}/pause").json()["status"] == "paused"  # idempotent
    resumed = alice.post(f"/runs/{run['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "waiting"
    not_paused = alice.post(f"/runs/{run['id']}/resume")
    assert not_paused.status_code == 409
    assert error_of(not_paused)["code"] == "not_paused"


def test_pause_of_a_finished_run_is_409(alice: Api, queue: InlineQueue) -> None:
    run = _start(alice, queue, "chain")
    response = alice.post(f"/runs/{run['id']}/pause")
    assert response.status_code == 409
    assert error_of(response)["code"] == "run_finished"


def test_paused_queued_run_runs_after_resume(alice: Api, queue: InlineQueue) -> None:
    run = alice.post("/runs", {"graph": "chain"}).json()
    assert alice.post(f"/runs/{run['id']}/pause").json()["status"] == "paused"
    assert queue.drain() == ["not_claimed"]
    assert alice.post(f"/runs/{run['id']}/resume").json()["status"] == "queued"
    assert queue.drain() == ["succeeded"]


# --- input and guidance --------------------------------------------------------------------------


def test_input_answers_the_current_request(alice: Api, queue: InlineQueue) -> None:
    run = _start(alice, queue, "ask")
    assert run["status"] == "waiting" and run["waiting_for"]["kind"] == "input"
    response = alice.post(f"/runs/{run['id']}/input", {"value": "Ada"})
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    queue.drain()
    done = alice.get(f"/runs/{run['id']}").json()
    assert done["status"] == "succeeded" and done["state"]["name"] == "Ada"

    again = alice.post(f"/runs/{run['id']}/input", {"value": "Bob"})
    assert again.status_code == 409
    assert error_of(again)["code"] == "run_finished"


def test_input_when_nothing_is_asked_is_409_unless_it_names_the_request(
    alice: Api, queue: InlineQueue
) -> None:
    run = alice.post("/runs", {"graph": "ask"}).json()
    response = alice.post(f"/runs/{run['id']}/input", {"value": "early"})
    assert response.status_code == 409
    assert error_of(response)["code"] == "not_waiting_for_input"
    early = alice.post(f"/runs/{run['id']}/input", {"value": "early", "input_id": "question@1"})
    assert early.status_code == 200
    queue.drain()
    assert alice.get(f"/runs/{run['id']}").json()["state"]["name"] == "early"


def test_input_needs_a_value_and_is_size_limited(
    alice: Api, queue: InlineQueue, settings: Any
) -> None:
    run = _start(alice, queue, "ask")
    missing = alice.post(f"/runs/{run['id']}/input", {"input_id": "question@1"})
    assert missing.status_code == 422
    assert "`value`" in error_of(missing)["message"]
    settings.RUNYARD = {**settings.RUNYARD, "MAX_INPUT_BYTES": 100}
    big = alice.post(f"/runs/{run['id']}/input", {"value": "x" * 200})
    assert big.status_code == 413
    assert error_of(big)["details"]["field"] == "value"


def test_guidance_reaches_the_next_node(alice: Api, queue: InlineQueue) -> None:
    run = _start(alice, queue, "approve")
    response = alice.post(f"/runs/{run['id']}/guidance", {"message": "be brief"})
    assert response.status_code == 200
    alice.post(f"/runs/{run['id']}/approvals/gate@1", {"decision": "approve"})
    queue.drain()
    assert alice.get(f"/runs/{run['id']}").json()["state"]["guidance"] == ["be brief"]


def test_empty_guidance_is_422(alice: Api, queue: InlineQueue) -> None:
    run = alice.post("/runs", {"graph": "chain"}).json()
    response = alice.post(f"/runs/{run['id']}/guidance", {"message": ""})
    assert response.status_code == 422
    assert "`message`" in error_of(response)["message"]


# --- approvals -----------------------------------------------------------------------------------


def test_approve_resumes_the_run(alice: Api, queue: InlineQueue) -> None:
    run = _start(alice, queue, "approve")
    assert run["waiting_for"]["id"] == "gate@1"
    response = alice.post(f"/runs/{run['id']}/approvals/gate@1", {"decision": "approve"})
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    queue.drain()
    assert alice.get(f"/runs/{run['id']}").json()["state"]["log"] == ["before", "after"]


def test_reject_with_a_patch(alice: Api, queue: InlineQueue) -> None:
    run = _start(alice, queue, "approve")
    response = alice.post(
        f"/runs/{run['id']}/approvals/gate@1",
        {"decision": "reject", "patch": {"reason": "too risky"}},
    )
    assert response.status_code == 200
    queue.drain()
    state = alice.get(f"/runs/{run['id']}").json()["state"]
    assert state["log"] == ["before", "rejected"]
    assert state["reason"] == "too risky"


def test_approve_along_a_chosen_route(alice: Api, queue: InlineQueue) -> None:
    run = _start(alice, queue, "routed")
    response = alice.post(
        f"/runs/{run['id']}/approvals/gate@1", {"decision": "approve", "route": "alt"}
    )
    assert response.status_code == 200
    queue.drain()
    assert alice.get(f"/runs/{run['id']}").json()["state"]["log"] == ["before", "alt"]

    other = _start(alice, queue, "routed")
    bad = alice.post(
        f"/runs/{other['id']}/approvals/gate@1", {"decision": "approve", "route": "done"}
    )
    assert bad.status_code == 422
    assert error_of(bad)["details"]["field"] == "route"


def test_a_decision_may_come_before_the_run_gets_there(alice: Api, queue: InlineQueue) -> None:
    run = alice.post("/runs", {"graph": "approve"}).json()
    response = alice.post(f"/runs/{run['id']}/approvals/gate@*", {"decision": "approve"})
    assert response.status_code == 200
    assert queue.drain() == ["succeeded"]


def test_bad_approvals_are_refused_clearly(alice: Api, queue: InlineQueue) -> None:
    run = _start(alice, queue, "approve")
    url = f"/runs/{run['id']}/approvals"
    maybe = alice.post(f"{url}/gate@1", {"decision": "maybe"})
    assert maybe.status_code == 422 and "`decision`" in error_of(maybe)["message"]
    assert alice.post(f"{url}/before@1", {"decision": "approve"}).status_code == 404
    bad_id = alice.post(f"{url}/gate@first", {"decision": "approve"})
    assert bad_id.status_code == 422  # the documented pattern: node@N or node@*
    assert [p["where"] for p in error_of(bad_id)["details"]["problems"]] == ["approval_id"]
    assert alice.post(f"{url}/gate@1", {"decision": "approve"}).status_code == 200
    twice = alice.post(f"{url}/gate@1", {"decision": "reject"})
    assert twice.status_code == 409 and error_of(twice)["code"] == "already_decided"
    not_object = alice.post(f"{url}/gate@2", {"decision": "approve", "patch": [1]})
    assert not_object.status_code == 422


# --- roles and sessions --------------------------------------------------------------------------

CONTROLS: list[tuple[str, dict[str, Any] | None]] = [
    ("cancel", {"action": "interrupt"}),
    ("pause", None),
    ("resume", None),
    ("input", {"value": 1, "input_id": "gate@1"}),
    ("guidance", {"message": "hi"}),
    ("approvals/gate@1", {"decision": "approve"}),
]


@pytest.mark.parametrize(("path", "body"), CONTROLS)
def test_viewers_cannot_use_controls(
    tenant: Tenant, alice: Api, queue: InlineQueue, path: str, body: dict[str, Any] | None
) -> None:
    run = _start(alice, queue, "approve")
    response = key_client(tenant, Role.VIEWER).post(f"/runs/{run['id']}/{path}", body)
    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    assert Run.objects.get(public_id=run["id"]).status == "waiting"
    assert not Control.objects.exists()


def test_session_writes_need_the_csrf_token(alice: Api, member: Any, queue: InlineQueue) -> None:
    run = _start(alice, queue, "approve")
    without = session_client(member, csrf=False).post(
        f"/runs/{run['id']}/approvals/gate@1", {"decision": "approve"}
    )
    assert without.status_code == 403
    assert error_of(without)["code"] == "csrf_failed"
    assert not Control.objects.exists()

    with_token = session_client(member).post(
        f"/runs/{run['id']}/approvals/gate@1", {"decision": "approve"}
    )
    assert with_token.status_code == 200
    assert Control.objects.get().by == "alice@example.com"


def test_session_reads_need_no_csrf_token(alice: Api, viewer: Any, queue: InlineQueue) -> None:
    run = _start(alice, queue, "chain")
    response = session_client(viewer, csrf=False).get(f"/runs/{run['id']}")
    assert response.status_code == 200


def test_controls_on_an_unknown_run_are_404(alice: Api) -> None:
    for path, body in CONTROLS:
        response = alice.post(f"/runs/{uuid.uuid4()}/{path}", body)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "not_found"


# --- a busy database -----------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return virtual_clock(monkeypatch)


@pytest.mark.parametrize("control", ["cancel", "pause"])
def test_controls_on_a_busy_database_are_retried_not_503(
    alice: Api, queue: InlineQueue, clock: Clock, control: str
) -> None:
    run = alice.post("/runs", {"graph": "chain"}).json()
    with locked_runs_table(times=3) as failed:
        response = alice.post(f"/runs/{run['id']}/{control}")
    assert response.status_code == 200, response.content
    assert len(failed) == 3 and len(clock.sleeps) == 3
    assert response.json()["status"] == {"cancel": "cancelled", "pause": "paused"}[control]
    if control == "pause":
        with locked_runs_table(times=2):
            resumed = alice.post(f"/runs/{run['id']}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] == "queued"


def test_a_database_busy_past_the_retry_bound_is_503_with_nothing_changed(
    alice: Api, queue: InlineQueue, clock: Clock
) -> None:
    run = alice.post("/runs", {"graph": "chain"}).json()
    with locked_runs_table(times=None):
        response = alice.post(f"/runs/{run['id']}/cancel")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert error_of(response)["code"] == "unavailable"
    assert alice.get(f"/runs/{run['id']}").json()["status"] == "queued"
