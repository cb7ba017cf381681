"""`make run`'s processes stop cleanly on Ctrl-C: honcho with platform/Procfile, started as the
Makefile starts it (`make serve`, the end of `make run`) under a real pseudo-terminal, gets the
terminal's ^C; every process (daphne, the whole qcluster, the scheduler) is gone within seconds
and make exits 0."""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import ROOT, free_port, process_env

pytestmark = pytest.mark.e2e


def _read(fd: int, seconds: float) -> bytes:
    out, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:  # the terminal closed: everything on it is gone
                break
    return out


def _alive(mark: int) -> list[str]:
    """Live processes started under the terminal (they inherit its MAKE_RUN_TEST mark), in
    whatever session or process group they moved to."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and f"MAKE_RUN_TEST={mark}\0".encode() in environ:
            alive.append(stat[:80])
    return alive


def test_ctrl_c_stops_every_process_and_make_exits_0(
    transactional_db: None, tmp_path: Path
) -> None:
    port = free_port()
    env = process_env(PORT=str(port), RUNYARD_VAR_DIR=str(tmp_path), STATIC_ROOT=str(tmp_path))
    pid, fd = pty.fork()
    if pid == 0:  # the child: a shell session on the new terminal, as a person has
        os.chdir(ROOT)
        env["MAKE_RUN_TEST"] = str(os.getpid())  # marks every process it starts
        os.execvpe("make", ["make", "--no-print-directory", "serve"], env)  # noqa: S606
    out, status = b"", None
    try:
        deadline = time.monotonic() + 60
        while True:
            out += _read(fd, 0.3)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, out.decode(errors="replace")[-3000:]
        while b"running." not in out and time.monotonic() < deadline:  # the qcluster is up
            out += _read(fd, 0.3)

        os.write(fd, b"\x03")  # ^C: the terminal sends SIGINT to its foreground group
        started = time.monotonic()
        while status is None and time.monotonic() - started < 15:
            out += _read(fd, 0.2)
            done, code = os.waitpid(pid, os.WNOHANG)
            status = os.waitstatus_to_exitcode(code) if done else None
        text = out.decode(errors="replace")
        assert status == 0, text[-3000:]
        assert "SIGKILL" not in text and "Error" not in text, text[-3000:]
        assert "Runyard stopped." in text
        time.sleep(0.5)
        assert _alive(pid) == [], text[-2000:]
    finally:
        for line in _alive(pid):  # never leave a process behind a failure
            os.kill(int(line.split()[0]), signal.SIGKILL)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
