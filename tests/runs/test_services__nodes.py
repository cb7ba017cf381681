"""Node kinds that need the runtime: artifacts, resurrection, subgraphs, durable sleep, input."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from runs.engine import register_function
from runs.models import Artifact, Event, Run, Step
from runs.reconcile import reconcile_once
from runs.services import Conflict, NotFound, create_graph_version, create_run, submit_input
from runs.status import RunStatus

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES = Path(settings.BASE_DIR) / "examples" / "graphs"
FLAKY_CALLS: list[int] = []


@register_function("flaky_once", replace=True)
def flaky_once(state: dict, ctx: object) -> dict:
    FLAKY_CALLS.append(1)
    if len(FLAKY_CALLS) == 1:
        raise RuntimeError("the service fell over")
    return {"ok": True}


def _types(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).values_list("type", flat=True))


def test_artifacts_are_stored_through_storage_with_size_and_hash(tenant, queue) -> None:
    create_graph_version(tenant, json.loads((EXAMPLES / "document-pipeline.json").read_text()))
    run = create_run(
        tenant,
        graph="document-pipeline",
        input={"title": "Leases", "document": "Leases fence workers. " * 20},
    )
    assert queue.drain() == ["succeeded"]
    artifacts = {a.name: a for a in Artifact.objects.filter(run=run)}
    assert set(artifacts) == {"summary.txt", "report.json"}
    report = artifacts["report.json"]
    data = report.file.read()
    assert report.size == len(data) and report.sha256 == hashlib.sha256(data).hexdigest()
    assert json.loads(data)["title"] == "Leases"
    assert report.step.node == "package" and report.tenant_id == tenant.pk
    assert _types(run).count("artifact.created") == 2


def test_a_non_fatal_failure_resurrects_from_the_failed_node(tenant, queue, settings) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "RESURRECTION_COOLDOWN_SECONDS": 0}
    FLAKY_CALLS.clear()
    create_graph_version(
        tenant,
        {
            "name": "flaky",
            "start": "a",
            "max_resurrections": 1,
            "nodes": {
                "a": {"kind": "transform", "set": {"x": "1"}},
                "call": {"kind": "function", "function": "flaky_once"},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "a", "to": "call"}, {"from": "call", "to": "done"}],
        },
    )
    run = create_run(tenant, graph="flaky")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.resurrections == 1 and run.state["ok"] is True
    assert "run.resurrected" in _types(run)
    steps = list(Step.objects.filter(run=run).values_list("index", "node", "status"))
    assert steps == [
        (1, "a", "completed"),
        (2, "call", "failed"),
        (3, "call", "completed"),
        (4, "done", "completed"),
    ]


def test_without_resurrections_the_run_fails_naming_the_node(tenant, queue) -> None:
    FLAKY_CALLS.clear()
    create_graph_version(
        tenant,
        {
            "name": "flaky",
            "start": "call",
            "max_resurrections": 0,
            "nodes": {
                "call": {"kind": "function", "function": "flaky_once"},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "call", "to": "done"}],
        },
    )
    run = create_run(tenant, graph="flaky")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error["code"] == "node_failed" and "call" in run.error["message"]


def test_parallel_branches_writing_one_replace_key_fail_the_run_with_merge_conflict(
    tenant, queue
) -> None:
    create_graph_version(
        tenant,
        {
            "name": "clash",
            "start": "fan",
            "max_resurrections": 3,  # fatal: never resurrected
            "nodes": {
                "fan": {"kind": "parallel", "branches": ["left", "right"]},
                "left": {"kind": "transform", "set": {"answer": "'left'"}},
                "right": {"kind": "transform", "set": {"answer": "'right'"}},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "fan", "to": "done"}],
        },
    )
    run = create_run(tenant, graph="clash")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.resurrections == 0
    assert run.error["code"] == "merge_conflict"
    assert "'answer'" in run.error["message"] and "'left', 'right'" in run.error["message"]
    step = Step.objects.get(run=run, node="fan")
    assert step.status == "failed" and step.error["code"] == "merge_conflict"
    assert step.error["details"]["key"] == "answer"
    assert step.error["details"]["branches"] == ["left", "right"]
    assert "answer" not in run.state
    assert "run.resurrected" not in _types(run)


def test_subgraph_runs_as_a_child_run_with_its_own_steps(tenant, queue) -> None:
    create_graph_version(
        tenant,
        {
            "name": "child",
            "start": "double",
            "nodes": {
                "double": {"kind": "transform", "set": {"y": "state.x * 2"}},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "double", "to": "done"}],
        },
    )
    create_graph_version(
        tenant,
        {
            "name": "parent",
            "start": "call",
            "nodes": {
                "call": {
                    "kind": "subgraph",
                    "graph": "child",
                    "input": {"x": "21"},
                    "output": "child",
                },
                "done": {"kind": "end"},
            },
            "edges": [{"from": "call", "to": "done"}],
        },
    )
    run = create_run(tenant, graph="parent")
    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.state["child"]["y"] == 42
    child = Run.objects.get(parent=run)
    assert child.status == RunStatus.SUCCEEDED and child.depth == 1
    assert Step.objects.filter(run=child).count() == 2
    tenant.refresh_from_db()
    assert tenant.running_count == 0 and tenant.queued_count == 0


def test_a_long_sleep_releases_the_worker_and_wakes_at_its_deadline(tenant, queue) -> None:
    create_graph_version(
        tenant,
        {
            "name": "nap",
            "start": "nap",
            "nodes": {"nap": {"kind": "sleep", "seconds": 3600}, "done": {"kind": "end"}},
            "edges": [{"from": "nap", "to": "done"}],
        },
    )
    run = create_run(tenant, graph="nap")
    assert queue.drain() == ["waiting"]
    run.refresh_from_db()
    assert run.waiting_for["kind"] == "sleep" and not run.holds_slot
    assert reconcile_once() == []  # not due yet
    Run.objects.filter(pk=run.pk).update(wait_deadline=timezone.now() - dt.timedelta(seconds=1))
    assert [f.action for f in reconcile_once()] == ["wake"]
    assert queue.drain() == ["succeeded"]


def test_input_waits_then_continues_with_the_value(tenant, queue) -> None:
    create_graph_version(
        tenant,
        {
            "name": "ask",
            "start": "ask",
            "nodes": {
                "ask": {"kind": "input", "prompt": "Your name?", "output": "name"},
                "greet": {"kind": "transform", "set": {"greeting": "'hi ' ~ state.name"}},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "ask", "to": "greet"}, {"from": "greet", "to": "done"}],
        },
    )
    run = create_run(tenant, graph="ask")
    queue.drain()
    run.refresh_from_db()
    assert run.waiting_for["kind"] == "input" and run.waiting_for["message"] == "Your name?"
    with pytest.raises(NotFound):
        submit_input(run, "Ada", input_id="greet@1")  # not an input node
    submit_input(run, "Ada", by="alice")
    with pytest.raises(Conflict):
        submit_input(Run.objects.get(pk=run.pk), "Bob", input_id="ask@1")
    queue.drain()
    run.refresh_from_db()
    assert run.state["greeting"] == "hi Ada"
    assert "input.requested" in _types(run)
