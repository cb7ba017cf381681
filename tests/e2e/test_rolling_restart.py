"""Rolling restarts lose no time: a worker cluster given SIGTERM on its whole process group (as
honcho, systemd and Kubernetes send it) hands its runs back at the next step boundary, another
cluster takes them at once, and the stopped one exits with nothing left behind."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from runs.models import Event, Step
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from tests.e2e.processes import Platform, platform
from tests.e2e.test_live__delivery import paced_spec

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def group_members(pgid: int) -> list[str]:
    """Live (not zombie) processes in process group `pgid`."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == pgid:
            alive.append(stat[:80])
    return alive


def wait_for(check, seconds: float, what: str):  # noqa: ANN001, ANN201 - a test helper
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {what}")


def wait_cluster_up(p: Platform, name: str) -> None:
    wait_for(lambda: "running." in p.log(name), 60, f"{name} up: {p.log(name)}")


def stop_group(p: Platform, name: str) -> float:
    """SIGTERM to the cluster's whole process group; seconds until its main process exited."""
    proc = p.procs.pop(name)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{name} still running 30 s after SIGTERM: {p.log(name)}") from None
    took = time.monotonic() - started
    time.sleep(0.3)  # its children are reaped by their parents as they exit
    assert group_members(proc.pid) == [], p.log(name)
    return took


def pgid_of_worker(lease_owner: str) -> int:
    pid = int(lease_owner.split(":")[1])
    return os.getpgid(pid)


def test_an_idle_cluster_exits_on_sigterm_to_its_group(tmp_path: Path) -> None:
    with platform(tmp_path, "worker", Q_WORKERS="2") as p:
        wait_cluster_up(p, "worker")
        took = stop_group(p, "worker")
        assert took < 30
        assert "has stopped" in p.log("worker")


def test_a_running_run_is_handed_back_at_once_and_finished_by_another_cluster(
    tenant, tmp_path: Path
) -> None:
    steps = 60
    create_graph_version(tenant, paced_spec("restart", steps=steps, latency_ms=300))
    env = {"RUNYARD_LEASE_SECONDS": "30", "Q_WORKERS": "1"}
    with platform(tmp_path, "worker", **env) as p:
        a = p.procs["worker"].pid
        wait_cluster_up(p, "worker")
        run = create_run(tenant, graph="restart")

        def started_on_a() -> bool:
            run.refresh_from_db()
            return run.status == RunStatus.RUNNING and run.steps >= 2

        wait_for(started_on_a, 30, "the run running on the first cluster")
        assert pgid_of_worker(run.lease_owner) == a
        p.start("worker:b")
        b = p.procs["worker:b"].pid
        wait_cluster_up(p, "worker:b")
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING and run.steps < steps - 10, "too slow to test"
        assert pgid_of_worker(run.lease_owner) == a

        signalled = time.monotonic()
        proc_a = p.procs["worker"]
        os.killpg(a, signal.SIGTERM)

        def handed_back() -> Event | None:
            return Event.objects.filter(run=run, type="run.queued", data__reason="shutdown").first()

        wait_for(handed_back, 3, "the run handed back")

        def taken_by_b() -> bool:
            run.refresh_from_db()
            owner = run.lease_owner
            return run.status == RunStatus.SUCCEEDED or (
                run.status == RunStatus.RUNNING and bool(owner) and pgid_of_worker(owner) == b
            )

        wait_for(taken_by_b, 10, "the second cluster taking the run")
        taken_after = time.monotonic() - signalled
        assert taken_after < 10  # a lease (30 s) would have kept it orphaned three times longer

        p.procs.pop("worker")
        proc_a.wait(timeout=30)
        assert time.monotonic() - signalled < 30
        time.sleep(0.3)
        assert group_members(a) == [], p.log("worker")

        def finished() -> bool:
            run.refresh_from_db()
            return run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)

        wait_for(finished, 60, "the run finished")
        assert run.status == RunStatus.SUCCEEDED, run.error
        assert run.recoveries == 0
        indexes = Counter(Step.objects.filter(run=run).values_list("index", flat=True))
        assert [i for i, n in indexes.items() if n > 1] == []
        assert len(indexes) == steps + 1  # every llm node and the end, each committed once
        queued = list(
            Event.objects.filter(run=run, type="run.queued").values_list("data", flat=True)
        )
        assert [q.get("reason") for q in queued] == [None, "shutdown"]  # created, handed back
        assert not Event.objects.filter(run=run, type="run.resurrected").exists()
