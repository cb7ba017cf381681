"""Run django-q2's `qcluster` so that stopping its process group stops it cleanly.

honcho (Ctrl-C on `make run`), systemd and Kubernetes send SIGTERM to a whole process group.
qcluster's forked sentinel and workers die of it at once, and its main process then waits on
them and can hang with a defunct child until it is SIGKILLed (NOTES.md). SIGTERM to the main
process alone stops the cluster in about a second. So this wrapper starts qcluster in a session
of its own, which group signals do not reach, and on SIGTERM or SIGINT forwards SIGTERM to
qcluster's main process only. Should the cluster not be gone within RUNYARD_WORKER_STOP_GRACE
seconds (a task still running: its run is durable and will be recovered from its lease), the
whole cluster is killed, so nothing outlives the wrapper. Standard library only: no Django here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
# Under honcho's own 5 s before it SIGKILLs this process's group.
GRACE = float(os.environ.get("RUNYARD_WORKER_STOP_GRACE", "4"))


def main(argv: list[str]) -> int:
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, str(ROOT / "manage.py"), "qcluster", *argv],
        cwd=ROOT,
        start_new_session=True,
    )
    stopping: list[float] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            _signal(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            code = child.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            if stopping and time.monotonic() - stopping[0] > GRACE:
                _signal(-child.pid, signal.SIGKILL)  # the cluster's whole group
            continue
        if stopping:
            _signal(-child.pid, signal.SIGKILL)  # any straggler of the cluster's group
            return 0
        return code


def _signal(pid: int, sig: int) -> None:
    """os.kill, or os.killpg for a negative pid; a process already gone is fine."""
    try:
        if pid < 0:
            os.killpg(-pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
