"""Start real platform processes (daphne, qcluster, scheduler) against the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(**extra: str) -> dict[str, str]:
    """Environment that points a child process at the database this test uses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    db = connection.settings_dict
    if settings.IS_SQLITE:
        env["SQLITE_PATH"] = str(db["NAME"])
        env.pop("DATABASE_URL", None)
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        env["DATABASE_URL"] = (
            f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env["PYTHONUNBUFFERED"] = "1"
    env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    env.update(extra)
    return env


class Platform:
    """A set of child processes; `kill`/`restart` them by name."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        # The same queue name as this test process, which dispatches too. A stale task from an
        # earlier test names a run that no longer exists, and its claim finds nothing.
        self.env = process_env(**env)
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self, name: str) -> list[str]:
        return {
            "web": [
                PY,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "config.asgi:application",
            ],
            "worker": [PY, "manage.py", "qcluster"],
            "scheduler": [
                PY,
                "manage.py",
                "runyard_scheduler",
                "--dispatch-every",
                "0.2",
                "--reconcile-every",
                "0.5",
            ],
        }[name]

    def start(self, *names: str) -> Platform:
        for name in names:
            log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
            self.procs[name] = subprocess.Popen(
                self.command(name),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if "web" in names:
            self.wait_http("/healthz")
        return self

    def wait_http(self, path: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get("web")
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"web exited: {self.log('web')}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{path} not ready: {self.log('web')}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the whole group: qcluster forks its workers
        proc.wait(timeout=30)

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                # A short grace: qcluster's own shutdown can take 10 s, and tests that care
                # about crashes kill with SIGKILL on purpose anyway.
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=2)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill(name)
            self.procs.pop(name, None)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextmanager
def platform(tmp: Path, *names: str, **env: Any) -> Iterator[Platform]:
    p = Platform(tmp, **env)
    try:
        yield p.start(*names)
    finally:
        p.stop()
