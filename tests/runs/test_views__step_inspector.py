"""The step inspector: GET /runs/<id>/steps/<index>/ (and ?node=) shows a step's input state,
rendered prompt, output, state diff, usage, timing, error and artifacts; tenant-scoped."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import pytest
from django.test import Client

from runs.models import Checkpoint, Event, Run, Step
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from runs.views import steps as step_views
from tests.runs.conftest import approval_spec, chain_spec

pytestmark = pytest.mark.django_db(transaction=True)


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def inspect(client: Client, run: Run, index: int | str, **params: str) -> str:
    response = client.get(f"/runs/{run.public_id}/steps/{index}/", {"partial": "1", **params})
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def section(page: str, name: str) -> str:
    match = re.search(rf'<section[^>]*data-section="{name}".*?</section>', page, re.S)
    assert match, f"no {name} section"
    return html.unescape(match.group(0))


def labelled_spec() -> dict[str, Any]:
    """prep (transform) -> ask (scripted llm, writes an artifact) -> tidy (transform) -> done."""
    return {
        "name": "label",
        "state": {
            "meta": {"reducer": "merge", "default": {}},
            "label": {"reducer": "replace", "default": None},
        },
        "start": "prep",
        "nodes": {
            "prep": {
                "kind": "transform",
                "set": {"meta": "{'source': 'mail', 'nested': {'x': 1, 'y': 2}}"},
            },
            "ask": {
                "kind": "llm",
                "provider": "scripted",
                "system": "You label support tickets.",
                "prompt": "Label this: {{ state.text }}",
                "responses": ["billing"],
                "output": "label",
                "artifacts": [{"name": "label.txt", "text": "label={{ state.label }}"}],
            },
            "tidy": {"kind": "transform", "set": {"meta": "{'nested': {'x': 5}}"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "prep", "to": "ask"},
            {"from": "ask", "to": "tidy"},
            {"from": "tidy", "to": "done"},
        ],
    }


@pytest.fixture
def labelled(tenant: Any, queue: Any) -> Run:
    create_graph_version(tenant, labelled_spec())
    run = create_run(tenant, graph="label", input={"text": "I was charged twice"})
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    return run


def step_of(run: Run, node: str) -> Step:
    return Step.objects.filter(run=run, node=node).order_by("-index").first()  # type: ignore[return-value]


# --- what a step shows --------------------------------------------------------------------------


def test_an_llm_step_shows_its_rendered_prompt_output_usage_timing_and_artifact(
    labelled: Run, member: Any
) -> None:
    step = step_of(labelled, "ask")
    page = inspect(login(member), labelled, step.index)

    assert f'data-inspect-step="{step.index}"' in page and 'data-node="ask"' in page
    prompt = section(page, "prompt")
    assert "You label support tickets." in prompt  # the rendered system message
    assert "Label this: I was charged twice" in prompt  # the template, rendered
    assert "scripted/" in prompt and "attempt 1" in prompt

    output = section(page, "output")
    assert '"label": "billing"' in output

    usage = section(page, "usage")
    tokens_in, tokens_out = step.usage["tokens_in"], step.usage["tokens_out"]
    assert tokens_in > 0 and tokens_out > 0
    assert f"<dt>Tokens in</dt><dd>{tokens_in}</dd>" in usage
    assert f"<dt>Tokens out</dt><dd>{tokens_out}</dd>" in usage
    assert f"${step.usage['cost_usd']:.6f}" in usage and "scripted" in usage

    timing = section(page, "timing")
    assert step.started_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "</time> UTC" in timing
    assert step.finished_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "</time> UTC" in timing
    assert f'<dd data-ms="{step.duration_ms}">{step.duration_ms} ms</dd>' in timing
    assert "<dt>Attempt</dt><dd>1" in timing

    artifacts = section(page, "artifacts")
    artifact = step.artifacts.get()
    assert artifact.name == "label.txt" and "label.txt" in artifacts
    assert f"/artifacts/{artifact.public_id}/" in artifacts
    assert f"/artifacts/{artifact.public_id}/?download=1" in artifacts

    # Its input is the state the previous step left; no error section on a good step.
    assert '"source": "mail"' in section(page, "input")
    assert 'data-section="error"' not in page
    # Links to the neighbouring steps.
    assert f'data-inspect-step-link="{step.index - 1}"' in page
    assert f'data-inspect-step-link="{step.index + 1}"' in page


def test_a_transform_step_has_no_prompt_and_no_artifacts(labelled: Run, viewer: Any) -> None:
    page = inspect(login(viewer), labelled, step_of(labelled, "prep").index)  # viewers may look
    assert 'data-section="prompt"' not in page
    assert "This step made no artifacts." in section(page, "artifacts")
    assert "Initial state" in section(page, "input")
    assert '"text": "I was charged twice"' in section(page, "input")


def diff_entries(page: str) -> dict[str, tuple[str, str]]:
    """{path: (op, text of the entry)} of the state diff."""
    diff = section(page, "diff")
    entries = re.findall(
        r'<li class="chg[^"]*" data-path="([^"]+)" data-op="(\w+)">(.*?)</li>', diff, re.S
    )
    return {path: (op, body) for path, op, body in entries}


def test_the_state_diff_names_nested_changes_and_removed_keys(labelled: Run, member: Any) -> None:
    client = login(member)
    prep = diff_entries(inspect(client, labelled, step_of(labelled, "prep").index))
    assert set(prep) == {"meta.source", "meta.nested"}
    assert prep["meta.source"][0] == "added" and '"mail"' in prep["meta.source"][1]

    ask = diff_entries(inspect(client, labelled, step_of(labelled, "ask").index))
    assert ask == {"label": ("changed", ask["label"][1])}
    assert "null" in ask["label"][1] and '"billing"' in ask["label"][1]

    # `merge` is shallow: tidy's {'nested': {'x': 5}} replaces meta.nested whole.
    tidy = diff_entries(inspect(client, labelled, step_of(labelled, "tidy").index))
    assert set(tidy) == {"meta.nested.x", "meta.nested.y"}
    assert tidy["meta.nested.x"][0] == "changed"
    assert ">1<" in tidy["meta.nested.x"][1] and ">5<" in tidy["meta.nested.x"][1]
    assert tidy["meta.nested.y"][0] == "removed" and ">2<" in tidy["meta.nested.y"][1]
    assert "after" not in tidy["meta.nested.y"][1]  # a removed key has no after value

    done = inspect(client, labelled, step_of(labelled, "done").index)
    assert "The step changed no state." in section(done, "diff")


def test_a_cut_update_is_marked_while_the_diff_keeps_the_real_value(
    tenant: Any, member: Any, queue: Any, settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_EVENT_BYTES": 4096}
    spec = chain_spec("big", n=1)
    spec["nodes"]["n0"] = {"kind": "transform", "set": {"blob": "'z' * 9000", "count": "1"}}
    create_graph_version(tenant, spec)
    run = create_run(tenant, graph="big")
    queue.drain()
    step = step_of(run, "n0")
    assert step.update["blob"] == {"truncated": True, "bytes": 9002}  # the event cap's marker

    page = inspect(login(member), run, step.index)
    output = section(page, "output")
    assert '"truncated": true' in output
    assert "<code>blob</code> (8.8\xa0KB)" in output  # named, with its real size
    entries = diff_entries(page)
    assert entries["blob"][0] == "added"
    assert "z" * 150 in entries["blob"][1]  # the preview, from the checkpoint
    assert "z" * 9000 in entries["blob"][1]  # the whole value behind "show all"
    assert entries["count"][0] == "changed"


def test_a_failed_llm_step_shows_its_error_the_run_error_cause_and_what_it_sent(
    tenant: Any, member: Any, queue: Any
) -> None:
    spec = chain_spec("flaky", n=1, max_resurrections=0)
    spec["nodes"]["n0"] = {
        "kind": "llm",
        "provider": "scripted",
        "prompt": "Try {{ state.count }}",
        "responses": ["never"],
        "fail_times": 3,
        "retry": {"max_attempts": 2, "backoff": 0},
        "output": "out",
    }
    create_graph_version(tenant, spec)
    run = create_run(tenant, graph="flaky")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    step = step_of(run, "n0")

    page = inspect(login(member), run, step.index)
    error = section(page, "error")
    assert step.error["code"] in error and step.error["message"] in error
    assert run.error["code"] in error and "The run ended here" in error
    assert f'"code": "{step.error["code"]}"' in error  # the run error's cause
    assert "(1 retry before)" in section(page, "timing")
    prompt = section(page, "prompt")
    assert prompt.count("Try 0") == 2 and "attempt 1" in prompt and "attempt 2" in prompt
    assert "The step changed no state." in section(page, "diff")


def test_error_details_and_extra_fields_are_shown(tenant: Any, member: Any) -> None:
    create_graph_version(tenant, chain_spec("hand", n=1))
    run = create_run(tenant, graph="hand")
    now = dt.datetime.now(dt.UTC)
    Checkpoint.objects.create(run=run, step_index=0, state={"count": 0}, position={})
    Step.objects.create(
        run=run,
        index=1,
        node="n0",
        status="failed",
        started_at=now,
        finished_at=now,
        error={
            "code": "http_status",
            "message": "upstream said 503",
            "details": {"status": 503, "body": "<b>busy</b>"},
            "retry_after": 30,
        },
    )
    page = inspect(login(member), run, 1)
    error = section(page, "error")
    assert "http_status" in error and "upstream said 503" in error
    assert '"status": 503' in error and '"body": "<b>busy</b>"' in error
    assert '"retry_after": 30' in error
    assert "<b>busy</b>" not in page  # escaped
    assert "No checkpoint was kept for this step." in section(page, "diff")


# --- finding steps ------------------------------------------------------------------------------


def test_a_node_opens_its_latest_step_and_a_pending_node_says_so(
    tenant: Any, member: Any, queue: Any
) -> None:
    spec = chain_spec("loop", n=1)
    spec["nodes"]["again"] = {"kind": "transform", "set": {"count": "state.count + 1"}}
    spec["edges"] = [
        {"from": "n0", "to": "again"},
        {"from": "again", "to": "again", "when": "state.count < 3"},
        {"from": "again", "to": "never", "when": "state.count > 100"},
        {"from": "again", "to": "done"},
    ]
    spec["nodes"]["never"] = {"kind": "end"}
    create_graph_version(tenant, spec)
    run = create_run(tenant, graph="loop")
    queue.drain()
    latest = step_of(run, "again")
    assert Step.objects.filter(run=run, node="again").count() == 2

    client = login(member)
    page = client.get(f"/runs/{run.public_id}/steps/", {"node": "again", "partial": "1"})
    assert page.status_code == 200
    assert f'data-inspect-step="{latest.index}"' in page.content.decode()

    pending = client.get(f"/runs/{run.public_id}/steps/", {"node": "never", "partial": "1"})
    assert pending.status_code == 200
    assert 'data-section="not-run"' in pending.content.decode()
    too_long = client.get(f"/runs/{run.public_id}/steps/", {"node": "x" * 5000, "partial": "1"})
    assert too_long.status_code == 200 and 'data-section="not-run"' in too_long.content.decode()


def test_a_node_the_run_waits_at_says_so(tenant: Any, member: Any, queue: Any) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    page = login(member).get(f"/runs/{run.public_id}/steps/", {"node": "gate", "partial": "1"})
    assert "The run waits at this node (approval)" in page.content.decode()

    # A run at a node in flight (as a worker leaves it mid-step).
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, waiting_for=None, position={"node": "after", "step": 2}
    )
    page = login(member).get(f"/runs/{run.public_id}/steps/", {"node": "after", "partial": "1"})
    assert "The run is at this node now" in page.content.decode()


def test_a_branch_node_opens_its_parallel_step(tenant: Any, member: Any, queue: Any) -> None:
    spec = chain_spec("fan", n=1)
    spec["nodes"]["n0"] = {"kind": "parallel", "branches": ["left", "right"]}
    spec["nodes"]["left"] = {"kind": "transform", "set": {"count": "1"}}
    spec["nodes"]["right"] = {"kind": "transform", "set": {"right": "2"}}
    create_graph_version(tenant, spec)
    run = create_run(tenant, graph="fan")
    queue.drain()
    page = login(member).get(f"/runs/{run.public_id}/steps/", {"node": "left", "partial": "1"})
    body = page.content.decode()
    assert f'data-inspect-step="{step_of(run, "n0").index}"' in body
    assert "runs as a branch of the parallel node" in body


def test_without_partial_the_step_is_a_page_of_its_own(labelled: Run, member: Any) -> None:
    page = login(member).get(f"/runs/{labelled.public_id}/steps/1/").content.decode()
    assert "<html" in page and 'data-section="timing"' in page
    assert f'href="/runs/{labelled.public_id}/"' in page


def test_an_unknown_step_is_a_404(labelled: Run, member: Any) -> None:
    assert login(member).get(f"/runs/{labelled.public_id}/steps/999/").status_code == 404


def test_another_tenants_run_is_a_404(labelled: Run, outsider: Any) -> None:
    client = login(outsider)
    assert client.get(f"/runs/{labelled.public_id}/steps/1/?partial=1").status_code == 404
    assert client.get(f"/runs/{labelled.public_id}/steps/?node=ask&partial=1").status_code == 404


def test_anonymous_callers_are_sent_to_log_in(labelled: Run) -> None:
    response = Client().get(f"/runs/{labelled.public_id}/steps/1/")
    assert response.status_code == 302 and "/login/" in response["Location"]


# --- the run page wires it up -------------------------------------------------------------------


def test_the_run_page_has_the_inspector_panel_focusable_rows_and_its_script(
    labelled: Run, member: Any
) -> None:
    page = login(member).get(f"/runs/{labelled.public_id}/").content.decode()
    assert f'data-steps-url="/runs/{labelled.public_id}/steps/"' in page
    assert re.search(r'<aside id="step-inspector"[^>]* hidden', page)
    step = step_of(labelled, "ask")
    assert f'<tr data-step="{step.index}" data-node="ask" tabindex="0"' in page
    assert "/static/runs/inspector.js" in page and "/static/runs/inspector.css" in page


def test_the_step_window_bounds_events_to_the_step(labelled: Run, member: Any) -> None:
    """The llm.request of `ask` is not shown for `tidy`, the step after it."""
    tidy = step_of(labelled, "tidy")
    page = inspect(login(member), labelled, tidy.index)
    assert 'data-section="prompt"' not in page
    assert Event.objects.filter(run=labelled, type="llm.request").count() == 1


def test_the_llm_requests_shown_are_bounded(
    labelled: Run, member: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(step_views, "MAX_REQUESTS", 0)
    page = inspect(login(member), labelled, step_of(labelled, "ask").index)
    assert 'data-section="prompt"' not in page
