"""One watcher thread per worker process for every segment it runs.

Every WATCH_SECONDS the thread calls each registered segment's `tick()`: it renews the lease,
notices cancel / pause / guidance and a lost lease, and writes the live events of a slow step.
A thread (and a database connection) per segment would cost more than a short run itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Protocol

from django.db import connection

from runs import draining

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.2


class Watched(Protocol):
    def tick(self) -> None: ...

    def drain_tick(self) -> None: ...

    def abandon(self) -> None: ...


class Watcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._segments: list[Watched] = []
        self._thread: threading.Thread | None = None
        self._pid = 0
        # Held while ticking, so a segment that unregisters is never ticked afterwards.
        self._ticking = threading.Lock()

    def add(self, segment: Watched) -> None:
        with self._lock:
            self._segments.append(segment)
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()  # a forked worker process starts its own thread
                self._thread = threading.Thread(target=self._serve, name="watcher", daemon=True)
                self._thread.start()

    def remove(self, segment: Watched) -> None:
        with self._ticking, self._lock:
            self._segments = [s for s in self._segments if s is not segment]

    def _serve(self) -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            with self._ticking:
                with self._lock:
                    segments = list(self._segments)
                for segment in segments:
                    try:
                        segment.tick()
                    except Exception:  # noqa: BLE001 - keep watching; the lease says the rest
                        log.warning("watcher tick failed", exc_info=True)
                if segments and draining.draining():
                    self._drain(segments)
                if not segments:
                    connection.close()  # idle: hold no database session

    def _drain(self, segments: list[Watched]) -> None:
        """This process is stopping (runs/draining.py): past the grace, cancel the steps in
        flight; a step that ignores it for ABANDON_SECONDS more is abandoned with the process,
        its run handed back from here first, so the worker still exits in bounded time."""
        for segment in segments:
            segment.drain_tick()
        if draining.draining_for() < draining.grace_seconds() + draining.ABANDON_SECONDS:
            return
        for segment in segments:
            try:
                segment.abandon()
            except Exception:  # noqa: BLE001 - its lease then expires and it is recovered
                log.warning("handing back an abandoned run failed", exc_info=True)
        log.warning("stopping: a step ignored its cancellation; abandoning it")
        os._exit(0)


watcher = Watcher()
