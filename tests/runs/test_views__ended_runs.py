"""What the run page offers an ended run: Retry on a failed one, Resume on an interrupted
one, and a Fork on every step of the timeline (a new run, with no input asked again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from runs.models import Run
from runs.services import create_graph_version, create_run, mark_interrupted
from runs.status import RunStatus
from tenants.models import Tenant
from tests.e2e.control_functions import gated_spec
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec

pytestmark = pytest.mark.django_db(transaction=True)

JSON = {"Accept": "application/json"}


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def failed(tenant: Tenant, queue: InlineQueue, tmp_path: Path) -> Run:
    gate = tmp_path / "gate"
    gate.write_text("closed")
    create_graph_version(tenant, gated_spec(str(gate)))
    run = create_run(tenant, graph="gated", input={"ticket": "T-1"})
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    gate.unlink()
    return run


def test_a_failed_run_offers_retry_from_its_failed_node(
    failed: Run, member: Any, queue: InlineQueue
) -> None:
    client = login(member)
    html = client.get(f"/runs/{failed.public_id}/").content.decode()
    assert 'id="retry-button"' in html and "gated" in html
    assert "The run has ended" in html

    response = client.post(f"/runs/{failed.public_id}/retry/", headers=JSON)
    assert response.json() == {"ok": True, "message": "Retrying from gated."}
    assert Run.objects.get(pk=failed.pk).status == RunStatus.QUEUED
    again = client.post(f"/runs/{failed.public_id}/retry/", headers=JSON)
    assert again.status_code == 409 and "cannot be retried" in again.json()["message"]
    queue.drain()
    assert Run.objects.get(pk=failed.pk).status == RunStatus.SUCCEEDED
    html = client.get(f"/runs/{failed.public_id}/").content.decode()
    assert 'id="retry-button"' not in html


def test_an_interrupted_run_offers_resume(tenant: Tenant, member: Any, queue: InlineQueue) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    mark_interrupted(run, by="op")
    client = login(member)
    html = client.get(f"/runs/{run.public_id}/").content.decode()
    assert 'id="resume-button"' in html and 'id="retry-button"' not in html
    response = client.post(f"/runs/{run.public_id}/resume/", headers=JSON)
    assert response.status_code == 200 and response.json()["ok"] is True
    assert "last checkpoint" in response.json()["message"]
    queue.drain()
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING


def test_every_step_has_a_fork_that_starts_a_new_run_and_names_it(
    failed: Run, member: Any, queue: InlineQueue
) -> None:
    client = login(member)
    html = client.get(f"/runs/{failed.public_id}/").content.decode()
    assert html.count('class="btn btn-sm step-fork"') == 2  # before, gated
    response = client.post(f"/runs/{failed.public_id}/fork/", {"step": "1"}, headers=JSON)
    body = response.json()
    assert response.status_code == 200 and body["ok"] is True
    fork = Run.objects.exclude(pk=failed.pk).get()
    assert body["redirect"] == f"/runs/{fork.public_id}/"
    assert fork.input == {} and fork.metadata["forked_from_step"] == 1
    queue.drain()
    fork.refresh_from_db()
    assert fork.status == RunStatus.SUCCEEDED and fork.state["log"] == ["before", "gated"]
    # Without the page's script, the form posts and the browser goes to the new run.
    plain = client.post(f"/runs/{failed.public_id}/fork/", {"step": "2"})
    assert plain.status_code == 302 and plain["Location"].startswith("/runs/")
    assert plain["Location"] != f"/runs/{failed.public_id}/"


def test_bad_forks_are_messages_not_500s(failed: Run, member: Any) -> None:
    client = login(member)
    base = f"/runs/{failed.public_id}/fork/"
    assert client.post(base, {"step": "x"}, headers=JSON).status_code == 400
    assert client.post(base, {"step": "-1"}, headers=JSON).status_code == 400
    missing = client.post(base, {"step": "40"}, headers=JSON)
    assert missing.status_code == 404 and "no checkpoint at step 40" in missing.json()["message"]
    assert Run.objects.count() == 1


def test_viewers_see_no_fork_or_retry_and_cannot_post_them(failed: Run, viewer: Any) -> None:
    client = login(viewer)
    html = client.get(f"/runs/{failed.public_id}/").content.decode()
    assert "btn btn-sm step-fork" not in html
    # Retry is shown as the other controls are to a viewer: in a disabled fieldset.
    assert '<fieldset class="controls" disabled>' in html and 'id="readonly-note"' in html
    assert client.post(f"/runs/{failed.public_id}/retry/", headers=JSON).status_code == 403
    assert (
        client.post(f"/runs/{failed.public_id}/fork/", {"step": 1}, headers=JSON).status_code == 403
    )
    assert Run.objects.get(pk=failed.pk).status == RunStatus.FAILED


def test_other_tenants_runs_cannot_be_retried_or_forked(failed: Run, outsider: Any) -> None:
    client = login(outsider)
    assert client.post(f"/runs/{failed.public_id}/retry/", headers=JSON).status_code == 404
    assert (
        client.post(f"/runs/{failed.public_id}/fork/", {"step": 1}, headers=JSON).status_code == 404
    )
    assert Run.objects.count() == 1


def test_a_succeeded_run_offers_forks_but_no_retry(
    tenant: Tenant, member: Any, queue: InlineQueue
) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")
    queue.drain()
    html = login(member).get(f"/runs/{run.public_id}/").content.decode()
    assert 'id="retry-button"' not in html and 'id="resume-button"' not in html
    assert html.count('step-fork"') == 4
