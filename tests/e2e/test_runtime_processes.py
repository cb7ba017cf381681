"""What only real processes show: deadlines across restarts, cancel on a live worker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runs.models import Run
from runs.services import cancel_run, create_graph_version, create_run
from runs.status import RunStatus
from tests.e2e.processes import platform
from tests.e2e.test_processes import wait_status
from tests.runs.conftest import approval_spec, slow_spec

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_approval_deadline_survives_a_restart_of_every_process(tenant, tmp_path: Path) -> None:
    create_graph_version(tenant, approval_spec(timeout=2, default="approve"))
    with platform(tmp_path, "worker", "scheduler") as p:
        run = create_run(tenant, graph="approve")
        wait_status(run, {RunStatus.WAITING})
        p.kill("worker")
        p.kill("scheduler")
    time.sleep(2.5)  # the deadline passes while nothing is running
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    with platform(tmp_path, "worker", "scheduler"):
        run = wait_status(run, {RunStatus.SUCCEEDED, RunStatus.FAILED})
    assert run.status == RunStatus.SUCCEEDED
    assert run.state["log"] == ["before", "after"]  # the default (approve) applied


def test_cancel_of_a_30s_call_on_a_real_worker_ends_within_2s(tenant, tmp_path: Path) -> None:
    create_graph_version(tenant, slow_spec(latency_ms=30000))
    with platform(tmp_path, "worker", "scheduler"):
        run = create_run(tenant, graph="slow")
        wait_status(run, {RunStatus.RUNNING})
        time.sleep(0.5)
        started = time.monotonic()
        cancel_run(Run.objects.get(pk=run.pk), by="test")
        run = wait_status(run, {RunStatus.CANCELLED}, timeout=5)
        assert time.monotonic() - started < 2.0
