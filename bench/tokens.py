"""Token -> browser latency: `python bench/tokens.py [--json] [--quick] [--setup NAME]`.

A scripted llm node streams tokens (`token_ms` apart) in a real qcluster worker; a real
chromium page (Playwright, Debian's /usr/bin/chromium) shows the run, and an init script
stamps each live `llm.delta` frame as the page's websocket receives it. Latency is receipt
minus the frame's `ts`, which the worker takes when the node hands the token over
(runs/live_frames.py): worker -> (Redis pub/sub | LiveFrame row + daphne's poller) -> daphne
-> socket -> the page's JavaScript. Both setups, each in a child process of its own with a fresh
database and real daphne, qcluster and scheduler processes (bench/events.py's harness):
- embedded: SQLite, ORM broker, the poller tailing the LiveFrame table every
  EVENT_POLL_SECONDS;
- redis: PostgreSQL (SQLite when it is not reachable), Redis broker and channels-redis.
Without playwright or chromium the receiver is a Python websocket client instead, and the
report says so (`receiver`).

Target: p95 <= 100 ms in each setup.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import events as harness  # noqa: E402 - after the path is set

WORK = ROOT / "var" / "bench" / "tokens"
PG_DB = "runyard_bench_tokens"
CHROMIUM = Path(os.environ.get("RUNYARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "bench-pw-123456789"  # noqa: S105 - a throwaway bench user's password
TOKEN_MS = 20
TOKENS = 60
TARGET_P95_MS = 100.0

# Stamps each live frame the page's websockets receive, before the page's own handler runs.
STAMP = """
(() => {
  window.__live = [];
  const Native = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener("message", (msg) => {
      const at = performance.timeOrigin + performance.now();
      if (msg.data.indexOf('"type":"live"') < 0) return;
      const f = JSON.parse(msg.data);
      if (f.event === "llm.delta") window.__live.push([at, f.ts]);
    });
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, Native);
})();
"""


def log(msg: str) -> None:
    print(f"[tokens] {msg}", file=sys.stderr, flush=True)


def spec() -> dict[str, Any]:
    text = " ".join(f"w{i}" for i in range(TOKENS))
    return {
        "name": "bench-tokens",
        "start": "gate",
        "nodes": {
            "gate": {"kind": "approval", "message": "go?", "timeout": 3600, "default": "approve"},
            "write": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "go",
                "responses": [text],
                "token_ms": TOKEN_MS,
                "output": "text",
            },
            "done": {"kind": "end"},
        },
        "edges": [{"from": "gate", "to": "write"}, {"from": "write", "to": "done"}],
    }


def browser_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return CHROMIUM.exists()


# --- parent ----------------------------------------------------------------------------------


def run_setup(name: str, quick: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env.update(
        RUNYARD_VAR_DIR=str(work),
        MEDIA_ROOT=str(work / "media"),
        SQLITE_PATH=str(work / "db.sqlite3"),
        Q_WORKERS="2",
        LOG_LEVEL="WARNING",
        DJANGO_ALLOW_ASYNC_UNSAFE="true",  # Playwright's loop shares the ORM's thread
    )
    if name == "redis":
        env["REDIS_URL"] = harness.REDIS_URL
        if harness.postgres_up():
            env["DATABASE_URL"] = f"{harness.PG_URL}/{PG_DB}"
    cmd = [sys.executable, __file__, "--child", name] + (["--quick"] if quick else [])
    log(f"setup {name}: starting")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=60)
    if proc.returncode != 0:
        return {"error": stderr[-3000:]}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": "no JSON from child"}


def parent(args: argparse.Namespace) -> int:
    setups = [args.setup] if args.setup else ["embedded", "redis"]
    report: dict[str, Any] = {"target_p95_ms": TARGET_P95_MS}
    for name in setups:
        if name == "redis" and not harness.redis_up(harness.REDIS_URL):
            report[name] = {"skipped": f"no Redis at {harness.REDIS_URL}"}
            continue
        report[name] = run_setup(name, args.quick)
    report["verdict"] = {
        name: {
            "p95_ms": r["latency_ms"]["p95_ms"],
            "met": r["latency_ms"]["p95_ms"] <= TARGET_P95_MS,
        }
        for name, r in report.items()
        if isinstance(r, dict) and "latency_ms" in r and r["latency_ms"].get("samples")
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


# --- child: one setup ------------------------------------------------------------------------


def seed() -> tuple[Any, str]:
    from django.contrib.auth import get_user_model

    from runs.services import create_graph_version
    from tenants.models import Membership, Role, Tenant
    from tenants.services import create_api_key

    tenant = Tenant.objects.create(slug="bench-tokens", name="Bench tokens")
    create_graph_version(tenant, spec())
    user = get_user_model().objects.create_user(
        username="bench@example.com", email="bench@example.com", password=PASSWORD
    )
    Membership.objects.create(tenant=tenant, user=user, role=Role.MEMBER)
    _, key = create_api_key(tenant, name="bench")
    return tenant, key


def gated_run(tenant: Any) -> Any:
    from runs.models import Run
    from runs.services import create_run
    from runs.status import RunStatus

    run = create_run(tenant, graph="bench-tokens")
    deadline = time.monotonic() + 60
    while Run.objects.get(pk=run.pk).status != RunStatus.WAITING:
        if time.monotonic() > deadline:
            raise RuntimeError("the run did not reach its gate")
        time.sleep(0.05)
    return run


def settled(run: Any, timeout: float = 60) -> None:
    from runs.models import Run
    from runs.status import TERMINAL

    deadline = time.monotonic() + timeout
    while Run.objects.get(pk=run.pk).status not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError("the run did not end")
        time.sleep(0.05)


def samples_ms(stamps: list[tuple[float, str]]) -> list[float]:
    return [at - dt.datetime.fromisoformat(ts).timestamp() * 1000 for at, ts in stamps]


def browser_rounds(base: str, tenant: Any, rounds: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    out: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.add_init_script(STAMP)
        page.goto(f"{base}/login/")
        page.fill("#id_username", "bench@example.com")
        page.fill("#id_password", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_load_state()
        for _ in range(rounds):
            run = gated_run(tenant)
            page.goto(f"{base}/runs/{run.public_id}/")
            page.wait_for_selector('#live-indicator[data-live="on"]')
            harness.approve_all([run.pk])
            settled(run)
            page.wait_for_selector('#live-output .live-node[data-node="write"][data-state="done"]')
            out += samples_ms(page.evaluate("window.__live"))
        browser.close()
    return out


def websocket_rounds(ws_base: str, tenant: Any, key: str, rounds: int) -> list[float]:
    from websockets.sync.client import connect

    out: list[float] = []
    for _ in range(rounds):
        run = gated_run(tenant)
        headers = {"Authorization": f"Bearer {key}"}
        with connect(f"{ws_base}/ws/runs/{run.public_id}/", additional_headers=headers) as ws:
            while json.loads(ws.recv(timeout=10))["type"] != "synced":
                pass
            harness.approve_all([run.pk])
            while True:
                text = ws.recv(timeout=30)
                at = time.time() * 1000
                f = json.loads(text)
                if f["type"] == "live" and f["event"] == "llm.delta":
                    out += samples_ms([(at, f["ts"])])
                if f.get("event") in ("run.succeeded", "run.failed"):
                    break
    return out


def child(args: argparse.Namespace) -> int:
    import django

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(1)  # unwinds through `finally`, which stops the processes

    signal.signal(signal.SIGTERM, terminated)
    harness.PG_DB = PG_DB  # the harness drops and creates the database by this name
    django.setup()
    from django.conf import settings

    database = harness.prepare_database()
    tenant, key = seed()
    procs = harness.Processes(Path(settings.VAR_DIR))
    rounds = 3 if args.quick else 8
    receiver = "chromium page" if browser_available() else "websocket client (chromium missing)"
    report: dict[str, Any] = {
        "setup": args.child,
        "database": database,
        "path": "Redis pub/sub -> relay" if settings.REDIS_URL else "LiveFrame rows -> poller",
        "event_poll_seconds": settings.RUNYARD["EVENT_POLL_SECONDS"],
        "receiver": receiver,
        "stream": f"{rounds} runs x {TOKENS} tokens, {TOKEN_MS} ms apart",
    }
    try:
        procs.start()
        base = f"http://127.0.0.1:{procs.port}"
        if browser_available():
            got = browser_rounds(base, tenant, rounds)
        else:
            got = websocket_rounds(f"ws://127.0.0.1:{procs.port}", tenant, key, rounds)
        report["latency_ms"] = harness.summary(got)
        # The machine may be shared: how busy it was says how much of the tail is waiting
        # for a CPU rather than delivery.
        report["load_average_1m"] = round(os.getloadavg()[0], 2)
        report["expected_samples"] = rounds * TOKENS
    finally:
        procs.stop()
        harness.drop_database()
    print(json.dumps(report))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one-line JSON")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--setup", choices=["embedded", "redis"], help="only this setup")
    parser.add_argument("--child", choices=["embedded", "redis"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())
