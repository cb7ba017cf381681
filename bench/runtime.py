"""Runtime benchmarks: `python bench/runtime.py [--json] [--quick]`.

Side by side in one run, on one fresh SQLite database (the embedded default):
- batched pure steps: a chain of transform nodes executed by a real Segment (each step's row,
  checkpoint, events and usage written whole, but consecutive pure steps SHARE one commit,
  see runs/services/steps.py: this is not a per-commit cost; bench/steps.py measures
  effectful steps, one commit each) vs raw SQLite single-row commits with the same pragmas
  and vs LangGraph with its SqliteSaver and durability="sync" on the same chain. The default
  is synchronous=FULL (RUNYARD_SQLITE_SYNCHRONOUS); the same pair with NORMAL is reported too;
- runs/s with the raw baseline inside Runyard's own cluster (kept for history: see
  bench/throughput.py for the baseline in its own cluster, on both setups);
- fairness: with 2 workers, tenant A queues 300 runs of ~50 ms, then tenant B queues 5; B's
  queue wait (p95) against the mean run duration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / "var" / "bench"


def setup_django(db: Path) -> None:
    if db.parent.exists():
        shutil.rmtree(db.parent)
    db.parent.mkdir(parents=True)
    os.environ["SQLITE_PATH"] = str(db)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["MEDIA_ROOT"] = str(db.parent / "media")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


def chain(name: str, n: int, node: dict[str, Any]) -> dict[str, Any]:
    names = [f"n{i}" for i in range(n)]
    nodes: dict[str, Any] = {k: dict(node) for k in names}
    nodes["done"] = {"kind": "end"}
    order = [*names, "done"]
    return {
        "name": name,
        "start": "n0",
        "state": {"x": {"default": 0}},
        "nodes": nodes,
        "max_steps": n + 10,
        "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
    }


def bench_tenant(slug: str, **limits: Any) -> Any:
    from tenants.models import Tenant

    defaults = {
        "max_concurrent_runs": 1000,
        "max_queued_runs": 1_000_000,
        "runs_per_minute": None,
        "max_steps": None,
        "max_wall_seconds": None,
    }
    return Tenant.objects.create(slug=slug, name=slug, **{**defaults, **limits})


# --- persisted step cost ---------------------------------------------------------------------


def persisted_steps(n: int, repeats: int, slug: str = "steps") -> dict[str, Any]:
    from runs import dispatch
    from runs.services import claim_run, create_graph_version, create_run
    from runs.services.execute import Segment

    real_enqueue = dispatch.enqueue_run
    dispatch.enqueue_run = lambda pk: None  # this process executes these runs itself
    tenant = bench_tenant(slug)
    create_graph_version(
        tenant, chain("steps", n, {"kind": "transform", "set": {"x": "state.x + 1"}})
    )
    per_step = []
    for _ in range(repeats):
        run = create_run(tenant, graph="steps")
        claimed = claim_run(run.pk)
        t0 = time.perf_counter()
        outcome = Segment(claimed).execute()
        elapsed = time.perf_counter() - t0
        assert outcome == "succeeded", outcome
        per_step.append(elapsed / (n + 1))
    dispatch.enqueue_run = real_enqueue
    best = min(per_step)
    return {
        "nodes": n,
        "us_per_step": round(best * 1e6, 1),
        "steps_per_s": round(1 / best),
        "samples_us": [round(s * 1e6, 1) for s in per_step],
    }


def raw_sqlite_commits(path: Path, count: int, synchronous: str) -> dict[str, Any]:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    payload = "x" * 200
    t0 = time.perf_counter()
    for _ in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", (payload,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return {
        "synchronous": synchronous,
        "commits": count,
        "us_per_commit": round(elapsed / count * 1e6, 1),
        "commits_per_s": round(count / elapsed),
    }


def langgraph_sqlite(path: Path, n: int, repeats: int) -> dict[str, Any]:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError as exc:
        return {"skipped": f"{exc} (pip install -e '.[bench]')"}
    from typing import TypedDict

    class State(TypedDict):
        x: int

    def step(state: State) -> dict[str, int]:
        return {"x": state["x"] + 1}

    builder = StateGraph(State)
    names = [f"n{i}" for i in range(n)]
    for name in names:
        builder.add_node(name, step)
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    conn = sqlite3.connect(path, check_same_thread=False)
    graph = builder.compile(checkpointer=SqliteSaver(conn))
    per_node = []
    for i in range(repeats):
        t0 = time.perf_counter()
        out = graph.invoke({"x": 0}, {"configurable": {"thread_id": f"t{i}"}}, durability="sync")
        per_node.append((time.perf_counter() - t0) / n)
        assert out["x"] == n
    conn.close()
    best = min(per_node)
    return {
        "nodes": n,
        "us_per_node": round(best * 1e6, 1),
        "samples_us": [round(s * 1e6, 1) for s in per_node],
    }


# --- end to end through real processes -------------------------------------------------------


class Procs:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir, self.procs = env, log_dir, []

    def start(self, *args: str) -> None:
        log = open(self.log_dir / f"{args[0]}.log", "ab")  # noqa: SIM115
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def stop(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        self.procs = []


def wait_until(check: Any, timeout: float) -> float:
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("benchmark did not finish in time")
        time.sleep(0.02)
    return time.perf_counter()


def warm_cluster(seconds: float = 4.0) -> None:
    from django_q.models import Success
    from django_q.tasks import async_task

    async_task("bench.noop.noop")
    wait_until(lambda: Success.objects.exists(), 60)
    time.sleep(seconds / 4)


def end_to_end(count: int, workers: int) -> dict[str, Any]:
    from django.db import connection
    from django_q.models import Success
    from django_q.tasks import async_task

    from runs.models import Run
    from runs.services import create_graph_version, create_run

    env = {**os.environ, "Q_WORKERS": str(workers), "PYTHONUNBUFFERED": "1"}
    procs = Procs(env, WORK)
    procs.start("qcluster")
    procs.start("runyard_scheduler")
    try:
        warm_cluster()
        Success.objects.all().delete()
        t0 = time.perf_counter()
        for _ in range(count):
            async_task("bench.noop.noop")
        t1 = wait_until(lambda: Success.objects.count() >= count, 300)
        raw_rate = count / (t1 - t0)

        tenant = bench_tenant("e2e")
        create_graph_version(
            tenant, chain("e2e", 1, {"kind": "transform", "set": {"x": "state.x + 1"}})
        )
        t0 = time.perf_counter()
        for _ in range(count):
            create_run(tenant, graph="e2e")
        t1 = wait_until(
            lambda: Run.objects.filter(tenant=tenant, status="succeeded").count() >= count, 300
        )
        runs_rate = count / (t1 - t0)
        latencies = [
            (r.finished_at - r.created_at).total_seconds()
            for r in Run.objects.filter(tenant=tenant)
        ]
    finally:
        procs.stop()
        connection.close()
    return {
        "runs": count,
        "workers": workers,
        "raw_noop_tasks_per_s": round(raw_rate, 1),
        "runs_per_s": round(runs_rate, 1),
        "ratio": round(runs_rate / raw_rate, 3),
        "run_latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "run_latency_p95_ms": round(p95(latencies) * 1000, 1),
    }


def fairness(a_runs: int, b_runs: int) -> dict[str, Any]:
    from runs.models import Run
    from runs.services import create_graph_version, create_run

    env = {
        **os.environ,
        "Q_WORKERS": "2",
        "RUNYARD_DISPATCH_CAPACITY": "2",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ["RUNYARD_DISPATCH_CAPACITY"] = "2"
    from django.conf import settings

    settings.RUNYARD["DISPATCH_CAPACITY"] = 2
    slow = {
        "name": "work",
        "start": "think",
        "nodes": {
            "think": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "hi",
                "responses": ["ok"],
                "latency_ms": 50,
                "output": "answer",
            },
            "done": {"kind": "end"},
        },
        "edges": [{"from": "think", "to": "done"}],
    }
    a, b = (
        bench_tenant("fair-a", max_concurrent_runs=10),
        bench_tenant("fair-b", max_concurrent_runs=10),
    )
    for t in (a, b):
        create_graph_version(t, slow)
    procs = Procs(env, WORK)
    procs.start("qcluster")
    procs.start("runyard_scheduler")
    try:
        warm_cluster()
        for _ in range(a_runs):
            create_run(a, graph="work")
        time.sleep(1.0)
        b_ids = [create_run(b, graph="work").pk for _ in range(b_runs)]
        wait_until(
            lambda: Run.objects.filter(pk__in=b_ids, status="succeeded").count() >= b_runs, 120
        )
        a_left = Run.objects.filter(tenant=a, status="queued").count()
    finally:
        procs.stop()
    done_a = Run.objects.filter(tenant=a, status="succeeded")
    mean_run = statistics.mean((r.finished_at - r.started_at).total_seconds() for r in done_a)
    waits = [
        (r.started_at - r.created_at).total_seconds() for r in Run.objects.filter(pk__in=b_ids)
    ]
    return {
        "a_runs": a_runs,
        "b_runs": b_runs,
        "workers": 2,
        "a_still_queued_when_b_done": a_left,
        "mean_run_ms": round(mean_run * 1000, 1),
        "b_wait_ms": [round(w * 1000, 1) for w in waits],
        "b_wait_p95_ms": round(p95(waits) * 1000, 1),
        "b_wait_p95_over_mean_run": round(p95(waits) / mean_run, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    quick = args.quick
    setup_django(WORK / "runtime.sqlite3")

    from django.conf import settings
    from django.db import connection

    nodes, repeats, commits = (50, 2, 2000) if quick else (200, 4, 10000)
    synchronous = settings.SQLITE_SYNCHRONOUS
    steps = persisted_steps(nodes, repeats)
    raw = raw_sqlite_commits(WORK / "raw.sqlite3", commits, synchronous)
    lg = langgraph_sqlite(WORK / "langgraph.sqlite3", nodes, repeats)
    # The same pair with synchronous=NORMAL (cheaper commits that a power loss may undo).
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous=NORMAL")
    steps_normal = persisted_steps(nodes, repeats, slug="steps-normal")
    raw_normal = raw_sqlite_commits(WORK / "raw-normal.sqlite3", commits, "NORMAL")
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA synchronous={synchronous}")
    report: dict[str, Any] = {
        "synchronous": synchronous,
        "batched_pure_steps": steps,
        "raw_sqlite_commit": raw,
        "langgraph_sqlite_sync": lg,
        "step_rate_vs_raw_commit": round(steps["steps_per_s"] / raw["commits_per_s"], 3),
        "with_synchronous_normal": {
            "persisted_step_us": steps_normal["us_per_step"],
            "raw_commit_us": raw_normal["us_per_commit"],
            "step_rate_vs_raw_commit": round(
                steps_normal["steps_per_s"] / raw_normal["commits_per_s"], 3
            ),
        },
        "step_time_vs_langgraph": (
            round(steps["us_per_step"] / lg["us_per_node"], 3) if "us_per_node" in lg else None
        ),
    }
    report["end_to_end"] = end_to_end(100 if quick else 300, 4)
    report["fairness"] = fairness(100 if quick else 300, 5)
    report["targets"] = {
        "step_rate_vs_raw_commit >= 0.33": report["step_rate_vs_raw_commit"] >= 0.33,
        "step_time_vs_langgraph <= 1.0": (report["step_time_vs_langgraph"] or 99) <= 1.0,
        "runs_per_s_vs_raw_noop >= 0.8": report["end_to_end"]["ratio"] >= 0.8,
    }
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
