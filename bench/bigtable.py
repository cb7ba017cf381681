"""Big tables: `python bench/bigtable.py [--json] [--quick] [--runs N]`.

API latency with many runs stored, on one fresh SQLite database (the embedded default) or,
with DATABASE_URL set, PostgreSQL: 1,000,000 runs (`--quick`: 100,000) spread over four
tenants (half in the measured one), with events and steps for every tenth, written in bulk
(tests/runs/bigtable.py) and ANALYZEd. Then one real daphne serves, and round after round
times, one request each and in turn so load on the machine hits all alike:
- GET /healthz (the floor: the same server doing almost nothing);
- POST /runs (admission, insert, dispatch on commit: the dispatcher's candidate query);
- GET /runs first page, and a deep cursor page (the tenant's runs 90% of the way back).
Reports p50/p95 of each and the ratios to /healthz p50. Targets (issue #17): POST /runs
<= 2.5x /healthz, GET /runs <= 3x, the deep page <= 1.3x the first page. `--runs 1000`
gives the same rows on a small table: equal ratios mean the cost no longer grows with it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / "var" / "bench" / "bigtable"

TARGETS = {"post_runs": 2.5, "list_first": 3.0, "list_deep": 3.0, "deep_vs_first": 1.3}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def setup_django() -> str:
    """A fresh database: SQLite under var/bench, or the PostgreSQL of DATABASE_URL."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ.pop("REDIS_URL", None)
    if not os.environ.get("DATABASE_URL"):
        from bench.runtime import setup_django as fresh_sqlite

        fresh_sqlite(WORK / "db.sqlite3")
        return "sqlite"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    with connection.cursor() as cursor:  # a clean schema, as a fresh SQLite file would be
        cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    call_command("migrate", verbosity=0)
    return "postgresql"


def chain_spec() -> dict[str, Any]:
    return {
        "name": "chain",
        "state": {"count": {"reducer": "replace", "default": 0}},
        "start": "n0",
        "nodes": {
            "n0": {"kind": "transform", "set": {"count": "state.count + 1"}},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "n0", "to": "done"}],
    }


def seed_database(runs: int) -> tuple[str, str]:
    """Store `runs` runs; returns an API key of the big tenant and a deep cursor into its list."""
    from django.db import transaction

    from runs.models import Run
    from runs.selectors import encode_cursor
    from runs.services import create_graph_version
    from tenants.models import Tenant
    from tenants.services import create_api_key
    from tests.runs.bigtable import analyze, seed

    started = time.monotonic()
    with transaction.atomic():
        tenants = [
            Tenant.objects.create(
                slug=f"big-{i}",
                name=f"Big {i}",
                max_concurrent_runs=10_000,
                max_queued_runs=10_000_000,
                runs_per_minute=None,
            )
            for i in range(4)
        ]
        graphs = [create_graph_version(t, chain_spec()) for t in tenants]
        seeded = seed(tenants, graphs, runs=runs)
    analyze()
    log(
        f"seeded {seeded.runs} runs, {seeded.events} events, {seeded.steps} steps "
        f"in {time.monotonic() - started:.1f}s"
    )
    _, key = create_api_key(tenants[0], name="bench")
    mine = Run.objects.filter(tenant=tenants[0]).order_by("created_at", "pk")
    deep = mine[mine.count() // 10]
    return key, encode_cursor(deep.created_at.isoformat(), deep.pk)


class Server:
    """One daphne on a free port (no worker: runs queue up, the API is what is measured)."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        WORK.mkdir(parents=True, exist_ok=True)
        out = open(WORK / "web.log", "ab")  # noqa: SIM115 - lives with the process
        cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "config.asgi:application"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> str:
        import httpx

        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("daphne did not start: " + (WORK / "web.log").read_text()[-2000:])

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def measure(url: str, key: str, deep_cursor: str, rounds: int) -> dict[str, Any]:
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns the report
    auth = {"Authorization": f"Bearer {key}"}
    calls = {
        "healthz": lambda c: c.get("/healthz"),
        "post_runs": lambda c: c.post("/api/v1/runs", json={"graph": "chain"}, headers=auth),
        "list_first": lambda c: c.get("/api/v1/runs", headers=auth),
        "list_deep": lambda c: c.get("/api/v1/runs", params={"cursor": deep_cursor}, headers=auth),
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(rounds + 10):  # the first 10 rounds warm up
            for name, call in calls.items():
                started = time.perf_counter()
                response = call(client)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code >= 400:
                    raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
                if n >= 10:
                    samples[name].append(elapsed)
    out: dict[str, Any] = {
        name: {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(pct(values, 0.95), 2),
            "n": len(values),
        }
        for name, values in samples.items()
    }
    floor = out["healthz"]["p50_ms"]
    ratios = {name: round(out[name]["p50_ms"] / floor, 2) for name in calls if name != "healthz"}
    ratios["deep_vs_first"] = round(out["list_deep"]["p50_ms"] / out["list_first"]["p50_ms"], 2)
    out["ratios_p50"] = ratios
    out["targets"] = {
        name: {"target": f"<= {limit}x", "ratio": ratios[name], "met": ratios[name] <= limit}
        for name, limit in TARGETS.items()
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, help="runs to store (default 1,000,000; quick 100,000)")
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()
    runs = args.runs or (100_000 if args.quick else 1_000_000)
    rounds = args.rounds or (100 if args.quick else 300)
    database = setup_django()
    key, deep_cursor = seed_database(runs)
    from django.db import connections

    connections.close_all()
    server = Server()
    try:
        url = server.wait_ready()
        report = {
            "database": database,
            "runs_stored": runs,
            **measure(url, key, deep_cursor, rounds),
        }
    finally:
        server.stop()
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
