"""Rolling restarts: a worker asked to stop hands its runs back instead of dying mid-step.

honcho, systemd and Kubernetes stop a worker with SIGTERM to its whole process group. Left
alone, django-q2's sentinel and workers die of it at once (SIG_DFL): a run in flight is
orphaned until its lease expires, and qcluster's main process can hang for good in
`stop_event.set()`, waiting for the dead sentinel to wake (NOTES.md). So:

- the sentinel ignores SIGTERM (its pusher and monitor inherit that) and is stopped the
  orderly way, by the main process's own handler; on stop it passes SIGTERM to its workers,
  so a signal to the main process alone drains them too (`GroupSafeSentinel`);
- each worker process, once spawned, turns SIGTERM into a process-wide *draining* flag
  (`on_worker_spawned`): it takes no new run (`claim_next`), and each root run it executes is
  handed back at its next step boundary (`requeue(reason="shutdown")`: queued and dispatched
  at once to a worker that is not stopping, not counted as a recovery);
- a step still in flight DRAIN_GRACE_SECONDS after the signal is cancelled (reason
  `shutdown`: an llm, http or sleep node stops at once) and its run handed back from its last
  checkpoint, where the step runs again; one that ignores cancellation (a blocking function)
  gets ABANDON_SECONDS more, then the watcher hands its run back and ends the process
  (runs/services/watcher.py). An idle cluster exits in a few seconds, a busy one within
  DRAIN_GRACE_SECONDS + ABANDON_SECONDS + a step commit: under Kubernetes' default 30 s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

# After the grace, a step that ignored its cancellation gets this long before the worker
# hands its run back itself and exits.
ABANDON_SECONDS = 5.0

_draining = threading.Event()
_since: list[float] = []


def grace_seconds() -> float:
    return float(settings.RUNYARD["DRAIN_GRACE_SECONDS"])


def draining() -> bool:
    """Whether this process is stopping: it takes no new run and hands back the ones it has."""
    return _draining.is_set()


def start_draining() -> None:
    if not _draining.is_set():
        _since.append(time.monotonic())
        _draining.set()


def stop_draining() -> None:
    """Tests only: this process takes runs again."""
    _draining.clear()
    _since.clear()


def draining_for() -> float:
    """Seconds since this process started draining (0 when it is not)."""
    return time.monotonic() - _since[0] if _draining.is_set() and _since else 0.0


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Only a flag: the segment acts on it at its next step boundary, the watcher after the grace.
    start_draining()


def on_worker_spawned(sender: Any, **kwargs: Any) -> None:
    """django-q2's post_spawn, in each worker process: SIGTERM drains instead of killing."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def make_qcluster_group_safe() -> None:
    """Have `manage.py qcluster` start `GroupSafeSentinel` (Cluster.start looks the class up
    in django_q.cluster when it starts the sentinel process)."""
    from django_q import cluster

    if getattr(cluster.Sentinel, "group_safe", False):
        return
    base: Any = cluster.Sentinel

    class GroupSafeSentinel(base):  # type: ignore[misc, valid-type]
        """django-q2's Sentinel, stopped only by the cluster's main process; it drains its
        workers first."""

        group_safe = True

        def __init__(
            self,
            stop_event: Any,
            start_event: Any,
            cluster_id: Any,
            broker: Any = None,
            timeout: Any = None,
            start: bool = True,
        ) -> None:
            super().__init__(stop_event, start_event, cluster_id, broker, timeout, start=False)
            # Before any child is forked: pusher and monitor inherit it, workers replace it.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if start:
                self.start()

        def stop(self) -> None:
            for process in list(self.pool):
                with contextlib.suppress(ProcessLookupError, TypeError):
                    os.kill(process.pid, signal.SIGTERM)  # drain: see on_worker_spawned
            super().stop()

    cluster.Sentinel = GroupSafeSentinel
