"""Dashboard access: login, membership, roles, tenant switching, and another tenant's objects."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import timezone

from runs.models import Artifact, Run, Step
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from tenants.auth import SESSION_TENANT_KEY
from tenants.models import Membership, Role, Tenant
from tests.factories import make_tenant, make_user
from tests.runs.conftest import approval_spec

pytestmark = pytest.mark.django_db

PAGES = ["/", "/runs/", "/graphs/", "/usage/"]


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def run(tenant: Tenant) -> Run:
    create_graph_version(tenant, approval_spec())
    return create_run(tenant, graph="approve", input={"x": 1})


@pytest.fixture
def artifact(run: Run) -> Artifact:
    now = timezone.now()
    step = Step.objects.create(
        run=run, index=1, node="before", status="completed", started_at=now, finished_at=now
    )
    row = Artifact(
        tenant=run.tenant,
        run=run,
        step=step,
        name="note.txt",
        content_type="text/plain; charset=utf-8",
        size=5,
        sha256=hashlib.sha256(b"hello").hexdigest(),
    )
    row.file.save("note.txt", ContentFile(b"hello"), save=False)
    row.save()
    return row


def object_urls(run: Run, artifact: Artifact) -> list[str]:
    return [
        f"/runs/{run.public_id}/",
        f"/runs/{run.public_id}/live/",
        "/graphs/approve/",
        f"/artifacts/{artifact.public_id}/",
    ]


def control_urls(run: Run) -> list[str]:
    return [
        f"/runs/{run.public_id}/{action}/"
        for action in ("cancel", "pause", "resume", "approval", "input", "guidance")
    ]


def test_anonymous_is_sent_to_login(run: Run, artifact: Artifact) -> None:
    client = Client()
    for url in PAGES + object_urls(run, artifact):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next="), url
    for url in control_urls(run) + ["/graphs/", "/graphs/approve/"]:
        response = client.post(url, {"action": "interrupt"})
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_login_page_logs_in_and_returns_to_next(member: Any) -> None:
    client = Client()
    page = client.get("/login/?next=/usage/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="login-form"' in html and 'name="password"' in html
    assert 'for="id_username"' in html  # labelled fields
    bad = client.post("/login/", {"username": member.username, "password": "nope"})
    assert bad.status_code == 200 and "msg-error" in bad.content.decode()
    good = client.post(
        "/login/", {"username": member.username, "password": "pw-123456789", "next": "/usage/"}
    )
    assert good.status_code == 302 and good["Location"] == "/usage/"
    assert client.get("/usage/").status_code == 200


def test_logout_is_a_post_and_ends_the_session(member: Any) -> None:
    client = login(member)
    assert 'action="/logout/"' in client.get("/").content.decode()
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_every_page_renders_for_a_member(member: Any, run: Run, artifact: Artifact) -> None:
    client = login(member)
    for url in PAGES + object_urls(run, artifact) + ["/runs/?partial=rows", "/graphs/?edit=x"]:
        response = client.get(url)
        assert response.status_code == 200, (url, response.content[:500])
    detail = client.get(f"/runs/{run.public_id}/").content.decode()
    assert "Alice-Co" in detail and ">member<" in detail  # tenant and role in the top bar


def test_a_user_without_a_membership_gets_a_403_page(staff: Any) -> None:
    response = login(staff).get("/runs/")
    assert response.status_code == 403
    assert "not a member of any tenant" in response.content.decode()


def test_another_tenants_objects_are_404(outsider: Any, run: Run, artifact: Artifact) -> None:
    client = login(outsider)
    for url in object_urls(run, artifact):
        assert client.get(url).status_code == 404, url
    for url in control_urls(run):
        response = client.post(url, {"action": "interrupt", "message": "hi", "value": "1"})
        assert response.status_code == 404, url
    start = client.post("/graphs/approve/", {"input": "{}"})
    assert start.status_code == 404
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    assert Run.objects.count() == 1
    # The other tenant's list does not show the run either.
    assert run.public_id.hex not in client.get("/runs/").content.decode()


def test_malformed_ids_are_404(member: Any) -> None:
    client = login(member)
    assert client.get("/runs/not-a-uuid/").status_code == 404
    assert client.get("/graphs/no-such-graph/").status_code == 404
    assert client.get("/artifacts/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_viewer_sees_controls_disabled_and_cannot_post_them(viewer: Any, run: Run) -> None:
    client = login(viewer)
    html = client.get(f"/runs/{run.public_id}/").content.decode()
    assert 'id="readonly-note"' in html
    assert '<fieldset class="controls" disabled>' in html
    for url in control_urls(run):
        assert client.post(url, {"action": "interrupt"}).status_code == 403, url
        response = client.post(url, {"action": "interrupt"}, headers={"Accept": "application/json"})
        assert response.status_code == 403 and response.json()["ok"] is False
    assert client.post("/graphs/approve/", {"input": "{}"}).status_code == 403
    graph_page = client.get("/graphs/approve/").content.decode()
    assert 'id="start-form"' in graph_page and "<fieldset disabled>" in graph_page
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    assert Run.objects.count() == 1


def test_only_admins_upload_graph_versions(member: Any, tenant_admin: Any) -> None:
    spec = approval_spec(name="uploaded")
    body = {"spec": json.dumps(spec)}
    assert login(member).post("/graphs/", body).status_code == 403
    assert 'id="upload-form"' not in login(member).get("/graphs/").content.decode()
    response = login(tenant_admin).post("/graphs/", body)
    assert response.status_code == 302 and response["Location"] == "/graphs/uploaded/"


def test_a_user_in_two_tenants_switches_between_them(tenant: Tenant, member: Any) -> None:
    second = make_tenant("carol-co")
    Membership.objects.create(tenant=second, user=member, role=Role.VIEWER)
    create_graph_version(second, approval_spec(name="carols-graph"))
    other_run = create_run(second, graph="carols-graph")
    client = login(member)

    home = client.get("/").content.decode()
    assert 'id="tenant-switcher"' in home and "Carol-Co" in home
    assert other_run.public_id.hex not in home
    assert client.get(f"/runs/{other_run.public_id}/").status_code == 404

    response = client.post("/tenant/", {"tenant": str(second.public_id)})
    assert response.status_code == 302 and response["Location"] == "/runs/"
    assert client.session[SESSION_TENANT_KEY] == str(second.public_id)
    assert other_run.public_id.hex in client.get("/").content.decode()
    assert client.get(f"/runs/{other_run.public_id}/").status_code == 200
    assert ">viewer<" in client.get("/").content.decode()

    # A tenant the user is not a member of cannot be chosen.
    stranger = make_tenant("dave-co")
    assert client.post("/tenant/", {"tenant": str(stranger.public_id)}).status_code == 404
    assert client.post("/tenant/", {"tenant": "nope"}).status_code == 404
    assert client.session[SESSION_TENANT_KEY] == str(second.public_id)


def test_a_session_naming_a_tenant_the_user_left_falls_back(tenant: Tenant, member: Any) -> None:
    gone = make_tenant("gone-co")
    client = login(member)
    session = client.session
    session[SESSION_TENANT_KEY] = str(gone.public_id)
    session.save()
    assert client.get("/runs/").status_code == 200
    assert client.session[SESSION_TENANT_KEY] == str(tenant.public_id)


def test_inactive_tenants_are_not_offered(tenant: Tenant) -> None:
    user = make_user("solo@example.com", tenant=tenant)
    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)
    assert login(user).get("/").status_code == 403
