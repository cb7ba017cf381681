"""Runs per second and start latency through real processes: `python bench/throughput.py`.

Each setup runs in a child process of its own with a fresh database: the embedded default
(SQLite + django-q2's ORM broker) and PostgreSQL + the Redis broker. In each, side by side:

- baseline: plain django-q2 no-op tasks on the same Q_CLUSTER settings, in a cluster of their
  own (a qcluster started for them alone and stopped before Runyard's starts, no scheduler);
  tasks/s for a burst, and enqueue -> task start p50/p95 for tasks sent one at a time; twice:
  saved in django-q2's result table as it does by default, and enqueued with `save=False` as
  Runyard enqueues its run tasks (like with like: then the saved baseline pays for saving,
  and with `save_limit` its monitor reads the saved tasks to prune one, for every task);
- Runyard: a qcluster + `runyard_scheduler` as the Procfile starts them; runs/s for a burst
  of one-node runs created through the service `POST /runs` calls (each run: a transform
  node and the end node), and run created -> first step started p50/p95 for runs created one
  at a time (the dispatcher's own path: create_run enqueues on commit);
- the machine's CPU time per task / per run during each burst, by process kind (client,
  qcluster, postgresql, redis, scheduler), from /proc: on a 2-vCPU machine both bursts are
  CPU-bound, so this says where a run costs more than a task, less noisily than a rate;
- with PostgreSQL + Redis: runs/s with one, two and three qclusters (separate processes, as
  separate machines would run them; on a 2-vCPU machine they share the same two cores);
- `round_trips`: a bare database (and Redis) round trip back to back and after 20 ms idle,
  what each sequential hop of a single run's start costs on this machine.

Targets (issue #17): runs/s >= 1.0x the baseline's tasks/s on both setups; created -> first
step <= 2x the broker's enqueue -> start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / "var" / "bench" / "throughput"
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PG_DB = "runyard_bench_throughput"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
WORKERS = 4
TARGETS = {"runs_vs_tasks": 1.0, "start_vs_broker": 2.0}


def cpu_ticks() -> dict[str, tuple[str, int]]:
    """Every process's CPU time so far (user + system, clock ticks) by pid, with its kind:
    the machine's whole work, since a run's cost is spread over the client, the workers,
    the database and Redis. Empty where there is no /proc."""
    out: dict[str, tuple[str, int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[entry.name] = (process_kind(cmd), int(fields[11]) + int(fields[12]))
    return out


def process_kind(cmd: str) -> str:
    for needle, kind in (
        ("qcluster", "qcluster"),
        ("runyard_scheduler", "scheduler"),
        ("throughput.py", "client"),
        ("postgres", "postgresql"),
        ("redis-server", "redis"),
    ):
        if needle in cmd:
            return kind
    return "other"


def cpu_per_item(before: dict[str, tuple[str, int]], count: int) -> dict[str, float]:
    """CPU milliseconds per task or run since `before`, by process kind and in all."""
    after, tick_ms = cpu_ticks(), 1000 / os.sysconf("SC_CLK_TCK")
    spent: dict[str, float] = {}
    for pid, (kind, ticks) in after.items():
        used = ticks - before.get(pid, (kind, 0))[1]
        if used > 0:
            spent[kind] = spent.get(kind, 0) + used * tick_ms / count
    spent = {kind: round(ms, 2) for kind, ms in sorted(spent.items(), key=lambda kv: -kv[1])}
    return {"all": round(sum(spent.values()), 2), **spent}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# --- child --------------------------------------------------------------------------------------


def setup() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def wait_until(check: Any, timeout: float, poll: float = 0.01) -> float:
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("benchmark did not finish in time")
        time.sleep(poll)
    return time.perf_counter()


def procs_for(env: dict[str, str]) -> Any:
    from bench.runtime import Procs

    return Procs(env, WORK)


def baseline(count: int, singles: int, *, saved: bool = True) -> dict[str, Any]:
    """Plain django-q2: no-op tasks in a cluster of their own. `saved`: as django-q2 does by
    default, each success is saved in its result table (with `save_limit`, its monitor then
    reads the saved ones to prune one); not `saved`: enqueued with `save=False`, as Runyard
    enqueues its run tasks, each task appending a line to a file instead, to be counted."""
    from django.db import connection
    from django_q.models import Success
    from django_q.tasks import async_task

    env = {**os.environ, "Q_WORKERS": str(WORKERS)}
    procs = procs_for(env)
    procs.start("qcluster")
    notes = WORK / f"noted-{os.getpid()}-{time.monotonic_ns()}.txt"

    def done() -> int:
        if saved:
            return Success.objects.count()
        return notes.read_bytes().count(b"\n") if notes.exists() else 0

    def send(enqueued_at: float | None = None) -> None:
        if saved:
            if enqueued_at is None:
                async_task("bench.noop.noop")
            else:
                async_task("bench.noop.started_after", enqueued_at)
        else:
            async_task("bench.noop.noted", str(notes), enqueued_at, save=False)

    def waits() -> list[float]:
        if saved:
            return [float(s.result) for s in Success.objects.all()]
        return [float(line) for line in notes.read_text().split()]

    def clear() -> None:
        Success.objects.all().delete()
        notes.unlink(missing_ok=True)

    try:
        send(time.time())
        wait_until(lambda: done() > 0, 60)
        time.sleep(0.5)
        clear()
        for _ in range(singles):  # one at a time: the broker's own enqueue -> start
            before = done()
            send(time.time())
            wait_until(lambda b=before: done() > b, 30, poll=0.002)
            time.sleep(0.02)
        started = waits()
        clear()
        ticks = cpu_ticks()
        t0 = time.perf_counter()
        for _ in range(count):
            send()
        t1 = wait_until(lambda: done() >= count, 300)
        cpu = cpu_per_item(ticks, count)
        clear()
    finally:
        procs.stop()
        connection.close()
    return {
        "tasks": count,
        "saved": saved,
        "tasks_per_s": round(count / (t1 - t0), 1),
        "enqueue_to_start_p50_ms": ms(statistics.median(started)),
        "enqueue_to_start_p95_ms": ms(pct(started, 0.95)),
        "cpu_ms_per_task": cpu,
    }


def runyard(count: int, singles: int, clusters: int) -> dict[str, Any]:
    """Runyard as the Procfile runs it: qcluster(s) + the scheduler."""
    from django.db import connection

    from bench.runtime import bench_tenant, chain
    from runs.models import Run, Step
    from runs.services import create_graph_version, create_run

    env = {**os.environ, "Q_WORKERS": str(WORKERS)}
    procs = procs_for(env)
    for _ in range(clusters):
        procs.start("qcluster")
    procs.start("runyard_scheduler")
    tenant = bench_tenant(f"tp{clusters}-{int(time.time() * 1000) % 100000}")
    create_graph_version(tenant, chain("tp", 1, {"kind": "transform", "set": {"x": "state.x + 1"}}))

    def done(ids: list[int]) -> bool:
        return Run.objects.filter(pk__in=ids, status="succeeded").count() >= len(ids)

    try:
        warm = [create_run(tenant, graph="tp").pk for _ in range(clusters * WORKERS)]
        wait_until(lambda: done(warm), 120)
        time.sleep(0.5)
        singles_ids = []
        for _ in range(singles):
            pk = create_run(tenant, graph="tp").pk
            singles_ids.append(pk)
            wait_until(lambda pk=pk: done([pk]), 30, poll=0.002)
            time.sleep(0.02)
        ticks = cpu_ticks()
        t0 = time.perf_counter()
        ids = [create_run(tenant, graph="tp").pk for _ in range(count)]
        created = time.perf_counter()
        t1 = wait_until(lambda: done(ids), 600, poll=0.02)
        cpu = cpu_per_item(ticks, count)
        starts, dispatched, claimed = [], [], []
        for run in Run.objects.filter(pk__in=singles_ids):
            first = Step.objects.filter(run=run).order_by("index").values("started_at")[0]
            starts.append((first["started_at"] - run.created_at).total_seconds())
            dispatched.append((run.dispatched_at - run.created_at).total_seconds())
            claimed.append((run.started_at - run.created_at).total_seconds())
    finally:
        procs.stop()
        connection.close()
    report = {
        "runs": count,
        "clusters": clusters,
        "runs_per_s": round(count / (t1 - t0), 1),
        "create_ms_each": ms((created - t0) / count),
        "created_to_first_step_p50_ms": ms(statistics.median(starts)),
        "created_to_first_step_p95_ms": ms(pct(starts, 0.95)),
        # Where that time goes (p50 from created): dispatched, then claimed by a worker.
        "created_to_dispatched_p50_ms": ms(statistics.median(dispatched)),
        "created_to_claimed_p50_ms": ms(statistics.median(claimed)),
        "cpu_ms_per_run": cpu,
    }
    return report


def round_trips(samples: int = 100, idle: float = 0.02) -> dict[str, float]:
    """A bare round trip to the database (and to Redis when it is the broker), p50 in
    microseconds: back to back, and after `idle` seconds of nothing (as each hop of a single
    run's start comes after one). On a VM an idle vCPU halts, and waking the other side costs
    more than the round trip itself: this is what each of a run's sequential hops costs here."""
    from django.conf import settings
    from django.db import connection

    def timed(call: Any, pause: float) -> float:
        spent = []
        for _ in range(samples):
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            call()
            spent.append(time.perf_counter() - t0)
        return round(statistics.median(spent) * 1e6)

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()

    out = {"db_hot_us": timed(select_one, 0), "db_idle_us": timed(select_one, idle)}
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        out |= {"redis_hot_us": timed(client.ping, 0), "redis_idle_us": timed(client.ping, idle)}
    return out


def child(quick: bool, scale: bool) -> dict[str, Any]:
    setup()
    count, singles = (200, 15) if quick else (600, 40)
    base = baseline(count, singles)
    unsaved = baseline(count, singles, saved=False)
    ours = runyard(count, singles, 1)
    report: dict[str, Any] = {
        "workers_per_cluster": WORKERS,
        "django_q2_baseline": base,
        "django_q2_unsaved_baseline": unsaved,
        "runyard": ours,
        "runs_vs_tasks": round(ours["runs_per_s"] / base["tasks_per_s"], 2),
        # Like with like on what the broker does: Runyard's run tasks are not saved either.
        "runs_vs_unsaved_tasks": round(ours["runs_per_s"] / unsaved["tasks_per_s"], 2),
        "start_vs_broker": round(
            ours["created_to_first_step_p50_ms"] / base["enqueue_to_start_p50_ms"], 2
        ),
        "start_vs_unsaved_broker": round(
            ours["created_to_first_step_p50_ms"] / unsaved["enqueue_to_start_p50_ms"], 2
        ),
        "round_trips": round_trips(),
    }
    if base["cpu_ms_per_task"]["all"]:  # 0 without /proc
        report["cpu_vs_task"] = round(
            ours["cpu_ms_per_run"]["all"] / base["cpu_ms_per_task"]["all"], 2
        )
        report["cpu_vs_unsaved_task"] = round(
            ours["cpu_ms_per_run"]["all"] / unsaved["cpu_ms_per_task"]["all"], 2
        )
    if scale:
        report["clusters"] = [ours] + [runyard(count, singles, k) for k in (2, 3)]
    runs, start = TARGETS["runs_vs_tasks"], TARGETS["start_vs_broker"]
    report["targets"] = {
        f"runs_vs_tasks >= {runs}": report["runs_vs_tasks"] >= runs,
        f"runs_vs_unsaved_tasks >= {runs}": report["runs_vs_unsaved_tasks"] >= runs,
        f"start_vs_broker <= {start}": report["start_vs_broker"] <= start,
        f"start_vs_unsaved_broker <= {start}": report["start_vs_unsaved_broker"] <= start,
    }
    return report


# --- parent -------------------------------------------------------------------------------------


def run_child(name: str, quick: bool) -> dict[str, Any]:
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        RUNYARD_VAR_DIR=str(work),
        MEDIA_ROOT=str(work / "media"),
        SQLITE_PATH=str(work / "db.sqlite3"),
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        PROMETHEUS_MULTIPROC_DIR=str(work / "prometheus"),
    )
    if name == "postgresql_redis":
        from bench.steps import postgres_up

        if not postgres_up():
            return {"skipped": f"no PostgreSQL at {PG_URL}"}
        import psycopg
        import redis

        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PG_DB}")
        redis.Redis.from_url(REDIS_URL).flushdb()
        env["DATABASE_URL"] = f"{PG_URL}/{PG_DB}"
        env["REDIS_URL"] = REDIS_URL
    cmd = [sys.executable, __file__, "--child"] + (["--quick"] if quick else [])
    cmd += ["--scale"] if name == "postgresql_redis" else []
    log(f"throughput: {name}")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": "no JSON from child"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--only", choices=["embedded", "postgresql_redis"])
    args = parser.parse_args()
    if args.child:
        WORK.mkdir(parents=True, exist_ok=True)
        print(json.dumps(child(args.quick, args.scale)))
        return
    names = [args.only] if args.only else ["embedded", "postgresql_redis"]
    report = {name: run_child(name, args.quick) for name in names}
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
