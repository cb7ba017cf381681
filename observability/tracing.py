"""OpenTelemetry spans: one per run segment (`runyard.run`) with a child per step
(`runyard.step`), when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Off, nothing of OpenTelemetry is imported and each segment pays one `is None` test. On, the
SDK's TracerProvider exports in batches over OTLP/HTTP (the exporter reads the standard
OTEL_EXPORTER_OTLP_* variables; OTEL_SERVICE_NAME names the service, default `runyard`).
Step spans are made when a step commits, from the times the engine measured, so the engine
knows nothing of tracing; they are children of the segment's span, which is current in the
segment's thread (and in the threads the engine starts for a node, which copy the context,
so a child run's segment span nests under its parent's).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

# The tracer spans are made with, or None: tracing is off.
tracer: Any = None
_provider: Any = None


def configure_from_env() -> bool:
    """Turn tracing on when OTEL_EXPORTER_OTLP_ENDPOINT is set (once per process, at start)."""
    if tracer is not None or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return tracer is not None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "runyard")})
    provider = TracerProvider(resource=resource)
    # The batch processor's thread is restarted in forked qcluster workers (the SDK's own
    # at-fork hook); a worker flushes what is left as it exits (observability/apps.py).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    use(provider)
    return True


def use(provider: Any) -> None:
    """Make spans with `provider` (a TracerProvider); None turns tracing off. Tests pass one
    with an in-memory exporter."""
    global tracer, _provider
    _provider = provider
    tracer = None if provider is None else provider.get_tracer("runyard")


def flush() -> None:
    if _provider is not None and hasattr(_provider, "force_flush"):
        try:
            _provider.force_flush(timeout_millis=5000)
        except Exception:  # noqa: BLE001 - losing spans must not stop a worker exiting
            log.warning("tracing: flush failed", exc_info=True)


def run_attributes(run: Any, tenant_slug: str) -> dict[str, Any]:
    return {
        "runyard.tenant": tenant_slug,
        "runyard.run_id": str(run.public_id),
        "runyard.graph": run.graph.name,
        "runyard.graph_version": run.graph.version,
        "runyard.claim": run.claims,
        "runyard.depth": run.depth,
    }


@contextmanager
def segment_span(run: Any, tenant_slug: str) -> Iterator[Any]:
    """The span of one segment of `run`, current while it executes."""
    from opentelemetry.trace import Status, StatusCode

    with tracer.start_as_current_span(
        "runyard.run", attributes=run_attributes(run, tenant_slug)
    ) as span:
        try:
            yield span
        finally:
            span.set_attribute("runyard.status", run.status)
            if run.status == "failed":
                span.set_status(Status(StatusCode.ERROR, str((run.error or {}).get("code"))))


def step_spans(run: Any, tenant_slug: str, steps: Sequence[tuple[Any, str]]) -> None:
    """Spans for committed steps, `(StepResult, node kind)`, timed as the engine measured them;
    children of the current (segment) span."""
    from opentelemetry.trace import Status, StatusCode

    run_id = str(run.public_id)
    for r, kind in steps:
        span = tracer.start_span(
            "runyard.step",
            start_time=int(r.started_at * 1e9),
            attributes={
                "runyard.tenant": tenant_slug,
                "runyard.run_id": run_id,
                "runyard.node": r.node,
                "runyard.node_kind": kind,
                "runyard.step_index": r.index,
                "runyard.attempt": r.attempt,
                "runyard.step_status": r.status,
            },
        )
        if r.error:
            span.set_status(Status(StatusCode.ERROR, str(r.error.get("code", ""))))
        span.end(end_time=int(r.finished_at * 1e9))
