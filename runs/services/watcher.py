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

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.2


class Watched(Protocol):
    def tick(self) -> None: ...


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
                if not segments:
                    connection.close()  # idle: hold no database session


watcher = Watcher()
