"""A run started in the test reaches a real qcluster worker and ends there."""

from __future__ import annotations

import time

import pytest

from runs.models import Run
from runs.services import create_run
from runs.status import RunStatus
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.e2e


def wait_status(run: Run, statuses: set[str], timeout: float = 30) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status in statuses:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run.public_id} still {run.status}")


def test_a_run_executes_on_a_real_worker(tenant, live_platform) -> None:
    from runs.services import create_graph_version

    create_graph_version(tenant, chain_spec(n=5))
    run = create_run(tenant, graph="chain")
    run = wait_status(run, {RunStatus.SUCCEEDED, RunStatus.FAILED})
    assert run.status == RunStatus.SUCCEEDED, (run.error, live_platform.log("worker"))
    assert run.state["count"] == 5
    assert ":" in run.lease_owner or run.lease_owner == ""
