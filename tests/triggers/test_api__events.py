"""`POST /api/v1/events`: subscribed graphs start through the tenant gate, once per event id."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from runs.models import Run
from runs.services import create_graph_version
from tenants.models import Role, Tenant
from tenants.services import create_api_key
from tests.runs.conftest import chain_spec
from tests.runs.test_api__helpers import Api, error_of, key_client
from tests.triggers.conftest import echo_spec
from triggers.models import ReceivedEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(tenant: Tenant, queue: Any) -> Api:
    create_graph_version(tenant, echo_spec("on-order", triggers=[{"event": "order.created"}]))
    create_graph_version(
        tenant,
        echo_spec(
            "mapped",
            triggers=[
                {"event": "order.created", "input": {"text": "'order ' ~ payload.order"}},
                {"event": "order.cancelled"},
            ],
        ),
    )
    create_graph_version(tenant, chain_spec("unsubscribed"))
    _, raw = create_api_key(tenant, name="shop-bot", role=Role.MEMBER)
    return Api(Client(), {"Authorization": f"Bearer {raw}"})


def test_an_event_starts_every_subscribed_graph_with_202(alice: Api, tenant: Tenant) -> None:
    response = alice.post("/events", {"name": "order.created", "payload": {"order": 42}})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["name"] == "order.created" and body["duplicate"] is False
    assert body["event_id"] is None and body["refused"] == []
    started = {r["graph"]: r for r in body["runs"]}
    assert set(started) == {"on-order", "mapped"}
    plain = Run.objects.get(public_id=started["on-order"]["run_id"])
    mapped = Run.objects.get(public_id=started["mapped"]["run_id"])
    assert plain.input == {"order": 42}  # no mapping: the payload is the input
    assert mapped.input == {"text": "order 42"}  # the trigger's expressions over the payload
    for run in (plain, mapped):
        assert run.created_by == "trigger:order.created"
        assert run.metadata == {"event": "order.created", "event_id": body["id"]}
        assert run.tenant_id == tenant.pk
    run_out = alice.get(f"/runs/{plain.public_id}").json()
    assert run_out["created_by"] == "trigger:order.created"


def test_an_event_nobody_subscribes_to_starts_nothing(alice: Api) -> None:
    response = alice.post("/events", {"name": "invoice.paid", "payload": {}})
    assert response.status_code == 202
    assert response.json()["runs"] == [] and not Run.objects.exists()


def test_the_latest_version_runs_and_its_triggers_are_the_graphs(
    alice: Api, tenant: Tenant
) -> None:
    create_graph_version(tenant, echo_spec("on-order", n=2))  # v2 subscribes to nothing
    create_graph_version(
        tenant, echo_spec("unsubscribed", triggers=[{"event": "order.created"}])
    )  # v2 subscribes
    body = alice.post("/events", {"name": "order.created", "payload": {"order": 1}}).json()
    assert {(r["graph"], r["version"]) for r in body["runs"]} == {
        ("mapped", 1),
        ("unsubscribed", 2),
    }


def test_a_repeated_event_id_starts_nothing_new(alice: Api) -> None:
    event = {"name": "order.cancelled", "payload": {"order": 7}, "id": "evt-1"}
    first = alice.post("/events", event)
    again = alice.post("/events", event)
    assert first.status_code == again.status_code == 202
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    assert again.json()["runs"] == first.json()["runs"] and len(first.json()["runs"]) == 1
    assert again.json()["id"] == first.json()["id"]
    assert Run.objects.count() == 1 and ReceivedEvent.objects.count() == 1
    # Another id (or none) is another event.
    assert alice.post("/events", {**event, "id": "evt-2"}).json()["duplicate"] is False
    assert Run.objects.count() == 2


def test_event_ids_are_per_tenant(alice: Api, other_tenant: Tenant, queue: Any) -> None:
    create_graph_version(other_tenant, echo_spec("theirs", triggers=[{"event": "order.cancelled"}]))
    bob = key_client(other_tenant)
    event = {"name": "order.cancelled", "payload": {"order": 7}, "id": "shared-id"}
    mine = alice.post("/events", event).json()
    theirs = bob.post("/events", event).json()
    assert theirs["duplicate"] is False
    assert [r["graph"] for r in mine["runs"]] == ["mapped"]
    assert [r["graph"] for r in theirs["runs"]] == ["theirs"]  # never another tenant's graph
    assert Run.objects.filter(tenant=other_tenant).count() == 1


def test_limits_refuse_a_run_and_the_others_still_start(alice: Api, tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=1)
    body = alice.post("/events", {"name": "order.created", "payload": {"order": 3}}).json()
    assert len(body["runs"]) == 1
    (refusal,) = body["refused"]
    assert refusal["code"] == "limit_exceeded.max_queued_runs" and refusal["message"]
    assert refusal["graph"] in {"on-order", "mapped"}
    assert Run.objects.count() == 1
    assert ReceivedEvent.objects.get().refused == [refusal]


def test_a_payload_that_is_not_an_object_is_refused_where_it_is_the_input(alice: Api) -> None:
    body = alice.post("/events", {"name": "order.created", "payload": [1, 2]}).json()
    assert [r["graph"] for r in body["refused"]] == ["on-order"]
    assert body["refused"][0]["code"] == "invalid_input"
    # The mapped trigger reads `payload.order` of a list: undefined, so "order " is its text.
    assert [r["graph"] for r in body["runs"]] == ["mapped"]


def test_a_failing_input_expression_is_a_refusal_not_a_500(tenant: Tenant, queue: Any) -> None:
    create_graph_version(
        tenant,
        echo_spec("bad", triggers=[{"event": "e", "input": {"text": "payload.x / 0"}}]),
    )
    body = key_client(tenant).post("/events", {"name": "e", "payload": {"x": 1}}).json()
    assert body["runs"] == []
    assert body["refused"][0]["code"] == "trigger_input_failed"


def test_bad_events_are_422_and_viewers_403(alice: Api, tenant: Tenant) -> None:
    for bad in (
        {"payload": {}},
        {"name": "", "payload": {}},
        {"name": "has space"},
        {"name": "x" * 101},
        {"name": "ok", "id": ""},
        {"name": "ok", "id": "i" * 201},
        {"name": "ok", "extra": 1},
    ):
        response = alice.post("/events", bad)
        assert response.status_code == 422, bad
        error_of(response)
    viewer = key_client(tenant, role=Role.VIEWER)
    assert viewer.post("/events", {"name": "order.created"}).status_code == 403
    assert not Run.objects.exists() and not ReceivedEvent.objects.exists()


def test_a_payload_over_the_input_limit_is_413(alice: Api, settings: Any) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_INPUT_BYTES": 100}
    response = alice.post("/events", {"name": "order.created", "payload": {"x": "y" * 200}})
    assert response.status_code == 413
    assert not ReceivedEvent.objects.exists()


def test_deliveries_of_one_event_id_racing_start_one_run(alice: Api, tenant: Tenant) -> None:
    from tests.runs.test_concurrency import in_threads
    from triggers.services import receive_event

    outcomes: list[bool] = []

    def deliver(i: int) -> None:
        received = receive_event(
            tenant, name="order.cancelled", payload={"order": i}, event_id="retry-storm"
        )
        outcomes.append(received.duplicate)

    in_threads(4, deliver)
    assert sorted(outcomes) == [False, True, True, True]
    assert Run.objects.count() == 1 and ReceivedEvent.objects.count() == 1
