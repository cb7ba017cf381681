"""OpenTelemetry: a run segment is a span, each step a child span; nothing at all when off."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from observability import tracing
from runs.services import create_run
from runs.status import RunStatus
from tests.runs.conftest import chain_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.mark.django_db(transaction=True)
def test_a_run_is_a_span_with_a_child_span_per_step(tenant, make_graph, queue, spans) -> None:
    make_graph(tenant, chain_spec(n=2))
    run = create_run(tenant, graph="chain")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED

    finished = spans.get_finished_spans()
    [root] = [s for s in finished if s.name == "runyard.run"]
    steps = sorted((s for s in finished if s.name == "runyard.step"), key=lambda s: s.start_time)
    assert root.attributes["runyard.tenant"] == tenant.slug
    assert root.attributes["runyard.run_id"] == str(run.public_id)
    assert root.attributes["runyard.graph"] == "chain"
    assert root.attributes["runyard.status"] == "succeeded"
    assert [s.attributes["runyard.node"] for s in steps] == ["n0", "n1", "done"]
    assert [s.attributes["runyard.node_kind"] for s in steps] == ["transform", "transform", "end"]
    for s in steps:
        assert s.parent is not None and s.parent.span_id == root.context.span_id
        assert s.context.trace_id == root.context.trace_id
        assert s.attributes["runyard.tenant"] == tenant.slug
        assert s.attributes["runyard.run_id"] == str(run.public_id)
        assert root.start_time <= s.start_time <= s.end_time <= root.end_time


@pytest.mark.django_db(transaction=True)
def test_a_failed_step_and_run_are_error_spans(tenant, make_graph, queue, spans) -> None:
    make_graph(
        tenant,
        {
            "name": "broken",
            "start": "boom",
            "nodes": {
                "boom": {"kind": "transform", "set": {"x": "1 / 0"}},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "boom", "to": "done"}],
        },
    )
    create_run(tenant, graph="broken")
    queue.drain()
    finished = spans.get_finished_spans()
    [root] = [s for s in finished if s.name == "runyard.run"]
    [step] = [s for s in finished if s.name == "runyard.step"]
    assert root.status.status_code == StatusCode.ERROR
    assert step.status.status_code == StatusCode.ERROR
    assert step.attributes["runyard.step_status"] == "failed"


def test_without_an_endpoint_no_tracing_sdk_is_loaded(tmp_path: Path) -> None:
    """Off and free: a worker's whole start (apps ready, the segment's hooks) loads neither the
    trace SDK nor an exporter. (redis-py 8 imports the OpenTelemetry API and metrics SDK
    itself when they are installed, for its own opt-in metrics.)"""
    script = (
        "import sys, django; django.setup();"
        "import runs.services.execute, observability.views;"
        "from observability import tracing;"
        "assert tracing.tracer is None;"
        "print(sorted(m for m in sys.modules if m.startswith("
        "('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "OTEL_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "RUNYARD_VAR_DIR": str(tmp_path)})
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_with_an_endpoint_spans_are_exported_over_otlp_http(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT turns the SDK on with the OTLP/HTTP exporter."""
    script = (
        "import django; django.setup();"
        "from observability import tracing;"
        "from opentelemetry.sdk.trace import TracerProvider;"
        "assert isinstance(tracing._provider, TracerProvider);"
        "[p] = tracing._provider._active_span_processor._span_processors;"
        "print(type(p).__name__, type(p._batch_processor._exporter).__module__)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "RUNYARD_VAR_DIR": str(tmp_path),
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.split() == [
        "BatchSpanProcessor",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_child_runs_span_sits_inside_its_parents(tenant, make_graph, queue, spans) -> None:
    make_graph(tenant, chain_spec(name="inner", n=1))
    make_graph(
        tenant,
        {
            "name": "outer",
            "start": "call",
            "nodes": {
                "call": {"kind": "subgraph", "graph": "inner", "output": "child"},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "call", "to": "done"}],
        },
    )
    parent = create_run(tenant, graph="outer")
    queue.drain()
    parent.refresh_from_db()
    assert parent.status == RunStatus.SUCCEEDED, parent.error
    runs = {
        s.attributes["runyard.graph"]: s
        for s in spans.get_finished_spans()
        if s.name == "runyard.run"
    }
    assert set(runs) == {"outer", "inner"}
    assert runs["inner"].parent.span_id == runs["outer"].context.span_id
    assert runs["inner"].attributes["runyard.depth"] == 1
    inner_steps = [
        s for s in spans.get_finished_spans()
        if s.name == "runyard.step" and s.parent.span_id == runs["inner"].context.span_id
    ]  # fmt: skip
    assert [s.attributes["runyard.node"] for s in inner_steps] == ["n0", "done"]
