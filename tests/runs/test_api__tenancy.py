"""Every endpoint: another tenant's objects are 404, roles gate writes, no key is 401."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config.api import api
from runs.models import Artifact, Checkpoint, Control, Graph, Run, Thread
from schedules.models import Cron
from schedules.services import create_cron
from tenants.models import Role, Tenant
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import Api, anonymous, error_of, key_client
from webhooks.models import Subscription
from webhooks.services import create_subscription

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class World:
    """Alice's tenant with one of everything."""

    run: str  # waiting at its approval
    done: str  # finished, with an artifact
    thread: str
    checkpoint: str
    artifact: str
    cron: str
    webhook: str


@pytest.fixture
def world(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, settings: Any, tmp_path: Path
) -> World:
    settings.MEDIA_ROOT = tmp_path
    spec = chain_spec()
    spec["nodes"]["n0"]["artifacts"] = [{"name": "a.txt", "text": "hi"}]
    make_graph(tenant, spec)
    make_graph(tenant, approval_spec())
    alice = key_client(tenant)
    thread = alice.post("/threads", {}).json()["id"]
    done = alice.post("/runs", {"graph": "chain", "thread_id": thread}).json()["id"]
    queue.drain()
    run = alice.post("/runs", {"graph": "approve"}).json()["id"]
    queue.drain()
    checkpoint = Checkpoint.objects.filter(thread__public_id=thread).first()
    assert checkpoint is not None
    tenant.http_allowed_hosts = ["127.0.0.1"]
    tenant.http_allow_private = True
    tenant.save(update_fields=["http_allowed_hosts", "http_allow_private"])
    cron = create_cron(tenant, graph="approve", schedule="@daily")
    webhook = create_subscription(tenant, url="http://127.0.0.1:9/hook")
    return World(
        run=run,
        done=done,
        thread=thread,
        checkpoint=str(checkpoint.public_id),
        artifact=str(Artifact.objects.get().public_id),
        cron=str(cron.public_id),
        webhook=str(webhook.public_id),
    )


# (method, path template, body) for every operation that addresses one of Alice's objects.
OBJECT_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/graphs/{graph}", None),
    ("GET", "/graphs/{graph}/versions/1", None),
    ("GET", "/threads/{thread}", None),
    ("GET", "/threads/{thread}/checkpoints", None),
    ("GET", "/runs/{run}", None),
    ("GET", "/runs/{run}/wait?timeout=0", None),
    ("GET", "/runs/{run}/events/stream", None),
    ("GET", "/runs/{run}/steps", None),
    ("GET", "/runs/{run}/events", None),
    ("GET", "/runs/{done}/artifacts", None),
    ("GET", "/artifacts/{artifact}/content", None),
    ("POST", "/runs/{run}/cancel", {"action": "interrupt"}),
    ("POST", "/runs/{run}/pause", None),
    ("POST", "/runs/{run}/resume", None),
    ("POST", "/runs/{done}/retry", None),
    ("POST", "/runs/{run}/input", {"value": 1, "input_id": "gate@1"}),
    ("POST", "/runs/{run}/guidance", {"message": "hi"}),
    ("POST", "/runs/{run}/approvals/gate@1", {"decision": "approve"}),
    ("POST", "/runs", {"graph": "approve"}),
    ("POST", "/runs", {"graph": "bobs", "thread_id": "{thread}"}),
    ("POST", "/runs", {"graph": "bobs", "from_checkpoint": "{checkpoint}"}),
    ("GET", "/crons/{cron}", None),
    ("PATCH", "/crons/{cron}", {"enabled": False}),
    ("DELETE", "/crons/{cron}", None),
    ("GET", "/webhooks/{webhook}", None),
    ("GET", "/webhooks/{webhook}/deliveries", None),
    ("PATCH", "/webhooks/{webhook}", {"enabled": False}),
    ("DELETE", "/webhooks/{webhook}", None),
]
# Operations that address no object (tenancy shows in what they list or create).
COLLECTION_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/runs", None),
    ("GET", "/graphs", None),
    ("POST", "/graphs", chain_spec(name="new")),
    ("POST", "/graphs/validate", chain_spec()),
    ("POST", "/threads", {}),
    ("GET", "/usage", None),
    ("GET", "/crons", None),
    ("POST", "/crons", {"graph": "bobs", "schedule": "@daily"}),
    ("GET", "/webhooks", None),
    ("POST", "/webhooks", {"url": "http://127.0.0.1:9/bob"}),
    ("POST", "/webhooks/secret", None),
    ("POST", "/events", {"name": "order.created", "payload": {}}),
]


def _fill(value: Any, world: World) -> Any:
    names = {**vars(world), "graph": "approve"}
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return value


def _call(client: Api, method: str, path: str, body: Any) -> Any:
    if method == "GET":
        return client.client.get("/api/v1" + path, headers=client.headers)
    if method in ("PATCH", "DELETE"):
        return client.client.generic(
            method,
            "/api/v1" + path,
            "" if body is None else json.dumps(body),
            content_type="application/json",
            headers=client.headers,
        )
    return client.post(path, body)


@pytest.mark.parametrize(("method", "path", "body"), OBJECT_ENDPOINTS)
def test_tenant_b_gets_404_for_tenant_a_objects(
    world: World,
    other_tenant: Tenant,
    make_graph: Any,
    method: str,
    path: str,
    body: Any,
) -> None:
    make_graph(other_tenant, chain_spec(name="bobs"))
    before = (Run.objects.count(), Control.objects.count(), Thread.objects.count())
    bob = key_client(other_tenant, Role.OWNER)  # the highest role: only tenancy stops it
    response = _call(bob, method, _fill(path, world), _fill(body, world))
    assert response.status_code == 404, response.content
    assert error_of(response)["code"] == "not_found"
    assert "gate" not in response.content.decode()  # nothing of Alice's run shows through
    assert (Run.objects.count(), Control.objects.count(), Thread.objects.count()) == before
    assert Run.objects.get(public_id=world.run).status == "waiting"
    assert Cron.objects.get(public_id=world.cron).enabled  # untouched
    assert Subscription.objects.get(public_id=world.webhook).enabled


def test_tenant_b_lists_only_its_own_things(world: World, other_tenant: Tenant) -> None:
    bob = key_client(other_tenant, Role.OWNER)
    assert bob.get("/runs").json() == {"items": [], "next_cursor": None}
    assert bob.get("/runs", {"thread_id": world.thread}).json()["items"] == []
    assert bob.get("/graphs").json() == {"items": [], "next_cursor": None}
    usage = bob.get("/usage").json()
    assert usage["tenant"]["slug"] == "bob-co" and usage["day"]["runs"] == 0


def test_tenant_b_graph_of_the_same_name_is_its_own(
    world: World, tenant: Tenant, other_tenant: Tenant
) -> None:
    response = key_client(other_tenant, Role.OWNER).post("/graphs", approval_spec())
    assert response.status_code == 201 and response.json()["version"] == 1
    assert Graph.objects.filter(tenant=tenant, name="approve").count() == 1
    assert key_client(other_tenant).post("/graphs/validate", chain_spec()).status_code == 200


def test_every_operation_has_a_cross_tenant_test() -> None:
    """Adding an endpoint without a cross-tenant case here fails this test."""
    schema = api.get_openapi_schema(path_prefix="")
    covered = {(m, p.split("?")[0]) for m, p, _ in OBJECT_ENDPOINTS + COLLECTION_ENDPOINTS}
    templates = {
        "/graphs/{name}": "/graphs/{graph}",
        "/graphs/{name}/versions/{version}": "/graphs/{graph}/versions/1",
        "/threads/{thread_id}": "/threads/{thread}",
        "/threads/{thread_id}/checkpoints": "/threads/{thread}/checkpoints",
        "/artifacts/{artifact_id}/content": "/artifacts/{artifact}/content",
        "/runs/{run_id}/approvals/{approval_id}": "/runs/{run}/approvals/gate@1",
        "/runs/{run_id}/artifacts": "/runs/{done}/artifacts",
        "/runs/{run_id}/retry": "/runs/{done}/retry",
        "/crons/{cron_id}": "/crons/{cron}",
        "/webhooks/{webhook_id}": "/webhooks/{webhook}",
        "/webhooks/{webhook_id}/deliveries": "/webhooks/{webhook}/deliveries",
    }
    for path, operations in schema["paths"].items():
        short = path.removeprefix("/api/v1")
        if short in PUBLIC_PATHS:
            continue  # no tenant's data: see the test below
        mapped = templates.get(short, short.replace("{run_id}", "{run}"))
        for method in operations:
            assert (method.upper(), mapped) in covered, f"{method.upper()} {short}"


# --- roles ---------------------------------------------------------------------------------------

WRITES: list[tuple[str, Any, str]] = [
    ("/graphs", chain_spec(name="new"), Role.ADMIN),
    ("/threads", {}, Role.MEMBER),
    ("/runs", {"graph": "chain"}, Role.MEMBER),
    ("/runs/{run}/guidance", {"message": "hi"}, Role.MEMBER),
    ("/runs/{run}/approvals/gate@1", {"decision": "approve"}, Role.MEMBER),
    ("/runs/{run}/input", {"value": 1, "input_id": "gate@9"}, Role.MEMBER),
    ("/runs/{run}/pause", None, Role.MEMBER),
    ("/runs/{run}/cancel", {"action": "interrupt"}, Role.MEMBER),
]
RANK: list[str] = [Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER]


@pytest.mark.parametrize(("path", "body", "needed"), WRITES)
@pytest.mark.parametrize("role", RANK)
def test_writes_need_their_role(
    world: World, tenant: Tenant, path: str, body: Any, needed: str, role: str
) -> None:
    response = key_client(tenant, role).post(_fill(path, world), body)
    if RANK.index(role) >= RANK.index(needed):
        # The world's graph has no input node: past the role check, the service's 404 says so.
        allowed = (404,) if path.endswith("/input") else (200, 201)
        assert response.status_code in allowed, response.content
    else:
        assert response.status_code == 403
        error = error_of(response)
        assert error["code"] == "forbidden"
        assert error["details"]["required_role"] == needed


def test_viewers_read_everything(world: World, tenant: Tenant) -> None:
    viewer = key_client(tenant, Role.VIEWER)
    for method, path, _ in OBJECT_ENDPOINTS:
        if method == "GET":
            response = _call(viewer, method, _fill(path, world), None)
            assert response.status_code == 200, path
    for path in ("/runs", "/graphs", "/usage"):
        assert viewer.get(path).status_code == 200


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "body"), OBJECT_ENDPOINTS + COLLECTION_ENDPOINTS)
@pytest.mark.parametrize("key", [None, "Bearer ry_nope_nope", "Basic abc"])
def test_missing_or_bad_credentials_are_401(
    tenant: Tenant, method: str, path: str, body: Any, key: str | None
) -> None:
    key_client(tenant)  # a valid key exists; it is just not the one sent
    ids = [str(uuid.uuid4()) for _ in range(7)]
    world = World(*ids)
    client = anonymous()
    if key is not None:
        client.headers = {"Authorization": key}
    response = _call(client, method, _fill(path, world), _fill(body, world))
    assert response.status_code == 401
    expected = "invalid_key" if key and key.startswith("Bearer") else "missing_credentials"
    assert error_of(response)["code"] == expected
    assert response["WWW-Authenticate"].startswith("Bearer")


# Operations that hold no tenant's data and need no credentials.
PUBLIC_PATHS = {"/schemas/graph-spec.json"}


def test_public_operations_answer_everyone_the_same(
    world: World, tenant: Tenant, other_tenant: Tenant
) -> None:
    clients = [key_client(tenant, Role.OWNER), key_client(other_tenant, Role.VIEWER), anonymous()]
    answers = [client.get(path).content for path in sorted(PUBLIC_PATHS) for client in clients]
    assert len(set(answers)) == 1 and b'"$defs"' in answers[0]
