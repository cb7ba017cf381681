"""/api/v1/webhooks: CRUD, roles, bounds, another tenant's 404; `webhook` on POST /runs."""

from __future__ import annotations

import uuid

import pytest

from runs.services import create_graph_version
from tenants.models import Role, Tenant
from tests.runs.conftest import chain_spec
from tests.runs.test_api__helpers import error_of, key_client
from tests.webhooks.conftest import InlineQueue, Receiver
from webhooks import delivery
from webhooks.models import Delivery, RunWebhook, Subscription
from webhooks.services import create_subscription

pytestmark = pytest.mark.django_db(transaction=True)

KEYS = {
    "id",
    "url",
    "events",
    "enabled",
    "include_state",
    "description",
    "created_at",
    "updated_at",
}


def _patch(api, path: str, body: dict) -> object:
    import json

    return api.client.patch(
        "/api/v1" + path, json.dumps(body), content_type="application/json", headers=api.headers
    )


def _delete(api, path: str) -> object:
    return api.client.delete("/api/v1" + path, headers=api.headers)


def test_crud_round_trip(hook_tenant: Tenant, receiver: Receiver) -> None:
    api = key_client(hook_tenant, Role.ADMIN)
    created = api.post("/webhooks", {"url": receiver.url, "events": ["run.failed", "run.failed"]})
    assert created.status_code == 201, created.json()
    hook = created.json()
    assert set(hook) == KEYS
    assert hook["events"] == ["run.failed"] and hook["enabled"] and hook["include_state"]

    default = api.post("/webhooks", {"url": receiver.url + "?all"}).json()
    assert default["events"] == [
        "run.succeeded",
        "run.failed",
        "run.cancelled",
        "run.waiting",
        "run.interrupted",
        "run.timed_out",
    ]
    listed = api.get("/webhooks", {"limit": 1}).json()
    assert [h["id"] for h in listed["items"]] == [hook["id"]] and listed["next_cursor"]
    rest = api.get("/webhooks", {"limit": 1, "cursor": listed["next_cursor"]}).json()
    assert [h["id"] for h in rest["items"]] == [default["id"]] and rest["next_cursor"] is None

    changed = _patch(api, f"/webhooks/{hook['id']}", {"enabled": False, "include_state": False})
    assert changed.status_code == 200
    assert changed.json()["enabled"] is False and changed.json()["url"] == receiver.url
    assert api.get(f"/webhooks/{hook['id']}").json()["include_state"] is False

    assert _delete(api, f"/webhooks/{hook['id']}").status_code == 204
    assert api.get(f"/webhooks/{hook['id']}").status_code == 404
    assert Subscription.objects.count() == 1


def test_refused_and_malformed_subscriptions_are_422(hook_tenant: Tenant) -> None:
    api = key_client(hook_tenant, Role.ADMIN)
    refused = api.post("/webhooks", {"url": "https://elsewhere.example.com/x"})
    assert refused.status_code == 422
    assert error_of(refused)["code"] == "webhook_refused"
    assert error_of(refused)["details"]["field"] == "url"
    bad_event = api.post("/webhooks", {"url": "http://127.0.0.1/x", "events": ["run.started"]})
    assert bad_event.status_code == 422
    too_long = api.post("/webhooks", {"url": "http://127.0.0.1/" + "a" * 2000})
    assert too_long.status_code == 422
    scheme = api.post("/webhooks", {"url": "file:///etc/passwd"})
    assert scheme.status_code == 422 and error_of(scheme)["code"] == "webhook_refused"
    empty_events = _patch(api, f"/webhooks/{uuid.uuid4()}", {"events": []})
    assert empty_events.status_code == 422


def test_subscriptions_per_tenant_are_bounded(
    hook_tenant: Tenant, receiver: Receiver, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "WEBHOOK_MAX_SUBSCRIPTIONS": 2}
    api = key_client(hook_tenant, Role.ADMIN)
    for i in range(2):
        assert api.post("/webhooks", {"url": f"{receiver.url}?{i}"}).status_code == 201
    third = api.post("/webhooks", {"url": receiver.url})
    assert third.status_code == 409 and error_of(third)["code"] == "too_many_webhooks"


def test_members_read_but_only_admins_manage(hook_tenant: Tenant, receiver: Receiver) -> None:
    admin = key_client(hook_tenant, Role.ADMIN)
    member = key_client(hook_tenant, Role.MEMBER)
    hook = admin.post("/webhooks", {"url": receiver.url}).json()
    assert member.get("/webhooks").status_code == 200
    assert member.get(f"/webhooks/{hook['id']}").status_code == 200
    assert member.post("/webhooks", {"url": receiver.url}).status_code == 403
    assert _patch(member, f"/webhooks/{hook['id']}", {"enabled": False}).status_code == 403
    assert _delete(member, f"/webhooks/{hook['id']}").status_code == 403
    assert member.post("/webhooks/secret").status_code == 403


def test_another_tenants_webhook_is_404(
    hook_tenant: Tenant, other_tenant: Tenant, receiver: Receiver
) -> None:
    alice = key_client(hook_tenant, Role.ADMIN)
    bob = key_client(other_tenant, Role.OWNER)
    hook = alice.post("/webhooks", {"url": receiver.url}).json()
    path = f"/webhooks/{hook['id']}"
    for response in (
        bob.get(path),
        _patch(bob, path, {"enabled": False}),
        _delete(bob, path),
        bob.get(path + "/deliveries"),
    ):
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"
    assert bob.get("/webhooks").json()["items"] == []
    assert Subscription.objects.get().enabled is True
    assert alice.get(f"/webhooks/{uuid.uuid4()}").status_code == 404
    # Ids are UUIDs in the document: anything else is refused by its shape.
    assert alice.get("/webhooks/not-a-uuid").status_code == 422


def test_rotated_secret_is_returned_once_and_signs_from_then_on(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    api = key_client(hook_tenant, Role.ADMIN)
    hook = api.post("/webhooks", {"url": receiver.url}).json()
    first = api.post("/webhooks/secret").json()["secret"]
    second = api.post("/webhooks/secret").json()["secret"]
    assert first != second and second.startswith("whsec_")
    assert second not in str(api.get("/webhooks").json())
    api.post("/runs", {"graph": "chain"})
    queue.drain()
    assert delivery.deliver_due_webhooks() == ["delivered"]
    assert receiver.verify(receiver.requests[0], second)
    assert not receiver.verify(receiver.requests[0], first)
    deliveries = api.get(f"/webhooks/{hook['id']}/deliveries").json()
    assert [d["status"] for d in deliveries["items"]] == ["delivered"]
    assert deliveries["items"][0]["last_outcome"] == "delivered"


def test_run_started_with_a_webhook_delivers_to_it(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue, kicked: list[int]
) -> None:
    api = key_client(hook_tenant, Role.MEMBER)
    response = api.post("/runs", {"graph": "chain", "webhook": receiver.url})
    assert response.status_code == 201
    assert "webhook" not in response.json()  # the run's shape is unchanged
    assert RunWebhook.objects.get().url == receiver.url
    queue.drain()
    assert delivery.deliver_webhooks(kicked) == ["delivered"]
    body = receiver.requests[0].json()
    assert body["run"]["id"] == response.json()["id"] and body["event"] == "run.succeeded"


def test_run_webhook_is_checked_like_a_subscription(hook_tenant: Tenant) -> None:
    api = key_client(hook_tenant, Role.MEMBER)
    refused = api.post("/runs", {"graph": "chain", "webhook": "http://169.254.169.254/latest"})
    assert refused.status_code == 422
    assert error_of(refused)["code"] == "webhook_refused"
    assert error_of(refused)["details"]["field"] == "webhook"
    too_long = api.post("/runs", {"graph": "chain", "webhook": "http://a/" + "b" * 2100})
    assert too_long.status_code == 422
    assert not RunWebhook.objects.exists() and not Delivery.objects.exists()


def test_idempotent_replay_with_another_webhook_is_a_conflict(
    hook_tenant: Tenant, receiver: Receiver, queue: InlineQueue
) -> None:
    api = key_client(hook_tenant, Role.MEMBER)
    key = {"Idempotency-Key": "once"}
    first = api.post("/runs", {"graph": "chain", "webhook": receiver.url}, headers=key)
    again = api.post("/runs", {"graph": "chain", "webhook": receiver.url}, headers=key)
    assert first.status_code == 201 and again.status_code == 200
    other = api.post("/runs", {"graph": "chain", "webhook": receiver.url + "?x"}, headers=key)
    assert other.status_code == 409
    assert RunWebhook.objects.count() == 1


def test_tenant_with_an_empty_allow_list_cannot_use_webhooks(tenant: Tenant) -> None:
    create_graph_version(tenant, chain_spec())
    api = key_client(tenant, Role.MEMBER)
    refused = api.post("/runs", {"graph": "chain", "webhook": "https://hooks.example.com/x"})
    assert refused.status_code == 422  # an empty allow-list allows no host, as for http nodes


def test_urls_and_events_are_refused_by_their_documented_shape(hook_tenant: Tenant) -> None:
    """What the document's `pattern` and `minItems` say is what the API does: whitespace
    around a URL is stripped, inside it (or a blank URL, or no event) is a shape error."""
    api = key_client(hook_tenant, Role.ADMIN)
    padded = api.post("/webhooks", {"url": "  http://127.0.0.1/x\n"})
    assert padded.status_code == 201 and padded.json()["url"] == "http://127.0.0.1/x"
    for url in ("   ", "http://127.0.0.1/a b", "http://127.0.0.1/\x01"):
        refused = api.post("/webhooks", {"url": url})
        assert refused.status_code == 422 and error_of(refused)["code"] == "validation_error"
    no_events = api.post("/webhooks", {"url": "http://127.0.0.1/x", "events": []})
    assert no_events.status_code == 422 and error_of(no_events)["code"] == "validation_error"
    assert Subscription.objects.count() == 1


def test_a_cursor_no_list_returned_is_a_400(hook_tenant: Tenant) -> None:
    api = key_client(hook_tenant, Role.MEMBER)
    hook = create_subscription(hook_tenant, url="http://127.0.0.1/x")
    for path in ("/webhooks", f"/webhooks/{hook.public_id}/deliveries"):
        bad = api.get(path, {"cursor": "qRaEQFXO8f"})
        assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_cursor"
