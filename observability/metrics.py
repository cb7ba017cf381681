"""The metrics Runyard's processes observe (prometheus-client, multiprocess mode).

Every process on a machine (daphne, qcluster and its forked workers, the scheduler) writes its
own mmap files in PROMETHEUS_MULTIPROC_DIR (config/settings.py); /metrics sums them
(observability/views.py), so what a worker observed shows up on the web process's scrape.
What the database knows (runs by status, limits, dispatcher capacity) is read at scrape time
instead (observability/collectors.py).

Names start with `runyard_`; `tenant` is the tenant's slug. The functions here are the only
way the rest of the code observes anything; they never touch the database and never raise.
Children are cached per label values: `labels()` takes a lock and builds a key each call,
and `observe_step` runs once per step.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

# Pure steps (transform, end) take tens of microseconds; llm, http and sleep take seconds.
STEP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"),
)  # fmt: skip
WAIT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, float("inf"),
)  # fmt: skip
LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"),
)  # fmt: skip

STEP_DURATION = Histogram(
    "runyard_step_duration_seconds",
    "Time a step's node took to execute (engine start to result), by tenant and node kind.",
    ["tenant", "node_kind"],
    buckets=STEP_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "runyard_queue_wait_seconds",
    "Time from a run's creation (queued) to its first claim by a worker.",
    ["tenant"],
    buckets=WAIT_BUCKETS,
)
RUNS_FINISHED = Counter(
    "runyard_runs_finished_total",
    "Runs that reached a terminal status, by tenant and status.",
    ["tenant", "status"],
)
LEASE_EXPIRIES = Counter(
    "runyard_lease_expiries_total",
    "Runs whose worker stopped renewing its lease, as the reconciler found and resolved them.",
    ["tenant"],
)
RECOVERIES = Counter(
    "runyard_recoveries_total",
    "What the reconciler did about work the platform owed: resumed (lease expired, resumed "
    "from the last checkpoint), interrupted (out of recoveries), cancelled, redispatched "
    "(dispatched but never claimed), deadline (a wait past its deadline resolved), "
    "parent_ended (a child whose parent ended, cancelled).",
    ["tenant", "outcome"],
)
EVENT_DELIVERY_LAG = Histogram(
    "runyard_event_delivery_lag_seconds",
    "Time from an event's creation to its hand-over to this web process's websocket clients "
    "(once per batch of live events and stream: the batch's oldest event).",
    ["stream"],
    buckets=LAG_BUCKETS,
)
WEBHOOK_DELIVERIES = Counter(
    "runyard_webhook_deliveries_total",
    "Webhook delivery attempts, by tenant and outcome.",
    ["tenant", "outcome"],
)

_steps: dict[tuple[str, str], Any] = {}
_waits: dict[str, Any] = {}
_lags: dict[str, Any] = {}


def observe_step(tenant_slug: str, node_kind: str, seconds: float) -> None:
    """One step's duration: one histogram observe (two mmap writes) on the step hot path."""
    child = _steps.get((tenant_slug, node_kind))
    if child is None:
        child = _steps[(tenant_slug, node_kind)] = STEP_DURATION.labels(tenant_slug, node_kind)
    child.observe(seconds if seconds > 0 else 0.0)


def observe_queue_wait(tenant_slug: str, seconds: float) -> None:
    child = _waits.get(tenant_slug)
    if child is None:
        child = _waits[tenant_slug] = QUEUE_WAIT.labels(tenant_slug)
    child.observe(seconds if seconds > 0 else 0.0)


def observe_run_finished(tenant_slug: str, status: str) -> None:
    RUNS_FINISHED.labels(tenant_slug, status).inc()


def observe_lease_expired(tenant_slug: str) -> None:
    LEASE_EXPIRIES.labels(tenant_slug).inc()


def observe_recovery(tenant_slug: str, outcome: str) -> None:
    RECOVERIES.labels(tenant_slug, outcome).inc()


def observe_delivery_lag(stream: str, seconds: float) -> None:
    child = _lags.get(stream)
    if child is None:
        child = _lags[stream] = EVENT_DELIVERY_LAG.labels(stream)
    child.observe(seconds if seconds > 0 else 0.0)


def observe_webhook_delivery(tenant_slug: str, outcome: str) -> None:
    """One webhook delivery attempt and how it ended (e.g. `delivered`, `failed`, `retrying`,
    `refused`): called by the webhook sender."""
    WEBHOOK_DELIVERIES.labels(tenant_slug, outcome).inc()
