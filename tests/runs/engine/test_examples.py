"""The shipped example graphs run to success through the engine (approvals auto-approved)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runs.engine import Executor, RunContext, initial_state, validate_input
from runs.engine.local import auto_resolution, load_spec_file

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "graphs"
INPUTS = {
    "support-triage.json": {
        "text": "Our API returns 500 for every request!",
        "customer": "Acme",
        "plan": "enterprise",
    },
    "research-fanout.json": {"question": "How do durable agent runtimes recover from crashes?"},
    "document-pipeline.json": {
        "title": "Runbook",
        "document": "Workers claim runs with a guarded update.\n\n"
        "Each step commits its checkpoint, usage and events in one transaction.",
    },
}


def run_example(name: str) -> list:
    spec = load_spec_file(EXAMPLES / name)
    data = INPUTS[name]
    assert validate_input(spec, data) == []
    ctx = RunContext(resolve=auto_resolution)
    return list(Executor(spec, ctx).run(initial_state(spec, data)))


def test_there_are_at_least_three_examples() -> None:
    assert {p.name for p in EXAMPLES.glob("*.json")} >= set(INPUTS)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_example_runs_to_success(name: str) -> None:
    results = run_example(name)
    assert results[-1].done, results[-1].run_error
    assert all(r.status == "completed" for r in results)


def test_support_triage_goes_through_its_approval() -> None:
    results = run_example("support-triage.json")
    assert "approve_escalation" in [r.node for r in results]
    approval = next(r for r in results if r.node == "approve_escalation")
    assert approval.events[0][0] == "approval.resolved"
    assert results[-1].state["page"].startswith("P1 page")
    assert any(r.usage.by_model.get("scripted") for r in results)


def test_research_fanout_runs_its_llm_calls_in_parallel() -> None:
    results = run_example("research-fanout.json")
    research = next(r for r in results if r.node == "research")
    assert research.usage.by_model["scripted"]["calls"] == 3
    # three 400 ms calls, one retried once: well under the 1.6 s they would take in a row
    assert research.duration_ms < 1500
    assert len(results[-1].state["findings"]) == 3
    assert [a.name for r in results for a in r.artifacts] == ["report.md"]


def test_document_pipeline_stores_text_and_json_artifacts() -> None:
    results = run_example("document-pipeline.json")
    artifacts = {a.name: a for r in results for a in r.artifacts}
    assert set(artifacts) == {"summary.txt", "report.json"}
    assert artifacts["summary.txt"].content_type.startswith("text/plain")
    assert artifacts["summary.txt"].data.decode().startswith("Runbook\n")
    report = json.loads(artifacts["report.json"].data)
    assert artifacts["report.json"].content_type == "application/json"
    assert report["title"] == "Runbook" and report["stats"]["words"] == 18
