"""Graph pages: the list with diagrams, a graph's versions and spec, the start form (and its
validation), and uploading new versions with problems shown per node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils.html import escape

from runs.models import Graph, Run
from runs.services import create_graph_version
from tests.runs.conftest import approval_spec, chain_spec

pytestmark = pytest.mark.django_db

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "graphs"


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def test_graph_list_shows_each_latest_version_with_its_diagram(tenant, member) -> None:
    create_graph_version(tenant, chain_spec())
    create_graph_version(tenant, chain_spec(n=4))  # v2
    create_graph_version(tenant, example("support-triage"))
    html = login(member).get("/graphs/").content.decode()
    assert html.count('class="panel card"') == 2
    assert 'data-graph="chain"' in html and "v2 · 2 versions" in html
    assert 'data-node="n3"' in html  # v2's extra node: the thumbnail is the latest version
    assert 'id="thumb-0"' in html and 'id="thumb-1"' in html  # unique marker ids per svg
    assert "Classify a support ticket" in html  # the spec's description
    assert 'id="upload-form"' not in html  # members do not upload


def test_graph_detail_shows_diagram_versions_spec_and_start_form(tenant, member) -> None:
    create_graph_version(tenant, chain_spec())
    create_graph_version(tenant, chain_spec(n=4))
    client = login(member)
    html = client.get("/graphs/chain/").content.decode()
    for node in ["n0", "n1", "n2", "n3", "done"]:
        assert f'data-node="{node}"' in html
    assert 'href="?version=1"' in html and 'aria-current="true">v2' in html
    assert 'id="start-form"' in html and "&quot;start&quot;: &quot;n0&quot;" in html
    old = client.get("/graphs/chain/", {"version": 1}).content.decode()
    assert 'data-node="n3"' not in old and "not the latest" in old
    assert client.get("/graphs/chain/", {"version": 9}).status_code == 404


def test_start_form_is_prefilled_from_the_input_schema(tenant, member) -> None:
    create_graph_version(tenant, example("support-triage"))
    html = login(member).get("/graphs/support-triage/").content.decode()
    assert "&quot;text&quot;: &quot;&quot;" in html  # the required key, ready to fill in


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{not json", "Not valid JSON"),
        ("[1, 2]", "Must be a JSON object"),
        ('{"customer": "ada"}', "input.text: is required"),
        ('{"text": ""}', "should be non-empty"),
    ],
)
def test_start_form_shows_validation_errors(tenant, member, text: str, error: str) -> None:
    create_graph_version(tenant, example("support-triage"))
    response = login(member).post("/graphs/support-triage/", {"input": text, "version": ""})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="errorlist"' in html or 'id="start-errors"' in html
    assert error in html
    assert escape(text) in html  # what was typed is kept for fixing
    assert not Run.objects.exists()


def test_start_form_shows_limit_refusals(tenant, member) -> None:
    tenant.max_queued_runs = 0
    tenant.save()
    create_graph_version(tenant, chain_spec())
    response = login(member).post("/graphs/chain/", {"input": "{}"})
    assert response.status_code == 200
    assert "max_queued_runs" in response.content.decode()
    assert not Run.objects.exists()


def test_start_form_starts_a_run_on_the_chosen_version(tenant, member) -> None:
    create_graph_version(tenant, chain_spec())
    create_graph_version(tenant, chain_spec(n=4))
    response = login(member).post(
        "/graphs/chain/", {"input": '{"count": 5}', "version": "1", "metadata": '{"k": "v"}'}
    )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.public_id}/"
    assert run.graph.version == 1 and run.input == {"count": 5} and run.metadata == {"k": "v"}


def test_admin_uploads_a_new_version(tenant, tenant_admin) -> None:
    create_graph_version(tenant, chain_spec())
    client = login(tenant_admin)
    prefilled = client.get("/graphs/", {"edit": "chain"}).content.decode()
    assert '<details class="panel" id="upload"' in prefilled and "&quot;n0&quot;" in prefilled

    response = client.post("/graphs/", {"spec": json.dumps(chain_spec(n=5))}, follow=True)
    assert response.redirect_chain[-1][0] == "/graphs/chain/"
    assert "Stored chain version 2." in response.content.decode()
    assert Graph.objects.filter(name="chain").count() == 2
    assert Graph.objects.get(name="chain", version=2).created_by == tenant_admin.username

    again = client.post("/graphs/", {"spec": json.dumps(chain_spec(n=5))}, follow=True)
    assert "Stored chain version 2." in again.content.decode()  # identical: no new version


def test_upload_accepts_a_yaml_file(tenant, tenant_admin) -> None:
    yaml_text = (
        "name: from-yaml\nstart: a\nnodes:\n  a: {kind: transform, set: {x: '1'}}\n"
        "  done: {kind: end}\nedges:\n  - {from: a, to: done}\n"
    )
    upload = SimpleUploadedFile("g.yaml", yaml_text.encode(), content_type="application/x-yaml")
    response = login(tenant_admin).post("/graphs/", {"file": upload})
    assert response.status_code == 302 and response["Location"] == "/graphs/from-yaml/"


def test_upload_shows_problems_per_node(tenant, tenant_admin) -> None:
    bad = approval_spec(name="broken")
    bad["nodes"]["after"]["kind"] = "teleport"
    bad["nodes"]["orphan"] = {"kind": "transform", "set": {}}
    bad["edges"].append({"from": "before", "to": "nowhere"})
    response = login(tenant_admin).post("/graphs/", {"spec": json.dumps(bad)})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="spec-problems"' in html
    assert "<code>node after</code>" in html and "unknown kind" in html
    assert "<code>node orphan</code>" in html and "unreachable" in html
    assert "nowhere" in html
    assert not Graph.objects.filter(name="broken").exists()


def test_upload_reports_unparseable_text(tenant, tenant_admin) -> None:
    client = login(tenant_admin)
    for body in [{"spec": ""}, {"spec": "{: nope ["}, {"spec": "[1, 2]"}]:
        response = client.post("/graphs/", body)
        assert response.status_code == 200
        html = response.content.decode()
        assert "errorlist" in html or "spec-problems" in html
    assert not Graph.objects.exists()
