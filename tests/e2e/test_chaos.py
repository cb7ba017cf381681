"""kill -9 of the worker at random points: every run still ends as if nothing happened.

For each trial a run of a chain of slow function nodes starts on a real qcluster; the worker is
killed (SIGKILL, whole process group) at a random moment and started again. The reconciler sees
the expired lease and resumes the run from its last checkpoint. Checked per run: the same final
state as an uninterrupted run, each step index committed once, and the interrupted step
re-executed at most once. `make chaos` runs many more trials (CHAOS_TRIALS).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from runs.engine import Executor, initial_state, parse_spec
from runs.models import Run, Step
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from tests.e2e import chaos_functions  # noqa: F401 - registers chaos_step here too
from tests.e2e.processes import platform

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TRIALS = int(os.environ.get("CHAOS_TRIALS", 12))  # `make chaos`: 200
NODES = 12


def chaos_spec() -> dict:
    names = [f"s{i}" for i in range(NODES)]
    nodes = {
        n: {"kind": "function", "function": "chaos_step", "args": {"add": i + 1, "seconds": 0.06}}
        for i, n in enumerate(names)
    }
    nodes["done"] = {"kind": "end"}
    order = names + ["done"]
    return {
        "name": "chaos",
        "start": "s0",
        "state": {
            "trail": {"reducer": "append", "default": []},
            "total": {"reducer": "replace", "default": 0},
        },
        "nodes": nodes,
        "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
    }


def expected_state() -> dict:
    spec = parse_spec(chaos_spec())
    state = initial_state(spec, {})
    for result in Executor(spec).run(state):
        state = result.state
    return state


def test_kill_9_of_the_worker_at_random_points(tenant, tmp_path: Path) -> None:
    tenant.max_concurrent_runs = 50
    tenant.save()
    create_graph_version(tenant, chaos_spec())
    log = tmp_path / "calls.log"
    want = expected_state()
    rng = random.Random(20261122)
    env = {
        "CHAOS_LOG": str(log),
        "RUNYARD_FUNCTION_MODULES": "tests.e2e.chaos_functions",
        "RUNYARD_LEASE_SECONDS": "1.5",
        "RUNYARD_HEARTBEAT_SECONDS": "0.3",
        "RUNYARD_MAX_RECOVERIES": "50",
        "RUNYARD_DISPATCH_GRACE_SECONDS": "5",
    }
    runs: list[Run] = []
    with platform(tmp_path, "worker", "scheduler", **env) as p:
        for trial in range(TRIALS):
            run = create_run(tenant, graph="chaos", metadata={"trial": trial})
            runs.append(run)
            started = time.monotonic()
            while Run.objects.get(pk=run.pk).status == RunStatus.QUEUED:
                assert time.monotonic() - started < 30, p.log("worker")[-2000:]
                time.sleep(0.02)
            # Somewhere inside the ~0.8 s the run takes: during or between steps.
            time.sleep(rng.uniform(0.0, 0.7))
            p.kill("worker")
            p.start("worker")
        deadline = time.monotonic() + 120
        pending = {r.pk for r in runs}
        while pending and time.monotonic() < deadline:
            done = Run.objects.filter(
                pk__in=pending,
                status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED],
            )
            pending -= set(done.values_list("pk", flat=True))
            time.sleep(0.2)
        assert not pending, f"runs never finished: {p.log('worker')[-2000:]}"

    calls = Counter(tuple(line.split()) for line in log.read_text().splitlines())
    recovered = 0
    for trial, run in enumerate(runs):
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, (trial, run.status, run.error)
        assert run.state == want, trial
        indexes = list(Step.objects.filter(run=run).values_list("index", flat=True))
        assert indexes == list(range(1, NODES + 2)), (trial, indexes)  # each index once
        per_node = [calls[(str(trial), f"s{i}")] for i in range(NODES)]
        assert all(n >= 1 for n in per_node), (trial, per_node)
        # Each death interrupts at most the one step in flight, which alone runs again; a run
        # can be hit by two kills (it is still going when the next trial kills the worker).
        assert sum(n - 1 for n in per_node) <= run.recoveries, (trial, per_node, run.recoveries)
        recovered += run.recoveries
    assert recovered >= TRIALS // 3, "the kills should have interrupted many runs"
