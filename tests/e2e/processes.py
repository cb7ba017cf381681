"""Start real platform processes (daphne, qcluster, scheduler) against the test database.

The web process is the shipped one: platform/Procfile's own `web:` line, DEBUG off, serving
the static files `collectstatic` gathered (once per test session, into a temporary STATIC_ROOT).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
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
PROCFILE = ROOT / "platform" / "Procfile"
_STATIC_ROOT: list[Path] = []  # collected once per test session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile_command(name: str, env: dict[str, str], procfile: Path = PROCFILE) -> list[str]:
    """The argv of the Procfile's `name:` line, with `$VAR`, `${VAR}` and `${VAR:-default}`
    expanded from `env` as the shell that honcho starts would, and relative paths made
    absolute (they are relative to the repository's root, where honcho runs)."""
    for line in procfile.read_text().splitlines():
        key, sep, command = line.partition(":")
        if sep and key.strip() == name:
            break
    else:
        raise LookupError(f"no {name!r} process in {procfile}")

    def expand(match: re.Match[str]) -> str:
        var = match.group(1) or match.group(3)
        value = env.get(var, "")
        return value if value or match.group(2) is None else match.group(2)

    expanded = re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", expand, command)
    argv = shlex.split(expanded)
    if argv and argv[0] == "exec":
        argv = argv[1:]
    return [str(ROOT / a) if a.startswith("./") or a.startswith(".venv/") else a for a in argv]


def collected_static() -> Path:
    """A STATIC_ROOT filled by `collectstatic`, shared by every web process of this session."""
    if not _STATIC_ROOT:
        root = Path(tempfile.mkdtemp(prefix="runyard-static-"))
        subprocess.run(
            [PY, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
            cwd=ROOT,
            env={**os.environ, "STATIC_ROOT": str(root)},
            check=True,
            timeout=120,
        )
        _STATIC_ROOT.append(root)
    return _STATIC_ROOT[0]


def process_env(**extra: str) -> dict[str, str]:
    """Environment that points a child process at the database this test uses, with DEBUG
    off as shipped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["DEBUG"] = "false"
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
        self.env["PORT"] = str(self.port)
        self.env.setdefault("RUNYARD_BIND", "127.0.0.1")
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {"web": self.port}  # "web:b", a second daphne: its own

    def url_of(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def env_of(self, name: str) -> dict[str, str]:
        if name.partition(":")[0] != "web":
            return self.env
        return {**self.env, "PORT": str(self.ports.setdefault(name, free_port()))}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self, name: str) -> list[str]:
        # "worker:b" is a second worker cluster (its own process group, same queue): a machine.
        original, name = name, name.partition(":")[0]
        if name == "web":
            return procfile_command("web", self.env_of(original))
        return {
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
        if any(n.partition(":")[0] == "web" for n in names):
            self.env.setdefault("STATIC_ROOT", str(collected_static()))
        for name in names:
            log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
            self.procs[name] = subprocess.Popen(
                self.command(name),
                cwd=ROOT,
                env=self.env_of(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if "web" in names:
            self.wait_http("/healthz")
        for name in names:
            if name.startswith("web:"):
                self.wait_http_on(name, "/healthz")
        return self

    def wait_http_on(self, name: str, path: str, timeout: float = 30) -> None:
        """`wait_http` for another web process ("web:b")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log(name)}")
            try:
                if httpx.get(self.url_of(name) + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{name} {path} not ready: {self.log(name)}")

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
