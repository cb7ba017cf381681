"""Scale-out, shown: on PostgreSQL + Redis, three qclusters, two daphnes and two schedulers
(separate processes standing for machines) share the work. Runs spread over every cluster,
the dispatch capacity and a tenant's limit hold cluster-wide, a run's events reach a client on
either daphne, and killing one cluster mid-run (SIGKILL, its whole group) loses nothing."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from websockets.sync.client import connect

from runs.models import Event, Run, Step
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from tests.e2e.processes import platform
from tests.e2e.test_live__delivery import bearer, is_end, paced_spec, recv_until, stored
from tests.e2e.test_rolling_restart import group_members, wait_cluster_up

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CLUSTERS = ("worker:a", "worker:b", "worker:c")
CAPACITY = 4
TENANT_CAP = 2
STEPS = 6


def cluster_of(pids: dict[int, str], lease_owner: str) -> str | None:
    return pids.get(int(lease_owner.split(":")[1])) if lease_owner else None


def test_three_clusters_two_daphnes_two_schedulers(
    tenant, other_tenant, tmp_path: Path, settings
) -> None:
    if settings.IS_SQLITE or not settings.REDIS_URL:
        pytest.skip("scale-out runs on PostgreSQL + Redis (DATABASE_URL and REDIS_URL)")
    # This process dispatches too (create_run): every dispatcher shares the setting.
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": CAPACITY}
    tenant.max_concurrent_runs = TENANT_CAP
    tenant.save()
    other_tenant.max_concurrent_runs = 10
    other_tenant.save()
    for t in (tenant, other_tenant):
        create_graph_version(t, paced_spec("spread", steps=STEPS, latency_ms=200))
    env = {
        "Q_WORKERS": "2",
        "RUNYARD_DISPATCH_CAPACITY": str(CAPACITY),
        "RUNYARD_LEASE_SECONDS": "4",
        "RUNYARD_HEARTBEAT_SECONDS": "0.5",
        "RUNYARD_DISPATCH_GRACE_SECONDS": "5",
    }
    names = ("web", "web:b", *CLUSTERS, "scheduler", "scheduler:b")
    with platform(tmp_path, *names, **env) as p:
        for name in CLUSTERS:
            wait_cluster_up(p, name)
        # Every process of a cluster is in its group: a worker's pid names its cluster.
        pids = {
            int(line.split()[0]): name
            for name in CLUSTERS
            for line in group_members(p.procs[name].pid)
        }
        watched = create_run(other_tenant, graph="spread")
        viewers = [
            connect(
                p.url_of(web).replace("http", "ws") + f"/ws/runs/{watched.public_id}/?after=0",
                additional_headers=bearer(other_tenant),
                open_timeout=10,
            )
            for web in ("web", "web:b")
        ]
        runs = [watched]
        runs += [create_run(tenant, graph="spread") for _ in range(6)]
        runs += [create_run(other_tenant, graph="spread") for _ in range(9)]
        ids = [r.pk for r in runs]

        most, most_capped, killed = 0, 0, set()
        deadline = time.monotonic() + 120
        while True:
            rows = list(Run.objects.filter(pk__in=ids).values("pk", "status", "tenant_id"))
            running = [r for r in rows if r["status"] == RunStatus.RUNNING]
            most = max(most, len(running))
            most_capped = max(most_capped, sum(r["tenant_id"] == tenant.pk for r in running))
            assert len(running) <= CAPACITY and most_capped <= TENANT_CAP
            if "worker:c" in p.procs:
                mid_step = Run.objects.filter(pk__in=ids, status=RunStatus.RUNNING, steps__gte=1)
                on_c = [r for r in mid_step if cluster_of(pids, r.lease_owner) == "worker:c"]
                if on_c:
                    p.kill("worker:c")  # SIGKILL to its whole group: a machine lost
                    # Every run it held then, mid-step or just claimed, is orphaned.
                    held = Run.objects.filter(pk__in=ids, status=RunStatus.RUNNING)
                    killed = {r.pk for r in held if cluster_of(pids, r.lease_owner) == "worker:c"}
            if all(r["status"] == RunStatus.SUCCEEDED for r in rows):
                break
            assert time.monotonic() < deadline, (rows, p.log("worker:a"), p.log("scheduler"))
            time.sleep(0.05)

        assert killed, "cluster c held no run at its kill (it finished one just then): rerun"
        assert most >= CAPACITY - 1  # the clusters did run side by side
        started = Event.objects.filter(run_id__in=ids, type="run.started")
        clusters = Counter(cluster_of(pids, e.data["worker"]) for e in started)
        assert set(clusters) == set(CLUSTERS), clusters
        for run in Run.objects.filter(pk__in=ids):
            indexes = Counter(Step.objects.filter(run=run).values_list("index", flat=True))
            assert sorted(indexes) == list(range(1, STEPS + 2)), run.public_id
            assert set(indexes.values()) == {1}
            assert (run.recoveries >= 1) == (run.pk in killed), run.public_id
        for viewer in viewers:
            with viewer:
                frames = recv_until(viewer, is_end)
            assert [f for f in frames if f["type"] == "event"] == stored(watched)
        assert os.getpgid(p.procs["worker:a"].pid) == p.procs["worker:a"].pid
        assert group_members(p.procs["worker:a"].pid)  # the survivors still run
