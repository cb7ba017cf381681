"""/metrics on the real daphne shows what the real qcluster workers observed: the step
histogram is written by a forked worker process and summed by the web process (prometheus
multiprocess mode), and a worker's counts survive its exit (folded into the archive)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from runs.models import Run
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from tests.e2e.processes import free_port, platform
from tests.observability.conftest import parse, value
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.e2e


def wait_done(runs: list[Run], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = set(
            Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)
        )
        if statuses <= {RunStatus.SUCCEEDED, RunStatus.FAILED}:
            return
        time.sleep(0.1)
    raise AssertionError(f"runs still {statuses}")


def test_the_web_process_serves_what_the_workers_observed(
    transactional_db: None, tenant, tmp_path: Path
) -> None:
    prom = tmp_path / "prometheus"
    prom.mkdir()
    (prom / "counter_999999999.db").write_bytes(b"\0" * 8)  # left by a process long gone
    create_graph_version(tenant, chain_spec(n=4))
    with platform(
        tmp_path,
        "web",
        "worker",
        PROMETHEUS_MULTIPROC_DIR=str(prom),
        Q_WORKERS="2",
        LOG_FORMAT="json",
    ) as p:
        assert not (prom / "counter_999999999.db").exists()  # cleaned at start
        runs = [create_run(tenant, graph="chain") for _ in range(3)]
        wait_done(runs)
        assert {r.status for r in Run.objects.filter(pk__in=[r.pk for r in runs])} == {
            RunStatus.SUCCEEDED
        }, p.log("worker")

        response = httpx.get(p.url + "/metrics", timeout=10)
        assert response.status_code == 200, response.text
        samples = parse(response.text)
        slug = tenant.slug
        step = "runyard_step_duration_seconds"
        # 3 runs x (4 transforms + end), observed in the worker processes, none in daphne
        assert value(samples, f"{step}_count", tenant=slug, node_kind="transform") == 12
        assert value(samples, f"{step}_count", tenant=slug, node_kind="end") == 3
        assert value(samples, "runyard_runs_finished_total", tenant=slug, status="succeeded") == 3
        assert value(samples, "runyard_queue_wait_seconds_count", tenant=slug) == 3
        assert value(samples, "runyard_runs", tenant=slug, status="running") == 0
        files = {f.name.split("_")[0] for f in prom.glob("*.db")}
        assert "histogram" in files

        # The worker stops: its processes fold their counts into the archive as they exit.
        p.kill("worker", signal.SIGINT)
        assert list(prom.glob("histogram_archive.db"))
        after = parse(httpx.get(p.url + "/metrics", timeout=10).text)
        assert value(after, f"{step}_count", tenant=slug, node_kind="transform") == 12
        assert value(after, "runyard_runs_finished_total", tenant=slug, status="succeeded") == 3
    for name in ("web", "worker"):  # LOG_FORMAT=json: every line the processes wrote
        lines = (tmp_path / f"{name}.log").read_text().splitlines()
        assert lines, name
        for line in lines:
            record = json.loads(line)
            assert {"time", "level", "logger", "message"} <= record.keys(), line


def test_a_machine_with_only_workers_serves_its_own_metrics(
    transactional_db: None, tenant, tmp_path: Path
) -> None:
    """RUNYARD_METRICS_PORT: the qcluster serves its machine's process metrics itself."""
    prom = tmp_path / "prometheus"
    prom.mkdir()
    port = free_port()
    create_graph_version(tenant, chain_spec(n=2))
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
        "RUNYARD_METRICS_PORT": str(port),
        "RUNYARD_METRICS_TOKEN": "tok-123",
        "Q_WORKERS": "1",
    }
    with platform(tmp_path, "worker", **env) as p:
        run = create_run(tenant, graph="chain")
        wait_done([run])
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:  # the cluster may still be starting
            try:
                response = httpx.get(url, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, p.log("worker")
                time.sleep(0.2)
        assert response.status_code == 200
        samples = parse(response.text)
        step = "runyard_step_duration_seconds_count"
        assert value(samples, step, tenant=tenant.slug, node_kind="transform") == 2
        assert "runyard_dispatch_capacity" not in response.text  # the web's, cluster-wide
        assert httpx.post(url, timeout=5).status_code == 404
        forwarded = httpx.get(url, headers={"X-Forwarded-For": "203.0.113.1"}, timeout=5)
        assert forwarded.status_code == 401
        with_token = httpx.get(
            url,
            headers={"X-Forwarded-For": "203.0.113.1", "Authorization": "Bearer tok-123"},
            timeout=5,
        )
        assert with_token.status_code == 200
